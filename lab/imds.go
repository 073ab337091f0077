package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vpclab/vpclab/fakeec2/imds"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/netx"
)

// IMDSAddr is where every node reaches its instance metadata service.
const IMDSAddr = "169.254.169.254"

// IMDS fetches path (below /latest/, e.g. meta-data/local-ipv4 or
// meta-data/network/interfaces/macs/) from inside the node, as its ipamd
// does: an IMDSv2 token first (PUT /latest/api/token), then GET with it.
func (n *Node) IMDS(ctx context.Context, path string) (string, error) {
	p, err := imdsPath(path)
	if err != nil {
		return "", err
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: netx.DialContextIn(n.ns), DisableKeepAlives: true}}
	tok, err := imdsDo(ctx, hc, http.MethodPut, "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60"})
	if err != nil {
		return "", fmt.Errorf("node %s: IMDS token: %w", n.Name, err)
	}
	body, err := imdsDo(ctx, hc, http.MethodGet, p, map[string]string{"X-aws-ec2-metadata-token": tok})
	if err != nil {
		return "", fmt.Errorf("node %s: IMDS %s: %w", n.Name, p, err)
	}
	return body, nil
}

// imdsPath makes a user's path absolute below /latest/ and refuses one
// that climbs out of it.
func imdsPath(path string) (string, error) {
	p := strings.TrimPrefix(strings.TrimPrefix(path, "/"), "latest/")
	if p == "" {
		p = "meta-data/"
	}
	if slices.Contains(strings.Split(p, "/"), "..") || strings.ContainsAny(p, "?#") {
		return "", fmt.Errorf("imds path %q: want a path below /latest/ such as meta-data/local-ipv4", path)
	}
	return "/latest/" + p, nil
}

func imdsDo(ctx context.Context, hc *http.Client, method, path string, hdr map[string]string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+IMDSAddr+path, nil)
	if err != nil {
		return "", err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s", resp.Status)
	}
	return string(b), nil
}

// IMDSDiff is how a node's metadata service differs from EC2 for one ENI
// right now (IMDS lags EC2): addresses and prefixes EC2 has that IMDS does
// not list yet, and ones IMDS still lists that EC2 no longer has.
type IMDSDiff struct {
	// NotListed: EC2 has the ENI attached, IMDS does not list it.
	NotListed bool `json:"notListed,omitempty"`
	// OnlyInIMDS: IMDS lists the ENI, EC2 has it no longer attached here.
	OnlyInIMDS bool     `json:"onlyInImds,omitempty"`
	Missing    []string `json:"missing,omitempty"` // in EC2, not (yet) in IMDS
	Extra      []string `json:"extra,omitempty"`   // in IMDS, no longer in EC2
}

// String is the difference in one table cell.
func (d *IMDSDiff) String() string {
	switch {
	case d == nil:
		return "="
	case d.NotListed:
		return "not listed yet"
	case d.OnlyInIMDS:
		return "still listed (gone from EC2)"
	}
	var parts []string
	if len(d.Missing) > 0 {
		parts = append(parts, "missing "+strings.Join(d.Missing, ","))
	}
	if len(d.Extra) > 0 {
		parts = append(parts, "extra "+strings.Join(d.Extra, ","))
	}
	return strings.Join(parts, "; ")
}

// diffIMDS compares what EC2 has (addresses and prefixes, as strings) with
// what IMDS lists; nil when they agree.
func diffIMDS(ec2, imds []string) *IMDSDiff {
	d := &IMDSDiff{}
	for _, a := range ec2 {
		if !slices.Contains(imds, a) {
			d.Missing = append(d.Missing, a)
		}
	}
	for _, a := range imds {
		if !slices.Contains(ec2, a) {
			d.Extra = append(d.Extra, a)
		}
	}
	if len(d.Missing) == 0 && len(d.Extra) == 0 {
		return nil
	}
	return d
}

// addrStrings lists addresses then prefixes as strings.
func addrStrings(addrs []netip.Addr, prefixes []netip.Prefix) []string {
	out := make([]string, 0, len(addrs)+len(prefixes))
	for _, a := range addrs {
		out = append(out, a.String())
	}
	for _, p := range prefixes {
		out = append(out, p.String())
	}
	return out
}

// imdsDiffs marks each of a node's ENIs (rows, from EC2) with how the
// node's metadata service differs, and returns rows for ENIs IMDS still
// lists that EC2 has no longer attached to the node.
func (l *Lab) imdsDiffs(n *Node, enis []model.NetworkInterface, rows []ENIStatus) []ENIStatus {
	view, err := l.srv.IMDS().View(n.Instance.ID)
	if err != nil {
		return nil
	}
	listed := map[string]imds.ENIView{}
	for _, v := range view {
		listed[v.ENIID] = v
	}
	for i := range rows {
		v, ok := listed[rows[i].ID]
		delete(listed, rows[i].ID)
		e := enis[slices.IndexFunc(enis, func(e model.NetworkInterface) bool { return e.ID == rows[i].ID })]
		inEC2 := addrStrings(append([]netip.Addr{e.PrivateIP}, e.SecondaryIPs...), e.Prefixes)
		if !ok {
			rows[i].IMDS = &IMDSDiff{NotListed: true, Missing: inEC2}
			continue
		}
		rows[i].IMDS = diffIMDS(inEC2, addrStrings(v.IPv4, v.Prefixes))
	}
	var extra []ENIStatus
	for _, v := range view {
		if _, ok := listed[v.ENIID]; ok {
			extra = append(extra, ENIStatus{ID: v.ENIID, Device: v.Device, IMDS: &IMDSDiff{OnlyInIMDS: true, Extra: addrStrings(v.IPv4, v.Prefixes)}})
		}
	}
	return extra
}
