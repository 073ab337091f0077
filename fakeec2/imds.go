package fakeec2

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// IMDS header names and limits, as AWS documents them.
const (
	IMDSTokenHeader    = "X-Aws-Ec2-Metadata-Token"
	IMDSTokenTTLHeader = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
	imdsMaxTokenTTL    = 21600
	// IMDSRoleName is the IAM role every instance reports under
	// meta-data/iam/security-credentials/.
	IMDSRoleName = "vpclab-node"
)

// IMDSOptions configure the instance metadata service.
type IMDSOptions struct {
	// Lag is the default propagation delay between a change in the region
	// and its appearance in the affected instance's metadata.
	Lag time.Duration
	// Faults supplies extra per-change lag from rules with IMDSLag set; the
	// Server wires its own fault rules here.
	Faults *Faults
	// RoleAccessKeyID and RoleSecretKey are the instance-role credentials
	// served under iam/security-credentials/ (fake defaults when empty).
	RoleAccessKeyID string
	RoleSecretKey   string
	// Logger receives listener and token events; slog.Default when nil.
	Logger *slog.Logger
}

// IMDS serves the instance metadata service of every instance in a region.
// Each instance's view is a replica fed synchronously by the region's
// changes; a change becomes visible to that instance only after the
// instance's propagation lag (plus any fault-rule lag), and changes become
// visible in the order they happened, like a lagging but consistent IMDS.
type IMDS struct {
	region *Region
	opts   IMDSOptions
	log    *slog.Logger
	cancel func()

	mu     sync.Mutex
	lag    time.Duration
	insts  map[string]*imdsInstance
	shared *http.Server // the one listener serving every instance without its own
	base   string       // the shared listener's host:port
	closed bool
}

type imdsInstance struct {
	inst       Instance
	sgNames    []string
	primaryMAC string
	enis       map[string]imdsENI // what the instance currently sees
	queue      []imdsItem         // changes not yet visible, in order
	lastAt     time.Time          // visibility time of the newest queued change
	lag        *time.Duration     // nil: the service default
	tokens     map[string]time.Time
	terminated bool
	srv        *http.Server
	url        string
}

// imdsENI is an ENI as one instance sees it, with the subnet, VPC and
// security-group facts IMDS reports alongside it.
type imdsENI struct {
	NetworkInterface
	subnetCIDR netip.Prefix
	subnetV6   netip.Prefix
	vpcCIDRs   []netip.Prefix
	vpcV6      []netip.Prefix
	sgNames    []string
}

// imdsItem replaces (eni != nil) or removes (eni == nil) one ENI at time at.
type imdsItem struct {
	at  time.Time
	id  string
	eni *imdsENI
}

// NewIMDS starts the metadata service of region. Close releases it.
func NewIMDS(region *Region, opts IMDSOptions) *IMDS {
	m := &IMDS{region: region, opts: opts, log: opts.Logger, lag: opts.Lag, insts: map[string]*imdsInstance{}}
	if m.log == nil {
		m.log = slog.Default()
	}
	m.cancel = region.observe(func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, i := range region.insts {
			if i.State == "running" {
				m.addInstanceLocked(i)
			}
		}
	}, m.onChange)
	return m
}

// Close stops following the region and closes every listener.
func (m *IMDS) Close() error {
	m.cancel()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	var errs []error
	for _, v := range m.insts {
		if v.srv != nil {
			errs = append(errs, v.srv.Close())
			v.srv = nil
		}
		v.url = ""
	}
	if m.shared != nil {
		errs = append(errs, m.shared.Close())
		m.shared = nil
	}
	return errors.Join(errs...)
}

// DefaultLag returns the propagation lag of instances without their own.
func (m *IMDS) DefaultLag() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lag
}

// SetDefaultLag sets the propagation lag of instances without their own.
// It applies to changes made from now on.
func (m *IMDS) SetDefaultLag(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lag = max(d, 0)
}

// SetLag gives one instance its own propagation lag; a negative d returns
// it to the default. It applies to changes made from now on.
func (m *IMDS) SetLag(instanceID string, d time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.insts[instanceID]
	if !ok {
		return errInstanceNotFound(instanceID)
	}
	if d < 0 {
		v.lag = nil
	} else {
		v.lag = &d
	}
	return nil
}

// IMDSStatus describes one instance's metadata service.
type IMDSStatus struct {
	InstanceID string   `json:"instanceId"`
	Endpoint   string   `json:"endpoint,omitempty"`
	Lag        Duration `json:"lag"`
	OwnLag     bool     `json:"ownLag"`
	// Pending counts changes made in the region that the instance's
	// metadata does not show yet.
	Pending int `json:"pending"`
}

// Status lists every instance's metadata service, by instance id.
func (m *IMDS) Status() []IMDSStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.region.opts.Now()
	out := make([]IMDSStatus, 0, len(m.insts))
	for id, v := range m.insts {
		if v.terminated {
			continue
		}
		v.catchUp(now)
		out = append(out, IMDSStatus{InstanceID: id, Endpoint: v.url, Lag: Duration(v.lagOr(m.lag)), OwnLag: v.lag != nil, Pending: len(v.queue)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].InstanceID < out[j].InstanceID })
	return out
}

// Pending reports how many changes instance id's metadata does not show yet.
func (m *IMDS) Pending(instanceID string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.insts[instanceID]
	if !ok {
		return 0
	}
	v.catchUp(m.region.opts.Now())
	return len(v.queue)
}

// Endpoint returns the base URL of instance id's listener ("" if none).
func (m *IMDS) Endpoint(instanceID string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.insts[instanceID]; ok {
		return v.url
	}
	return ""
}

// SetAutoListen serves every instance that has no listener of its own,
// now and launched later, from one listener on addr (host:port;
// "127.0.0.1:0" picks a free port). An instance is chosen by the user name
// of the URL (http://i-0abc@127.0.0.1:PORT: the SDKs and curl send it as
// basic auth) or by a path prefix (/i-0abc/latest/meta-data/). One port
// serves any number of instances: no file descriptor per instance.
func (m *IMDS) SetAutoListen(addr string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return "", errors.New("imds: service closed")
	}
	if m.shared != nil {
		return "http://" + m.base, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("imds listen on %s: %w", addr, err)
	}
	m.shared = &http.Server{Handler: m.SharedHandler(), ConnContext: IMDSConnContext, ReadHeaderTimeout: 10 * time.Second}
	m.base = ln.Addr().String()
	go func(srv *http.Server) {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("imds serve", "err", err)
		}
	}(m.shared)
	for id, v := range m.insts {
		if v.srv == nil && !v.terminated {
			v.url = m.sharedURL(id)
		}
	}
	m.log.Debug("imds listening for every instance", "addr", m.base)
	return "http://" + m.base, nil
}

func (m *IMDS) sharedURL(id string) string { return "http://" + id + "@" + m.base }

// SharedHandler serves every instance's metadata, choosing the instance
// by the request's basic-auth user name or its /INSTANCE-ID/ path prefix.
func (m *IMDS) SharedHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _, ok := r.BasicAuth()
		if !ok || id == "" {
			seg, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
			if strings.HasPrefix(seg, "i-") {
				id = seg
				r = r.Clone(r.Context())
				r.URL.Path, r.URL.RawPath = "/"+rest, ""
			}
		}
		if id == "" {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, "this metadata listener serves every instance: use http://INSTANCE-ID@"+r.Host+" (for AWS_EC2_METADATA_SERVICE_ENDPOINT) or the path /INSTANCE-ID/latest/...\n")
			return
		}
		m.Handler(id).ServeHTTP(w, r)
	})
}

// Listen serves instance id's metadata on a listener of its own at addr
// ("127.0.0.1:0" picks a free port) and returns its base URL, e.g.
// "http://127.0.0.1:41234".
func (m *IMDS) Listen(instanceID, addr string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.insts[instanceID]
	if !ok || v.terminated {
		return "", fmt.Errorf("imds listen for %s: %w", instanceID, errInstanceNotFound(instanceID))
	}
	return m.listenLocked(instanceID, v, addr)
}

func (m *IMDS) listenLocked(id string, v *imdsInstance, addr string) (string, error) {
	if m.closed {
		return "", fmt.Errorf("imds listen for %s: service closed", id)
	}
	if v.srv != nil {
		return "", fmt.Errorf("imds listen for %s on %s: already listening at %s", id, addr, v.url)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("imds listen for %s: %w", id, err)
	}
	v.srv = &http.Server{Handler: m.Handler(id), ConnContext: IMDSConnContext, ReadHeaderTimeout: 10 * time.Second}
	v.url = "http://" + ln.Addr().String()
	go func(srv *http.Server) {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("imds serve", "instance", id, "err", err)
		}
	}(v.srv)
	m.log.Debug("imds listening", "instance", id, "endpoint", v.url)
	return v.url, nil
}

func (v *imdsInstance) lagOr(def time.Duration) time.Duration {
	if v.lag != nil {
		return *v.lag
	}
	return def
}

// catchUp applies every queued change due by now.
func (v *imdsInstance) catchUp(now time.Time) {
	n := 0
	for ; n < len(v.queue) && !v.queue[n].at.After(now); n++ {
		it := v.queue[n]
		if it.eni == nil {
			delete(v.enis, it.id)
		} else {
			v.enis[it.id] = *it.eni
		}
	}
	if n > 0 {
		v.queue = slices.Delete(v.queue, 0, n)
	}
}

// visibleToInstance reports whether IMDS lists e for the instance it is
// attached to: from the end of attaching until the end of detaching.
func visibleToInstance(e *eniState, id string) bool {
	a := e.Attachment
	return a != nil && a.InstanceID == id && (a.Status == "attached" || a.Status == "detaching") && e.InterfaceType != "branch"
}

// capture copies an ENI with the facts IMDS shows next to it; r.mu is held.
func (m *IMDS) capture(e *eniState) imdsENI {
	r := m.region
	x := imdsENI{NetworkInterface: e.NetworkInterface.clone()}
	if s, ok := r.subnets[e.SubnetID]; ok {
		x.subnetCIDR, x.subnetV6 = s.CIDR, s.IPv6CIDR
	}
	if v, ok := r.vpcs[e.VPCID]; ok {
		x.vpcCIDRs, x.vpcV6 = slices.Clone(v.CIDRBlocks), slices.Clone(v.IPv6CIDRBlocks)
	}
	x.sgNames = m.groupNames(e.SecurityGroups)
	return x
}

func (m *IMDS) groupNames(ids []string) []string {
	var out []string
	for _, g := range ids {
		if sg, ok := m.region.groups[g]; ok {
			out = append(out, sg.Name)
		}
	}
	return out
}

// addInstanceLocked starts an instance's view with the ENIs attached now;
// r.mu and m.mu are held.
func (m *IMDS) addInstanceLocked(i *Instance) {
	v := &imdsInstance{inst: i.clone(), enis: map[string]imdsENI{}, tokens: map[string]time.Time{}}
	v.sgNames = m.groupNames(i.SecurityGroups)
	for _, e := range m.region.enis {
		if visibleToInstance(e, i.ID) {
			v.enis[e.ID] = m.capture(e)
		}
		if e.ID == i.PrimaryENI {
			v.primaryMAC = e.MAC
		}
	}
	m.insts[i.ID] = v
	if m.shared != nil {
		v.url = m.sharedURL(i.ID)
	}
}

// onChange routes one region change into the views of the instances it
// affects; it runs under r.mu, in the order changes are applied.
func (m *IMDS) onChange(c Change) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.region
	switch c.Kind {
	case ChangeInstanceRunning:
		if i, ok := r.insts[c.InstanceID]; ok {
			m.addInstanceLocked(i)
		}
		return
	case ChangeInstanceTerminated:
		if v, ok := m.insts[c.InstanceID]; ok {
			v.terminated, v.inst.State, v.queue, v.tokens = true, "terminated", nil, map[string]time.Time{}
			if v.srv != nil {
				go v.srv.Close()
				v.srv = nil
			}
			v.url = ""
		}
		return
	case ChangeInstanceMetadata:
		if v, ok := m.insts[c.InstanceID]; ok {
			if i, ok := r.insts[c.InstanceID]; ok {
				v.inst.Metadata = i.Metadata
			}
		}
		return
	}
	if c.ENIID == "" {
		return
	}
	e := r.enis[c.ENIID] // nil once deleted
	targets := make([]string, 0, 2)
	if c.InstanceID != "" {
		targets = append(targets, c.InstanceID)
	}
	if e != nil && e.Attachment != nil && e.Attachment.InstanceID != c.InstanceID {
		targets = append(targets, e.Attachment.InstanceID)
	}
	for _, id := range targets {
		v, ok := m.insts[id]
		if !ok || v.terminated {
			continue
		}
		var snap *imdsENI
		if e != nil && visibleToInstance(e, id) {
			x := m.capture(e)
			snap = &x
		}
		lag := v.lagOr(m.lag)
		if m.opts.Faults != nil {
			lag += m.opts.Faults.IMDSLag(c.Action)
		}
		at := c.Time.Add(lag)
		if at.Before(v.lastAt) {
			at = v.lastAt
		}
		v.lastAt = at
		v.queue = append(v.queue, imdsItem{at: at, id: c.ENIID, eni: snap})
		v.catchUp(c.Time) // applies what is due (all of it at zero lag), bounding the queue
	}
}

// IMDSConnContext records the connection in the request context so the
// token response can be sent with the instance's hop limit as IP TTL; use
// it as http.Server.ConnContext when serving an IMDS Handler.
func IMDSConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, imdsConnKey{}, c)
}

type imdsConnKey struct{}

// Handler returns the metadata service of one instance as an http.Handler.
// It serves 169.254.169.254's paths: /latest/api/token (PUT),
// /latest/meta-data/..., /latest/dynamic/instance-identity/document.
func (m *IMDS) Handler(instanceID string) http.Handler {
	return imdsHandler{m: m, id: instanceID}
}

type imdsHandler struct {
	m  *IMDS
	id string
}

// imdsReply is a response computed under m.mu and written after.
type imdsReply struct {
	status   int
	body     string
	header   map[string]string
	hopLimit int // > 0: send with this IP TTL (token responses)
}

func (h imdsHandler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	rep := h.m.serve(h.id, req)
	w.Header().Set("Server", "EC2ws")
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	if rep.status != http.StatusOK {
		rep.body = imdsErrorPage(rep.status)
		w.Header().Set("Content-Type", "text/html")
	} else if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "text/plain")
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(rep.body)))
	if rep.hopLimit > 0 {
		if c, ok := req.Context().Value(imdsConnKey{}).(net.Conn); ok {
			// Every packet of the token response, retransmissions included,
			// leaves with TTL = hop limit; the connection is closed after
			// it so no later response inherits the TTL.
			setConnTTL(c, rep.hopLimit)
			w.Header().Set("Connection", "close")
		}
	}
	w.WriteHeader(rep.status)
	if req.Method != http.MethodHead {
		_, _ = w.Write([]byte(rep.body))
	}
}

func imdsErrorPage(status int) string {
	title := fmt.Sprintf("%d - %s", status, http.StatusText(status))
	return `<?xml version="1.0" encoding="iso-8859-1"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
	"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title>` + title + `</title>
 </head>
 <body>
  <h1>` + title + `</h1>
 </body>
</html>
`
}

var imdsVersion = regexp.MustCompile(`^(latest|1\.0|\d{4}-\d{2}-\d{2})$`)

// imdsVersions is the listing of "/": a selection of real dated versions.
var imdsVersions = []string{"1.0", "2007-01-19", "2009-04-04", "2011-01-01", "2014-02-25", "2016-09-02", "2018-09-24", "2019-10-01", "2020-10-27", "2021-07-15", "2022-09-24", "latest"}

func (m *IMDS) serve(id string, req *http.Request) imdsReply {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.insts[id]
	if !ok || v.terminated {
		return imdsReply{status: http.StatusNotFound}
	}
	now := m.region.opts.Now()
	if v.inst.Metadata.HTTPEndpoint == "disabled" {
		return imdsReply{status: http.StatusForbidden}
	}
	p := req.URL.Path
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	isToken := len(segs) == 3 && segs[1] == "api" && segs[2] == "token"
	if isToken && segs[0] == "latest" {
		if req.Method != http.MethodPut {
			return imdsReply{status: http.StatusMethodNotAllowed, header: map[string]string{"Allow": "PUT"}}
		}
		return v.issueToken(req, now)
	}
	if req.Method == http.MethodPut {
		if isToken && imdsVersion.MatchString(segs[0]) {
			// Tokens are only handed out under /latest/, by design.
			return imdsReply{status: http.StatusForbidden}
		}
		return imdsReply{status: http.StatusMethodNotAllowed, header: map[string]string{"Allow": "GET, HEAD"}}
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return imdsReply{status: http.StatusMethodNotAllowed, header: map[string]string{"Allow": "GET, HEAD, PUT"}}
	}
	hdr := map[string]string{}
	if tok := req.Header.Get(IMDSTokenHeader); tok != "" {
		exp, ok := v.tokens[tok]
		if !ok || !now.Before(exp) {
			delete(v.tokens, tok)
			return imdsReply{status: http.StatusUnauthorized}
		}
		hdr[IMDSTokenTTLHeader] = strconv.Itoa(int(exp.Sub(now).Seconds()))
	} else if v.inst.Metadata.HTTPTokens == "required" {
		return imdsReply{status: http.StatusUnauthorized}
	}
	v.catchUp(now)
	body, ok := m.lookup(v, segs, now)
	if !ok {
		return imdsReply{status: http.StatusNotFound, header: hdr}
	}
	return imdsReply{status: http.StatusOK, body: body, header: hdr}
}

func (v *imdsInstance) issueToken(req *http.Request, now time.Time) imdsReply {
	if len(req.Header.Values("X-Forwarded-For")) > 0 {
		return imdsReply{status: http.StatusForbidden}
	}
	raw := req.Header.Get(IMDSTokenTTLHeader)
	ttl, err := strconv.Atoi(strings.TrimSpace(raw))
	if raw == "" || err != nil || ttl < 1 || ttl > imdsMaxTokenTTL {
		return imdsReply{status: http.StatusBadRequest}
	}
	for t, exp := range v.tokens {
		if !now.Before(exp) {
			delete(v.tokens, t)
		}
	}
	b := make([]byte, 42)
	_, _ = rand.Read(b)
	tok := base64.StdEncoding.EncodeToString(b)
	v.tokens[tok] = now.Add(time.Duration(ttl) * time.Second)
	return imdsReply{status: http.StatusOK, body: tok, header: map[string]string{IMDSTokenTTLHeader: strconv.Itoa(ttl)}, hopLimit: v.inst.Metadata.HopLimit}
}

// mdDir is one directory of the metadata tree; values are string leaves or
// *mdDir subdirectories.
type mdDir struct {
	names   []string
	kids    map[string]any
	ordered bool // list in insertion order instead of sorted
}

func newDir() *mdDir { return &mdDir{kids: map[string]any{}} }

func (d *mdDir) set(name string, v any) {
	if _, ok := d.kids[name]; !ok {
		d.names = append(d.names, name)
	}
	d.kids[name] = v
}

func (d *mdDir) dir(name string) *mdDir {
	if x, ok := d.kids[name].(*mdDir); ok {
		return x
	}
	x := newDir()
	d.set(name, x)
	return x
}

func (d *mdDir) listing() string {
	names := slices.Clone(d.names)
	if !d.ordered {
		sort.Strings(names)
	}
	for i, n := range names {
		if _, ok := d.kids[n].(*mdDir); ok {
			names[i] = n + "/"
		}
	}
	return strings.Join(names, "\n")
}

// resolve walks segs (empty segments, from trailing slashes, are ignored).
func (d *mdDir) resolve(segs []string) (string, bool) {
	var cur any = d
	for _, s := range segs {
		if s == "" {
			continue
		}
		dir, ok := cur.(*mdDir)
		if !ok {
			return "", false
		}
		if cur, ok = dir.kids[s]; !ok {
			return "", false
		}
	}
	if dir, ok := cur.(*mdDir); ok {
		return dir.listing(), true
	}
	return cur.(string), true
}

func joinLines[T fmt.Stringer](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return strings.Join(s, "\n")
}

func (m *IMDS) lookup(v *imdsInstance, segs []string, now time.Time) (string, bool) {
	if len(segs) == 1 && segs[0] == "" {
		return strings.Join(imdsVersions, "\n"), true
	}
	if !imdsVersion.MatchString(segs[0]) {
		return "", false
	}
	rest := segs[1:]
	root := newDir()
	root.set("meta-data", m.metadataTree(v, now))
	root.dir("dynamic").dir("instance-identity").set("document", m.identityDocument(v))
	return root.resolve(rest)
}

func (m *IMDS) hostname(a netip.Addr) string {
	name := "ip-" + strings.ReplaceAll(a.String(), ".", "-")
	if m.region.opts.Name == "us-east-1" {
		return name + ".ec2.internal"
	}
	return name + "." + m.region.opts.Name + ".compute.internal"
}

// sortedENIs returns the visible ENIs by network card, then device index.
func (v *imdsInstance) sortedENIs() []imdsENI {
	out := make([]imdsENI, 0, len(v.enis))
	for _, e := range v.enis {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Attachment, out[j].Attachment
		if a.NetworkCardIndex != b.NetworkCardIndex {
			return a.NetworkCardIndex < b.NetworkCardIndex
		}
		return a.DeviceIndex < b.DeviceIndex
	})
	return out
}

func (m *IMDS) metadataTree(v *imdsInstance, now time.Time) *mdDir {
	i := v.inst
	md := newDir()
	md.set("ami-id", i.ImageID)
	md.set("ami-launch-index", "0")
	md.set("ami-manifest-path", "(unknown)")
	bdm := md.dir("block-device-mapping")
	bdm.set("ami", "/dev/xvda")
	bdm.set("root", "/dev/xvda")
	md.set("hostname", m.hostname(i.PrivateIP))
	md.set("instance-action", "none")
	md.set("instance-id", i.ID)
	md.set("instance-life-cycle", "on-demand")
	md.set("instance-type", i.Type)
	md.set("local-hostname", m.hostname(i.PrivateIP))
	md.set("local-ipv4", i.PrivateIP.String())
	md.set("mac", v.primaryMAC)
	md.set("profile", "default-hvm")
	md.set("reservation-id", "r-"+strings.TrimPrefix(i.ID, "i-"))
	md.set("security-groups", strings.Join(v.sgNames, "\n"))
	pl := md.dir("placement")
	pl.set("availability-zone", i.AZ)
	pl.set("availability-zone-id", i.AZID)
	pl.set("region", m.region.opts.Name)
	svc := md.dir("services")
	svc.set("domain", "amazonaws.com")
	svc.set("partition", "aws")

	iam := md.dir("iam")
	iam.set("info", m.iamInfo(i, now))
	iam.dir("security-credentials").set(IMDSRoleName, m.roleCredentials(now))

	macs := md.dir("network").dir("interfaces").dir("macs")
	macs.ordered = true
	for _, e := range v.sortedENIs() {
		if e.ID == i.PrimaryENI && len(e.IPv6) > 0 {
			md.set("ipv6", e.IPv6[0].String())
		}
		d := macs.dir(e.MAC)
		d.set("device-number", strconv.Itoa(e.Attachment.DeviceIndex))
		d.set("network-card", strconv.Itoa(e.Attachment.NetworkCardIndex))
		d.set("network-card-index", strconv.Itoa(e.Attachment.NetworkCardIndex))
		d.set("interface-id", e.ID)
		d.set("mac", e.MAC)
		d.set("owner-id", m.region.opts.AccountID)
		if e.PrivateIP.IsValid() {
			d.set("local-hostname", m.hostname(e.PrivateIP))
			d.set("local-ipv4s", joinLines(append([]netip.Addr{e.PrivateIP}, e.SecondaryIPs...)))
		}
		if len(e.Prefixes) > 0 {
			d.set("ipv4-prefix", joinLines(e.Prefixes))
		}
		if len(e.IPv6) > 0 {
			d.set("ipv6s", joinLines(e.IPv6))
			d.set("local-ipv6s", joinLines(e.IPv6))
		}
		if len(e.IPv6Prefixes) > 0 {
			d.set("ipv6-prefix", joinLines(e.IPv6Prefixes))
		}
		d.set("security-group-ids", strings.Join(e.SecurityGroups, "\n"))
		d.set("security-groups", strings.Join(e.sgNames, "\n"))
		d.set("subnet-id", e.SubnetID)
		d.set("subnet-ipv4-cidr-block", e.subnetCIDR.String())
		if e.subnetV6.IsValid() {
			d.set("subnet-ipv6-cidr-blocks", e.subnetV6.String())
		}
		d.set("vpc-id", e.VPCID)
		if len(e.vpcCIDRs) > 0 {
			d.set("vpc-ipv4-cidr-block", e.vpcCIDRs[0].String())
			d.set("vpc-ipv4-cidr-blocks", joinLines(e.vpcCIDRs))
		}
		if len(e.vpcV6) > 0 {
			d.set("vpc-ipv6-cidr-blocks", joinLines(e.vpcV6))
		}
	}
	return md
}

func (m *IMDS) iamInfo(i Instance, now time.Time) string {
	b, _ := json.MarshalIndent(map[string]string{
		"Code": "Success", "LastUpdated": now.UTC().Format(time.RFC3339),
		"InstanceProfileArn": fmt.Sprintf("arn:aws:iam::%s:instance-profile/%s", m.region.opts.AccountID, IMDSRoleName),
		"InstanceProfileId":  "AIPAVPCLAB" + strings.ToUpper(strings.TrimPrefix(i.ID, "i-")),
	}, "", "  ")
	return string(b)
}

func (m *IMDS) roleCredentials(now time.Time) string {
	key, secret := m.opts.RoleAccessKeyID, m.opts.RoleSecretKey
	if key == "" {
		key, secret = "ASIAVPCLABFAKEROLE01", "vpclab/fake/instance/role/secret/key00000"
	}
	b, _ := json.MarshalIndent(map[string]string{
		"Code": "Success", "LastUpdated": now.UTC().Format(time.RFC3339), "Type": "AWS-HMAC",
		"AccessKeyId": key, "SecretAccessKey": secret, "Token": "vpclab-fake-session-token",
		"Expiration": now.Add(6 * time.Hour).UTC().Format(time.RFC3339),
	}, "", "  ")
	return string(b)
}

// identityDoc is /latest/dynamic/instance-identity/document.
type identityDoc struct {
	AccountID               string   `json:"accountId"`
	Architecture            string   `json:"architecture"`
	AvailabilityZone        string   `json:"availabilityZone"`
	BillingProducts         []string `json:"billingProducts"`
	DevpayProductCodes      []string `json:"devpayProductCodes"`
	MarketplaceProductCodes []string `json:"marketplaceProductCodes"`
	ImageID                 string   `json:"imageId"`
	InstanceID              string   `json:"instanceId"`
	InstanceType            string   `json:"instanceType"`
	KernelID                *string  `json:"kernelId"`
	PendingTime             string   `json:"pendingTime"`
	PrivateIP               string   `json:"privateIp"`
	RamdiskID               *string  `json:"ramdiskId"`
	Region                  string   `json:"region"`
	Version                 string   `json:"version"`
}

func (m *IMDS) identityDocument(v *imdsInstance) string {
	i := v.inst
	b, _ := json.MarshalIndent(identityDoc{
		AccountID: m.region.opts.AccountID, Architecture: architecture(i.Type), AvailabilityZone: i.AZ,
		ImageID: i.ImageID, InstanceID: i.ID, InstanceType: i.Type, PendingTime: i.LaunchTime.UTC().Format("2006-01-02T15:04:05Z"),
		PrivateIP: i.PrivateIP.String(), Region: m.region.opts.Name, Version: "2017-09-30",
	}, "", "  ")
	return string(b)
}

// graviton matches Arm (Graviton) instance families: a "g" among the
// attribute letters after the generation digit (m6g, c7gn, r6gd, t4g, g5g)
// and the a1 family.
var graviton = regexp.MustCompile(`^(a1|[a-z]+\d+[a-z]*g[a-z]*)(\.|-)`)

func architecture(instanceType string) string {
	if graviton.MatchString(instanceType) {
		return "arm64"
	}
	return "x86_64"
}
