package fakeec2_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2imds "github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/imds"
	"github.com/vpclab/vpclab/fakeec2/model"
)

// fakeClock is a manually advanced clock shared by region and server.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// imdsEnv is a region on a fake clock with one m5.large instance whose
// IMDS listens on loopback.
type imdsEnv struct {
	*env
	clock *fakeClock
	inst  types.Instance
	id    string
	url   string
	md    *ec2imds.Client
}

func newIMDSEnv(t *testing.T) *imdsEnv {
	t.Helper()
	clk := newFakeClock()
	e := newEnv(t, model.Options{Seed: 3, Now: clk.Now}, fakeec2.ServerOptions{API: ec2query.Options{Now: clk.Now}}, "10.0.0.0/24")
	inst := e.run("m5.large")
	url, err := e.srv.IMDS().Listen(*inst.InstanceId, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	md := ec2imds.New(ec2imds.Options{Endpoint: url, ClientEnableState: ec2imds.ClientEnabled, EnableFallback: aws.FalseTernary})
	return &imdsEnv{env: e, clock: clk, inst: inst, id: *inst.InstanceId, url: url, md: md}
}

// get reads one metadata path through the SDK (IMDSv2 token flow).
func (e *imdsEnv) get(path string) (string, error) {
	out, err := e.md.GetMetadata(context.Background(), &ec2imds.GetMetadataInput{Path: path})
	if err != nil {
		return "", err
	}
	defer out.Content.Close()
	b, err := io.ReadAll(out.Content)
	return string(b), err
}

func (e *imdsEnv) must(path string) string {
	e.t.Helper()
	v, err := e.get(path)
	if err != nil {
		e.t.Fatalf("GET meta-data/%s: %v", path, err)
	}
	return v
}

func (e *imdsEnv) wantNotFound(path string) {
	e.t.Helper()
	v, err := e.get(path)
	if err == nil || !strings.Contains(err.Error(), "StatusCode: 404") {
		e.t.Fatalf("GET meta-data/%s: want 404, got %q, %v", path, v, err)
	}
}

func (e *imdsEnv) describe(id string) types.NetworkInterface {
	e.t.Helper()
	n, err := e.srv.Region().NetworkInterface(id)
	if err != nil {
		e.t.Fatal(err)
	}
	d, err := e.ec2.DescribeNetworkInterfaces(context.Background(), &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{n.ID}})
	if err != nil {
		e.t.Fatal(err)
	}
	return d.NetworkInterfaces[0]
}

func lines(xs ...string) string { return strings.Join(xs, "\n") }

func strs[T interface{ String() string }](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.String()
	}
	return out
}

// TestIMDSSDKPaths reads every networking path through the real SDK client
// for an instance with two ENIs, several secondary IPs and a prefix, and
// checks each value against the region.
func TestIMDSSDKPaths(t *testing.T) {
	e := newIMDSEnv(t)
	ctx := context.Background()
	// Tokens required: every read below goes through the v2 token flow.
	if _, err := e.ec2.ModifyInstanceMetadataOptions(ctx, &ec2.ModifyInstanceMetadataOptionsInput{InstanceId: &e.id, HttpTokens: types.HttpTokensStateRequired}); err != nil {
		t.Fatal(err)
	}
	primary := *e.inst.NetworkInterfaces[0].NetworkInterfaceId
	if _, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: &primary, SecondaryPrivateIpAddressCount: aws.Int32(3)}); err != nil {
		t.Fatal(err)
	}
	n := e.eni(func(in *ec2.CreateNetworkInterfaceInput) { in.SecondaryPrivateIpAddressCount = aws.Int32(2) })
	if _, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: n.NetworkInterfaceId, Ipv4PrefixCount: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: n.NetworkInterfaceId, InstanceId: &e.id, DeviceIndex: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	reg := e.srv.Region()
	p, _ := reg.NetworkInterface(primary)
	s, _ := reg.NetworkInterface(*n.NetworkInterfaceId)
	vpc := reg.VPCs()[0]
	host := func(a netip.Addr) string {
		return "ip-" + strings.ReplaceAll(a.String(), ".", "-") + ".us-west-2.compute.internal"
	}

	top := map[string]string{
		"instance-id":                    e.id,
		"instance-type":                  "m5.large",
		"ami-id":                         "ami-12345678",
		"mac":                            p.MAC,
		"local-ipv4":                     p.PrivateIP.String(),
		"local-hostname":                 host(p.PrivateIP),
		"placement/availability-zone":    "us-west-2a",
		"placement/availability-zone-id": "usw2-az1",
		"placement/region":               "us-west-2",
		"security-groups":                "default",
		"network/interfaces/macs":        lines(p.MAC+"/", s.MAC+"/"),
		"network/interfaces/macs/":       lines(p.MAC+"/", s.MAC+"/"),
	}
	for path, want := range top {
		if got := e.must(path); got != want {
			t.Errorf("meta-data/%s = %q, want %q", path, got, want)
		}
	}
	for i, eni := range []model.NetworkInterface{p, s} {
		base := "network/interfaces/macs/" + eni.MAC + "/"
		want := map[string]string{
			"device-number":          []string{"0", "1"}[i],
			"network-card":           "0",
			"network-card-index":     "0",
			"interface-id":           eni.ID,
			"local-ipv4s":            lines(append([]string{eni.PrivateIP.String()}, strs(eni.SecondaryIPs)...)...),
			"subnet-id":              e.subnet,
			"subnet-ipv4-cidr-block": "10.0.0.0/24",
			"vpc-id":                 e.vpc,
			"vpc-ipv4-cidr-block":    "10.0.0.0/16",
			"vpc-ipv4-cidr-blocks":   "10.0.0.0/16",
			"security-group-ids":     vpc.DefaultGroupID,
			"security-groups":        "default",
			"mac":                    eni.MAC,
			"owner-id":               "123456789012",
			"local-hostname":         host(eni.PrivateIP),
		}
		if len(eni.Prefixes) > 0 {
			want["ipv4-prefix"] = lines(strs(eni.Prefixes)...)
		}
		for k, w := range want {
			if got := e.must(base + k); got != w {
				t.Errorf("%s%s = %q, want %q", base, k, got, w)
			}
		}
		listing := e.must(base)
		if listing != e.must(strings.TrimSuffix(base, "/")) {
			t.Errorf("%s: listing differs with and without trailing slash", base)
		}
		var keys []string
		for k := range want {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if got := strings.Split(listing, "\n"); !slices.Equal(got, keys) {
			t.Errorf("%s listing = %q, want %q", base, got, keys)
		}
	}
	// Primary first, then secondaries in assignment order: compare with the
	// order EC2 reports.
	d := e.describe(primary)
	var fromEC2 []string
	for _, a := range d.PrivateIpAddresses {
		if *a.Primary {
			fromEC2 = append([]string{*a.PrivateIpAddress}, fromEC2...)
		} else {
			fromEC2 = append(fromEC2, *a.PrivateIpAddress)
		}
	}
	if got := e.must("network/interfaces/macs/" + p.MAC + "/local-ipv4s"); got != lines(fromEC2...) {
		t.Errorf("local-ipv4s %q, EC2 says %q", got, fromEC2)
	}
	// No IPv6 in this VPC: the v6 keys are absent, as on EC2.
	for _, k := range []string{"ipv6s", "local-ipv6s", "ipv6-prefix", "subnet-ipv6-cidr-blocks", "vpc-ipv6-cidr-blocks"} {
		e.wantNotFound("network/interfaces/macs/" + p.MAC + "/" + k)
	}
	e.wantNotFound("network/interfaces/macs/" + p.MAC + "/ipv4-prefix")
	e.wantNotFound("ipv6")
	e.wantNotFound("no-such-key")
	e.wantNotFound("network/interfaces/macs/02:00:00:00:00:00/")
	// Values never end with a newline.
	if v := e.must("network/interfaces/macs/" + p.MAC + "/local-ipv4s"); strings.HasSuffix(v, "\n") {
		t.Errorf("local-ipv4s ends with a newline: %q", v)
	}

	doc, err := e.md.GetInstanceIdentityDocument(ctx, &ec2imds.GetInstanceIdentityDocumentInput{})
	if err != nil {
		t.Fatal(err)
	}
	if doc.InstanceID != e.id || doc.InstanceType != "m5.large" || doc.Region != "us-west-2" || doc.AvailabilityZone != "us-west-2a" ||
		doc.PrivateIP != p.PrivateIP.String() || doc.AccountID != "123456789012" || doc.ImageID != "ami-12345678" || doc.Architecture != "x86_64" {
		t.Errorf("identity document: %+v", doc.InstanceIdentityDocument)
	}
	reg2, err := e.md.GetRegion(ctx, &ec2imds.GetRegionInput{})
	if err != nil || reg2.Region != "us-west-2" {
		t.Errorf("GetRegion = %v, %v", reg2, err)
	}
}

// TestIMDSIPv6 checks the v6 keys on a dual-stack subnet.
func TestIMDSIPv6(t *testing.T) {
	clk := newFakeClock()
	r := model.NewRegion(model.Options{Seed: 9, Now: clk.Now})
	s := fakeec2.NewServer(r, fakeec2.ServerOptions{API: ec2query.Options{Now: clk.Now}})
	t.Cleanup(func() { _ = s.Close() })
	v, err := r.CreateVPC(model.CreateVPCInput{CIDR: netip.MustParsePrefix("10.1.0.0/16"), AmazonProvidedIPv6: true, ExtraCIDRs: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/16")}})
	if err != nil {
		t.Fatal(err)
	}
	v6sub := netip.PrefixFrom(v.IPv6CIDRBlocks[0].Addr(), 64)
	sn, err := r.CreateSubnet(model.CreateSubnetInput{VPCID: v.ID, CIDR: netip.MustParsePrefix("10.1.0.0/24"), IPv6CIDR: v6sub})
	if err != nil {
		t.Fatal(err)
	}
	insts, err := r.RunInstances(model.RunInstancesInput{InstanceType: "m5.large", SubnetID: sn.ID})
	if err != nil {
		t.Fatal(err)
	}
	i := insts[0]
	a6, p6, err := r.AssignIPv6(model.AssignIPv6Input{ENIID: i.PrimaryENI, Count: 1, PrefixCount: 1})
	if err != nil {
		t.Fatal(err)
	}
	url, err := s.IMDS().Listen(i.ID, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	md := ec2imds.New(ec2imds.Options{Endpoint: url})
	get := func(p string) string {
		out, err := md.GetMetadata(context.Background(), &ec2imds.GetMetadataInput{Path: p})
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		b, _ := io.ReadAll(out.Content)
		return string(b)
	}
	eni, _ := r.NetworkInterface(i.PrimaryENI)
	base := "network/interfaces/macs/" + eni.MAC + "/"
	for k, want := range map[string]string{
		"ipv6s":                   a6[0].String(),
		"local-ipv6s":             a6[0].String(),
		"ipv6-prefix":             p6[0].String(),
		"subnet-ipv6-cidr-blocks": v6sub.String(),
		"vpc-ipv6-cidr-blocks":    v.IPv6CIDRBlocks[0].String(),
		"vpc-ipv4-cidr-blocks":    "10.1.0.0/16\n100.64.0.0/16",
		"vpc-ipv4-cidr-block":     "10.1.0.0/16",
	} {
		if got := get(base + k); got != want {
			t.Errorf("%s%s = %q, want %q", base, k, got, want)
		}
	}
	if got := get("ipv6"); got != a6[0].String() {
		t.Errorf("ipv6 = %q", got)
	}
}

// TestIMDSFollowsRegionWithLag checks that attach, assign, unassign and
// detach reach IMDS only after the instance's lag, in order.
func TestIMDSFollowsRegionWithLag(t *testing.T) {
	e := newIMDSEnv(t)
	ctx := context.Background()
	p, _ := e.srv.Region().NetworkInterface(*e.inst.NetworkInterfaces[0].NetworkInterfaceId)
	macs := "network/interfaces/macs"

	// Default lag 0: visible as soon as the call returns.
	out, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: &p.ID, SecondaryPrivateIpAddressCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	first := *out.AssignedPrivateIpAddresses[0].PrivateIpAddress
	if got := e.must(macs + "/" + p.MAC + "/local-ipv4s"); got != lines(p.PrivateIP.String(), first) {
		t.Fatalf("lag 0: local-ipv4s %q", got)
	}

	const lag = 2 * time.Second
	if err := e.srv.IMDS().SetLag(e.id, lag); err != nil {
		t.Fatal(err)
	}
	n := e.eni(nil)
	if _, err := e.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: n.NetworkInterfaceId, InstanceId: &e.id, DeviceIndex: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	if got := e.must(macs); got != p.MAC+"/" {
		t.Fatalf("attached ENI visible before the lag: %q", got)
	}
	if e.srv.IMDS().Pending(e.id) == 0 {
		t.Fatal("Pending = 0 with an attach in flight")
	}
	e.clock.Advance(lag - time.Millisecond)
	if got := e.must(macs); got != p.MAC+"/" {
		t.Fatalf("attached ENI visible 1ms before the lag: %q", got)
	}
	e.clock.Advance(time.Millisecond)
	if got := e.must(macs); got != lines(p.MAC+"/", *n.MacAddress+"/") {
		t.Fatalf("attached ENI not visible after the lag: %q", got)
	}

	out, err = e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: &p.ID, SecondaryPrivateIpAddressCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	added := []string{*out.AssignedPrivateIpAddresses[0].PrivateIpAddress, *out.AssignedPrivateIpAddresses[1].PrivateIpAddress}
	ips := macs + "/" + p.MAC + "/local-ipv4s"
	if got := e.must(ips); got != lines(p.PrivateIP.String(), first) {
		t.Fatalf("assigned IPs visible before the lag: %q", got)
	}
	e.clock.Advance(lag)
	if got := e.must(ips); got != lines(p.PrivateIP.String(), first, added[0], added[1]) {
		t.Fatalf("after the lag local-ipv4s = %q", got)
	}

	if _, err := e.ec2.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: &p.ID, PrivateIpAddresses: []string{first}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(lag / 2)
	if got := e.must(ips); !strings.Contains(got, first) {
		t.Fatalf("unassigned IP gone before the lag: %q", got)
	}
	e.clock.Advance(lag / 2)
	if got := e.must(ips); got != lines(p.PrivateIP.String(), added[0], added[1]) {
		t.Fatalf("after the lag local-ipv4s = %q", got)
	}

	d := e.describe(*n.NetworkInterfaceId)
	if _, err := e.ec2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: d.Attachment.AttachmentId}); err != nil {
		t.Fatal(err)
	}
	if got := e.must(macs); !strings.Contains(got, *n.MacAddress) {
		t.Fatalf("detached ENI gone before the lag: %q", got)
	}
	e.clock.Advance(lag)
	if got := e.must(macs); got != p.MAC+"/" {
		t.Fatalf("detached ENI still listed after the lag: %q", got)
	}
	if e.srv.IMDS().Pending(e.id) != 0 {
		t.Fatalf("Pending = %d after quiescence", e.srv.IMDS().Pending(e.id))
	}
}

// TestIMDSFaultRuleLag checks that a fault rule's imdsLag delays the changes
// of matching calls (and, to keep order, the changes after them) only.
func TestIMDSFaultRuleLag(t *testing.T) {
	e := newIMDSEnv(t)
	ctx := context.Background()
	p, _ := e.srv.Region().NetworkInterface(*e.inst.NetworkInterfaces[0].NetworkInterfaceId)
	ips := "network/interfaces/macs/" + p.MAC + "/local-ipv4s"
	if _, err := e.srv.Faults().Add(faults.Rule{Action: "AssignPrivateIpAddresses", IMDSLag: model.Duration(5 * time.Second), Count: 1}); err != nil {
		t.Fatal(err)
	}
	// The rule never fails or slows the API call itself.
	out, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: &p.ID, SecondaryPrivateIpAddressCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	a := *out.AssignedPrivateIpAddresses[0].PrivateIpAddress
	if got := e.must(ips); got != p.PrivateIP.String() {
		t.Fatalf("lagged assignment visible at once: %q", got)
	}
	e.clock.Advance(5 * time.Second)
	if got := e.must(ips); got != lines(p.PrivateIP.String(), a) {
		t.Fatalf("lagged assignment not visible after 5s: %q", got)
	}
	// Count 1: the next assignment is immediate.
	out, err = e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: &p.ID, SecondaryPrivateIpAddressCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	b := *out.AssignedPrivateIpAddresses[0].PrivateIpAddress
	if got := e.must(ips); got != lines(p.PrivateIP.String(), a, b) {
		t.Fatalf("second assignment: %q", got)
	}
	if rules := e.srv.Faults().List(); rules[0].Hits != 1 {
		t.Fatalf("rule hits = %d, want 1", rules[0].Hits)
	}
	if _, err := e.srv.Faults().Add(faults.Rule{Code: "InternalError", IMDSLag: model.Duration(time.Second)}); err == nil {
		t.Fatal("imdsLag combined with code accepted")
	}
}

// imdsDo sends one raw request to an IMDS endpoint.
func imdsDo(t *testing.T, method, url string, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestIMDSTokenRules covers IMDSv2's token rules over plain HTTP.
func TestIMDSTokenRules(t *testing.T) {
	e := newIMDSEnv(t)
	tokURL := e.url + "/latest/api/token"
	idURL := e.url + "/latest/meta-data/instance-id"
	ttl := imds.TokenTTLHeader
	put := func(h map[string]string) (int, string, http.Header) { return imdsDo(t, http.MethodPut, tokURL, h) }

	for _, bad := range []map[string]string{nil, {ttl: ""}, {ttl: "0"}, {ttl: "21601"}, {ttl: "-5"}, {ttl: "abc"}, {ttl: "1.5"}} {
		if code, _, _ := put(bad); code != http.StatusBadRequest {
			t.Errorf("PUT token with TTL %q: %d, want 400", bad[ttl], code)
		}
	}
	if code, _, _ := put(map[string]string{ttl: "60", "X-Forwarded-For": "10.9.9.9"}); code != http.StatusForbidden {
		t.Errorf("PUT token with X-Forwarded-For: %d, want 403", code)
	}
	code, tok, h := put(map[string]string{ttl: "21600"})
	if code != 200 || tok == "" || h.Get(ttl) != "21600" {
		t.Fatalf("PUT token: %d %q ttl header %q", code, tok, h.Get(ttl))
	}
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		if code, _, _ := imdsDo(t, m, tokURL, map[string]string{ttl: "60"}); code != http.StatusMethodNotAllowed {
			t.Errorf("%s token: %d, want 405", m, code)
		}
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		if code, _, _ := imdsDo(t, m, idURL, nil); code != http.StatusMethodNotAllowed {
			t.Errorf("%s meta-data: %d, want 405", m, code)
		}
	}
	if code, _, _ := imdsDo(t, http.MethodPut, e.url+"/2021-03-23/api/token", map[string]string{ttl: "60"}); code != http.StatusForbidden {
		t.Errorf("PUT versioned token path: %d, want 403", code)
	}

	// http-tokens optional: v1 works, a valid token works, a bad token is 401.
	if code, body, _ := imdsDo(t, http.MethodGet, idURL, nil); code != 200 || body != e.id {
		t.Errorf("v1 GET with optional: %d %q", code, body)
	}
	if code, body, h := imdsDo(t, http.MethodGet, idURL, map[string]string{imds.TokenHeader: tok}); code != 200 || body != e.id || h.Get(ttl) == "" {
		t.Errorf("v2 GET: %d %q ttl %q", code, body, h.Get(ttl))
	}
	if code, _, _ := imdsDo(t, http.MethodGet, idURL, map[string]string{imds.TokenHeader: "bogus"}); code != http.StatusUnauthorized {
		t.Errorf("GET with a bad token: %d, want 401", code)
	}
	if code, body, _ := imdsDo(t, http.MethodHead, idURL, nil); code != 200 || body != "" {
		t.Errorf("HEAD: %d %q", code, body)
	}

	// http-tokens required.
	if _, err := e.ec2.ModifyInstanceMetadataOptions(context.Background(), &ec2.ModifyInstanceMetadataOptionsInput{InstanceId: &e.id, HttpTokens: types.HttpTokensStateRequired}); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := imdsDo(t, http.MethodGet, idURL, nil); code != http.StatusUnauthorized {
		t.Errorf("v1 GET with required: %d, want 401", code)
	}
	_, short, _ := put(map[string]string{ttl: "1"})
	if code, body, _ := imdsDo(t, http.MethodGet, idURL, map[string]string{imds.TokenHeader: short}); code != 200 || body != e.id {
		t.Errorf("v2 GET with required: %d %q", code, body)
	}
	e.clock.Advance(time.Second)
	if code, _, _ := imdsDo(t, http.MethodGet, idURL, map[string]string{imds.TokenHeader: short}); code != http.StatusUnauthorized {
		t.Errorf("GET with an expired token: %d, want 401", code)
	}
	if code, _, _ := imdsDo(t, http.MethodGet, idURL, map[string]string{imds.TokenHeader: tok}); code != 200 {
		t.Errorf("GET with a long-lived token after 1s: %d", code)
	}
	// The SDK's v2 flow still works with required tokens.
	if got := e.must("instance-id"); got != e.id {
		t.Errorf("SDK with required: %q", got)
	}
	// A token of another instance is not valid here.
	other := e.run("t3.small")
	ourl, err := e.srv.IMDS().Listen(*other.InstanceId, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, otok, _ := imdsDo(t, http.MethodPut, ourl+"/latest/api/token", map[string]string{ttl: "60"})
	if code, _, _ := imdsDo(t, http.MethodGet, idURL, map[string]string{imds.TokenHeader: otok}); code != http.StatusUnauthorized {
		t.Errorf("another instance's token: %d, want 401", code)
	}

	// http-endpoint disabled: everything is 403.
	if _, err := e.ec2.ModifyInstanceMetadataOptions(context.Background(), &ec2.ModifyInstanceMetadataOptionsInput{InstanceId: &e.id, HttpEndpoint: types.InstanceMetadataEndpointStateDisabled}); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := put(map[string]string{ttl: "60"}); code != http.StatusForbidden {
		t.Errorf("PUT token when disabled: %d, want 403", code)
	}
	if code, _, _ := imdsDo(t, http.MethodGet, idURL, map[string]string{imds.TokenHeader: tok}); code != http.StatusForbidden {
		t.Errorf("GET when disabled: %d, want 403", code)
	}
	// The SDK sees an error, not stale data.
	if _, err := e.get("instance-id"); err == nil {
		t.Error("SDK read succeeded with the endpoint disabled")
	}
}

// TestIMDSListingsAndErrors covers the tree's edges over plain HTTP.
func TestIMDSListingsAndErrors(t *testing.T) {
	e := newIMDSEnv(t)
	get := func(p string) (int, string) {
		code, body, _ := imdsDo(t, http.MethodGet, e.url+p, nil)
		return code, body
	}
	if code, body := get("/"); code != 200 || !strings.HasSuffix(body, "\nlatest") {
		t.Errorf("GET /: %d %q", code, body)
	}
	for _, p := range []string{"/latest", "/latest/"} {
		if code, body := get(p); code != 200 || body != "dynamic/\nmeta-data/" {
			t.Errorf("GET %s: %d %q", p, code, body)
		}
	}
	code, body := get("/latest/meta-data/")
	if code != 200 {
		t.Fatalf("meta-data listing: %d", code)
	}
	keys := strings.Split(body, "\n")
	for _, want := range []string{"ami-id", "instance-id", "instance-type", "local-hostname", "local-ipv4", "mac", "network/", "placement/", "security-groups"} {
		if !slices.Contains(keys, want) {
			t.Errorf("meta-data listing lacks %q: %q", want, keys)
		}
	}
	if !slices.IsSorted(keys) {
		t.Errorf("meta-data listing not sorted: %q", keys)
	}
	if code, body := get("/2021-03-23/meta-data/instance-id"); code != 200 || body != e.id {
		t.Errorf("dated version: %d %q", code, body)
	}
	for _, p := range []string{"/latest/meta-data/nope", "/latest/user-data", "/v9/meta-data/", "/latest/meta-data/instance-id/x", "/latest/dynamic/nope"} {
		code, body := get(p)
		if code != 404 || !strings.Contains(body, "404 - Not Found") {
			t.Errorf("GET %s: %d %q", p, code, body)
		}
	}
	code, doc := get("/latest/dynamic/instance-identity/document")
	if code != 200 {
		t.Fatalf("identity document: %d", code)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatalf("identity document is not JSON: %v\n%s", err, doc)
	}
	for _, k := range []string{"instanceId", "instanceType", "region", "availabilityZone", "privateIp", "accountId", "imageId", "pendingTime", "architecture", "version"} {
		if s, _ := m[k].(string); s == "" {
			t.Errorf("identity document field %s = %v", k, m[k])
		}
	}
	if m["instanceId"] != e.id || m["privateIp"] != *e.inst.PrivateIpAddress {
		t.Errorf("identity document: %v", m)
	}
	// Instance-role credentials as the SDK's ec2rolecreds provider reads them.
	if code, role := get("/latest/meta-data/iam/security-credentials/"); code != 200 || role != imds.RoleName {
		t.Errorf("role listing: %d %q", code, role)
	}
	code, creds := get("/latest/meta-data/iam/security-credentials/" + imds.RoleName)
	var c struct{ Code, AccessKeyId, SecretAccessKey, Token, Expiration string }
	if err := json.Unmarshal([]byte(creds), &c); code != 200 || err != nil || c.Code != "Success" || c.AccessKeyId == "" || c.Expiration == "" {
		t.Errorf("role credentials: %d %v %+v", code, err, c)
	}

	// A terminated instance has no metadata.
	if _, err := e.ec2.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{e.id}}); err != nil {
		t.Fatal(err)
	}
	if e.srv.IMDS().Endpoint(e.id) != "" {
		t.Error("terminated instance still has an endpoint")
	}
	var opErr error
	for i := 0; i < 50; i++ { // the listener closes asynchronously
		resp, err := http.Get(e.url + "/latest/meta-data/instance-id")
		if err != nil {
			opErr = err
			break
		}
		resp.Body.Close()
		time.Sleep(10 * time.Millisecond)
	}
	if opErr == nil {
		t.Error("terminated instance's listener still answers")
	}
	if h := e.srv.IMDS().Handler(e.id); h != nil {
		rec := newRecorder()
		h.ServeHTTP(rec, mustReq(t, e.url+"/latest/meta-data/instance-id"))
		if rec.code != 404 {
			t.Errorf("handler of a terminated instance: %d", rec.code)
		}
	}
}

type recorder struct {
	h    http.Header
	code int
	body strings.Builder
}

func newRecorder() *recorder                    { return &recorder{h: http.Header{}} }
func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) WriteHeader(c int)           { r.code = c }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }

func mustReq(t *testing.T, url string) *http.Request {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestIMDSConcurrentReadsAndChanges runs SDK readers against a churning
// region (under -race) and checks every listing is self-consistent.
func TestIMDSConcurrentReadsAndChanges(t *testing.T) {
	e := newIMDSEnv(t)
	p, _ := e.srv.Region().NetworkInterface(*e.inst.NetworkInterfaces[0].NetworkInterfaceId)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				v, err := e.get("network/interfaces/macs/" + p.MAC + "/local-ipv4s")
				if err != nil {
					errs <- err
					return
				}
				if first, _, _ := strings.Cut(v, "\n"); first != p.PrivateIP.String() {
					errs <- errors.New("primary not first: " + v)
					return
				}
			}
		}()
	}
	for i := 0; i < 30; i++ {
		a, _, err := e.srv.Region().AssignPrivateIPs(model.AssignPrivateIPsInput{ENIID: p.ID, Count: 2})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.srv.Region().UnassignPrivateIPs(p.ID, a, nil); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
