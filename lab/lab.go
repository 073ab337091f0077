// Package lab is the composition root: a fakeec2 region (its EC2 API also
// on a host loopback address), the fabric, and nodes. A node is a network
// namespace plus a mount namespace in which its own directories sit at
// /var/run/aws-node, /var/log/aws-routed-eni, /opt/cni/bin and
// /etc/cni/net.d; it runs a real ipamd and has aws-cni installed by the
// install step, and pods are added through libcni as a runtime would.
//
// Every lab is owned by the process that created it (a flock on its owner
// file, see Owner) and serves a root-only control socket (see Client);
// GC removes only labs whose owner is gone.
package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/fakeec2/control"
	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/fakeec2/world"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/lab/k8s"
	"github.com/vpclab/vpclab/plugin"
)

// Lab is a running lab.
type Lab struct {
	cfg    Config
	paths  Paths
	owner  *ownerLock
	log    *slog.Logger
	region *model.Region
	srv    *fakeec2.Server
	fab    *fabric.Fabric
	http   *http.Server // the EC2 API on host loopback
	ctl    *http.Server // the control socket
	ec2URL string
	vpcID  string

	subnets map[string]string // name -> id

	// releaseCNIs lets go of the CNI builds' app directories the nodes run.
	releaseCNIs func()
	kube        *kube             // Kubernetes mode's control plane (nil: plain)
	sysctls     map[string]string // host sysctls Kubernetes mode changes, as they were

	// rec keeps the timeline (pools, pod operations, restarts, faults);
	// stopSampling ends its sampler.
	rec          *recorder
	stopSampling context.CancelFunc
	samplingDone chan struct{}

	mu     sync.Mutex
	nodes  []*Node
	ready  bool
	closed bool
	onDown func() // set by Serve: what POST /down does
}

// Progress, when set, receives one line per bring-up step.
type Progress func(format string, args ...any)

// New brings a lab up. On failure, or when ctx is cancelled (Ctrl-C),
// everything created so far is removed before it returns.
func New(ctx context.Context, cfg Config, progress Progress) (*Lab, error) {
	if progress == nil {
		progress = func(string, ...any) {}
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("vpclab needs root (network and mount namespaces)")
	}
	if err := cfg.checkBinaries(); err != nil {
		return nil, err
	}
	if cfg.Kubernetes != nil {
		if err := k8s.Built(); err != nil {
			return nil, err
		}
	}
	specs := cfg.nodeSpecs()
	releaseCNIs, err := buildCNIs(ctx, specs, progress)
	if err != nil {
		return nil, err
	}
	p := PathsFor(cfg.Name, cfg.StateDir)
	own, err := acquireOwner(p, cfg.ownerKind())
	if err != nil {
		var ae *AliveError
		if errors.As(err, &ae) {
			return nil, fmt.Errorf("lab %s already exists, owned by %s (vpclab down --name %s, or stop that process)", cfg.Name, ae.Owner, cfg.Name)
		}
		releaseCNIs()
		return nil, err
	}
	l := &Lab{cfg: cfg, paths: p, owner: own, releaseCNIs: releaseCNIs, log: slog.Default().With("lab", cfg.Name), subnets: map[string]string{}, rec: newRecorder()}
	ok := false
	defer func() {
		if !ok {
			_ = l.Close()
		}
	}()
	if hasLeftovers(p) {
		progress("removing what an earlier lab %s left (its owner is gone)", cfg.Name)
		if err := removeLeftovers(p); err != nil {
			return nil, fmt.Errorf("leftovers of an earlier lab %s: %w", cfg.Name, err)
		}
	}
	if err := l.serveControl(); err != nil {
		return nil, err
	}
	if err := l.bringUp(ctx, specs, progress); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("bring-up interrupted: %w", context.Cause(ctx))
		}
		return nil, err
	}
	ok = true
	sctx, stop := context.WithCancel(context.Background())
	l.mu.Lock()
	l.ready = true
	l.stopSampling, l.samplingDone = stop, make(chan struct{})
	l.mu.Unlock()
	go func() {
		defer close(l.samplingDone)
		l.sampleLoop(sctx)
	}()
	return l, nil
}

// PrepareCNIs builds (or finds in the cache) the CNIs a lab's nodes run,
// so that the build's progress and failures show before a lab is started
// in the background. Failures wrap ErrNoCNI.
func PrepareCNIs(ctx context.Context, cfg Config, progress Progress) error {
	cfg.SetDefaults()
	release, err := buildCNIs(ctx, cfg.nodeSpecs(), progress)
	if err == nil {
		release()
	}
	return err
}

// BuildCNIs builds (or finds in the cache) each of cnis, in order.
func BuildCNIs(ctx context.Context, cnis []CNI, progress Progress) error {
	for _, c := range cnis {
		if _, err := BuildCNI(ctx, c, progress); err != nil {
			return err
		}
	}
	return nil
}

// buildCNIs builds (or finds in the cache) each CNI the nodes run, once
// per distinct CNI, before anything is created, and holds each build's app
// directory (see holdApp) until release is called.
func buildCNIs(ctx context.Context, specs []nodeSpec, progress Progress) (release func(), err error) {
	built := map[string]CNIBuild{}
	var holds []func()
	release = func() {
		for _, h := range holds {
			h()
		}
	}
	for i := range specs {
		key := specs[i].cni.String()
		b, ok := built[key]
		if !ok {
			var hold func()
			if b, hold, err = buildAndHold(ctx, specs[i].cni, progress); err != nil {
				release()
				return nil, err
			}
			holds = append(holds, hold)
			built[key] = b
		}
		specs[i].build = b
	}
	return release, nil
}

// buildAndHold builds c and holds its app directory, building again if
// another build pruned it in between.
func buildAndHold(ctx context.Context, c CNI, progress Progress) (CNIBuild, func(), error) {
	for {
		b, err := BuildCNI(ctx, c, progress)
		if err != nil || b.AppDir == "" {
			return b, func() {}, err
		}
		hold, err := holdApp(b.AppDir)
		if errors.Is(err, errAppGone) && ctx.Err() == nil {
			continue
		}
		if err != nil {
			return CNIBuild{}, nil, fmt.Errorf("%w %s: %v", ErrNoCNI, c, err)
		}
		return b, hold, nil
	}
}

// bringUp builds the region, its fabric and the nodes.
func (l *Lab) bringUp(ctx context.Context, specs []nodeSpec, progress Progress) error {
	cfg := l.cfg
	if err := ensureSharedNetnsDir(netx.NetnsDir); err != nil {
		return fmt.Errorf("shared %s: %w", netx.NetnsDir, err)
	}
	if err := makePrivate(l.paths.Root()); err != nil {
		return err
	}
	w := cfg.world()
	l.region = model.NewRegion(w.RegionOptions())
	so := w.ServerOptions()
	so.API.Logger = l.log
	l.srv = fakeec2.NewServer(l.region, so)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("EC2 API listener: %w", err)
	}
	// The host's EC2 endpoint serves the Query API only: the control API
	// (faults, throttling, timing) is on the root-only control socket.
	l.http = &http.Server{Handler: l.srv.APIHandler(), ReadHeaderTimeout: 10 * time.Second}
	l.ec2URL = "http://" + ln.Addr().String()
	go func() { _ = l.http.Serve(ln) }()
	built, err := w.Apply(l.region, l.srv)
	if err != nil {
		return err
	}
	l.vpcID = built.VPCs["lab"]
	l.subnets = built.Subnets
	progress("region %s: %s with %d subnets; EC2 API %s", cfg.Region, l.vpcID, len(cfg.Subnets), l.ec2URL)
	if err := ctx.Err(); err != nil {
		return err
	}
	internet := cfg.Internet == nil || *cfg.Internet
	hostNodes := map[string]NodeConfig{}
	for _, nc := range cfg.Nodes {
		if nc.HostNamespace != "" {
			hostNodes[nc.Name] = nc
		}
	}
	l.fab, err = fabric.New(fabric.Config{Name: cfg.Name, Region: l.region, IMDS: l.srv.IMDS(), EC2: l.srv.APIHandler(), Internet: internet, Logger: l.log,
		NodeNamespace: func(i model.Instance) (fabric.NodeNamespace, bool) {
			nc, ok := hostNodes[i.Tags["vpclab:node"]]
			return fabric.NodeNamespace{Path: nc.HostNamespace, LinkPrefix: nc.LinkPrefix}, ok
		}})
	if err != nil {
		return err
	}
	progress("fabric up (VLAN datapath %s)", l.fab.Datapath())
	if cfg.Kubernetes != nil {
		if err := l.startKubernetes(ctx, specs, progress); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(specs))
	for i, s := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := l.startNode(ctx, s)
			if err != nil {
				errs[i] = fmt.Errorf("node %s: %w", s.name, err)
				return
			}
			switch {
			case l.kube != nil:
				progress("node %s: %s (%s) up: containerd, kubelet, kube-proxy", n.Name, n.Instance.ID, n.Instance.Type)
			case n.CNI().IsUpstream():
				progress("node %s: %s (%s) up, VPC CNI %s installed by its own entrypoint", n.Name, n.Instance.ID, n.Instance.Type, n.build.CNI)
			default:
				progress("node %s: %s (%s) up, ipamd serving, aws-cni installed", n.Name, n.Instance.ID, n.Instance.Type)
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := firstOf(errs); err != nil {
		return err
	}
	l.mu.Lock()
	sort.Slice(l.nodes, func(i, j int) bool { return l.nodes[i].Name < l.nodes[j].Name })
	l.mu.Unlock()
	if l.kube != nil {
		return l.installAddons(ctx, specs[0].build, progress)
	}
	return nil
}

// firstOf returns the first error, saying how many more there were: twenty
// nodes failing for one reason make one line, not twenty.
func firstOf(errs []error) error {
	var first error
	n := 0
	for _, e := range errs {
		if e != nil {
			if first == nil {
				first = e
			}
			n++
		}
	}
	if n > 1 {
		return fmt.Errorf("%w (and %d more nodes failed)", first, n-1)
	}
	return first
}

// Name returns the lab's name.
func (l *Lab) Name() string { return l.cfg.Name }

// Config returns the lab's configuration (defaults filled in).
func (l *Lab) Config() Config { return l.cfg }

// Paths returns where the lab's files are.
func (l *Lab) Paths() Paths { return l.paths }

// Region returns the fake region.
func (l *Lab) Region() *model.Region { return l.region }

// Server returns the fake EC2 server (faults, throttling, audit, IMDS).
func (l *Lab) Server() *fakeec2.Server { return l.srv }

// Fabric returns the fabric.
func (l *Lab) Fabric() *fabric.Fabric { return l.fab }

// Faults returns the EC2 fault rules.
func (l *Lab) Faults() *faults.Rules { return l.srv.Faults() }

// Events returns the CloudTrail-shaped audit records matching f, with
// vpclab's note on calls whose changes instance metadata showed late.
func (l *Lab) Events(f ec2query.EventFilter) []ec2query.Record {
	recs := l.srv.Audit().Events(f)
	control.Annotate(recs, l.srv.Audit(), l.srv.IMDS())
	return recs
}

// EC2Endpoint is the EC2 API on a host loopback address.
func (l *Lab) EC2Endpoint() string { return l.ec2URL }

// VPCID returns the VPC's id.
func (l *Lab) VPCID() string { return l.vpcID }

// SubnetID returns the id of the lab's subnet named name (lab config).
func (l *Lab) SubnetID(name string) (string, bool) {
	id, ok := l.subnets[name]
	return id, ok
}

// SecurityGroupID returns the id of the lab VPC's security group named
// name ("default" is the VPC's default group).
func (l *Lab) SecurityGroupID(name string) (string, bool) {
	for _, g := range l.region.SecurityGroups() {
		if g.VPCID == l.vpcID && g.Name == name {
			return g.ID, true
		}
	}
	return "", false
}

// Nodes returns the nodes by name.
func (l *Lab) Nodes() []*Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Node(nil), l.nodes...)
}

// Node returns the node with the given name, or nil.
func (l *Lab) Node(name string) *Node {
	for _, n := range l.Nodes() {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Ready says whether bring-up has finished.
func (l *Lab) Ready() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ready
}

// Close removes everything the lab created: processes in its namespaces
// (its own ipamds and anyone else's), pods, mounts, namespaces, kernel
// objects, the control socket and the state directory; then it gives up
// ownership. It is safe to call more than once.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	nodes := append([]*Node(nil), l.nodes...)
	stop, done := l.stopSampling, l.samplingDone
	l.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	var errs []error
	if l.ctl != nil {
		// Answers in flight (POST /down's) finish first; streams
		// (events --follow) are cut after a second.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if l.ctl.Shutdown(ctx) != nil {
			_ = l.ctl.Close()
		}
		cancel()
	}
	for _, n := range nodes {
		n.stopIpamd()
		if l.kube != nil {
			errs = append(errs, n.stopKube())
		}
	}
	if l.kube != nil {
		l.kube.stop()
	}
	// Processes first, while their namespaces can still be found.
	killInNamespaces(l.paths)
	for _, n := range nodes {
		errs = append(errs, n.stop())
	}
	errs = append(errs, l.restoreSysctls())
	if l.fab != nil {
		errs = append(errs, l.fab.Close())
	}
	if l.http != nil {
		_ = l.http.Close()
	}
	if l.srv != nil {
		_ = l.srv.Close()
	}
	errs = append(errs, removeLeftovers(l.paths))
	l.releaseCNIs()
	l.owner.release()
	return errors.Join(errs...)
}

// checkBinaries says which binary a lab needs is missing from BinDir or
// RefPluginsDir.
func (c *Config) checkBinaries() error {
	for _, b := range []string{"ipamd", "aws-cni", "aws-vpc-cni", "egress-cni"} {
		if _, err := os.Stat(filepath.Join(c.BinDir, b)); err != nil {
			return fmt.Errorf("binary %s not in %s (run make build, or set VPCLAB_BIN)", b, c.BinDir)
		}
	}
	for _, p := range plugin.RefPlugins {
		if _, err := os.Stat(filepath.Join(c.RefPluginsDir, p)); err != nil {
			return fmt.Errorf("reference CNI plugin %s not in %s (run make build, or set refPluginsDir)", p, c.RefPluginsDir)
		}
	}
	return nil
}

// world is the lab's region as a fakeec2 world: one VPC named "lab" with
// the lab's subnets, and the lab's timing, throttling and faults. Nodes are
// launched one by one (they need the fabric in between).
func (c *Config) world() *world.Config {
	w := &world.Config{Region: c.Region, Seed: c.Seed, Timing: c.Timing, Allocation: c.Allocation, Throttling: c.Throttling, Faults: c.Faults,
		VPCs: []world.VPCConfig{{Name: "lab", CIDR: c.VPCCIDR}}}
	if w.Throttling == nil {
		w.Throttling = &ec2query.ThrottleConfig{} // off unless the lab asks
	}
	for _, s := range c.Subnets {
		w.VPCs[0].Subnets = append(w.VPCs[0].Subnets, world.SubnetConfig{Name: s.Name, CIDR: s.CIDR, AZ: s.AZ, Tags: s.Tags})
	}
	return w
}
