// Package fabric makes a fakeec2 region real in the kernel. Every VPC is a
// router network namespace; every running instance is a namespace whose
// attached ENIs are veth pairs (eth<device-index> inside, carrying the ENI's
// MAC); the router delivers each private IPv4 only to the veth of the ENI
// that owns it, answers ARP for the subnet gateways, enforces source/
// destination checking, serves IMDS at 169.254.169.254 and the EC2 API at
// 169.254.169.250, and carries branch ENIs as 802.1Q-tagged frames on their
// trunk's veth. It follows the region's change feed and reconciles the
// kernel to the region's state, so it can be restarted at any time.
package fabric

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/internal/vlan"
)

// Fixed addresses every instance namespace can reach through its eth0.
const (
	// IMDSAddr is the instance metadata service.
	IMDSAddr = "169.254.169.254"
	// EC2Addr serves the EC2 Query API on port 80 (EC2Endpoint).
	EC2Addr = "169.254.169.250"
	// EC2Endpoint is the EC2 API base URL for clients inside the lab.
	EC2Endpoint = "http://" + EC2Addr
	// InternetHostAddr is the internet peer's address (outside every VPC),
	// reached through the router's NAT.
	InternetHostAddr = "203.0.113.10"
	// NATAddr is the address VPC traffic to the internet is translated to.
	NATAddr = "198.18.0.1"
	// MTU of every ENI link, as on EC2.
	MTU = 9001
)

// Region is what the fabric needs from the region: its state and changes.
// *model.Region implements it.
type Region interface {
	SubscribeWithSnapshot() (model.Snapshot, *model.Subscription)
	FeedSeq() uint64
	NetworkInterface(id string) (model.NetworkInterface, error)
	NetworkInterfaces() []model.NetworkInterface
	Instance(id string) (model.Instance, error)
	Subnets() []model.Subnet
	VPCs() []model.VPC
	TrunkAssociations() []model.TrunkAssociation
}

// IMDS serves one instance's metadata. *imds.Service implements it.
type IMDS interface {
	Handler(instanceID string) http.Handler
	// ConnContext is the http.Server ConnContext its handlers need (token
	// responses are sent with the instance's hop limit as IP TTL).
	ConnContext(ctx context.Context, c net.Conn) context.Context
}

// NodeNamespace tells the fabric to use an existing namespace for an
// instance instead of creating one (the single-node cluster case).
type NodeNamespace struct {
	// Path of the namespace, e.g. /proc/1/ns/net or /var/run/netns/x.
	Path string
	// LinkPrefix is put in front of every ENI link name ("eth0" becomes
	// LinkPrefix+"eth0") so lab links cannot clash with the host's own.
	LinkPrefix string
}

// Config configures a fabric.
type Config struct {
	// Name prefixes every kernel object of the lab: 1–8 characters of
	// [a-z0-9], starting with a letter. Namespaces are "<Name>-<id>".
	Name string
	// Region is the model to make real.
	Region Region
	// IMDS, when set, is served at IMDSAddr:80 in every VPC router, each
	// instance (by source address) seeing its own metadata.
	IMDS IMDS
	// EC2, when set, is served at EC2Addr:80 in every VPC router.
	EC2 http.Handler
	// Internet adds, per VPC, an internet host at InternetHostAddr behind
	// the router's NAT (needs iptables).
	Internet bool
	// VLAN is the trunk datapath; nil probes the kernel (vlan.Default).
	VLAN vlan.Datapath
	// NodeNamespace, when set, may return an existing namespace for an
	// instance; nil or ok=false creates "<Name>-<instance-id>".
	NodeNamespace func(model.Instance) (NodeNamespace, bool)
	// Unfiltered leaves traffic between ENIs unfiltered (no security
	// groups table), as fabrics were before groups had rules; for
	// comparisons and kernels without nf_tables.
	Unfiltered bool
	// Logger; slog.Default when nil.
	Logger *slog.Logger
}

var validName = regexp.MustCompile(`^[a-z][a-z0-9]{0,7}$`)

// Fabric is a running fabric. Its methods are safe for concurrent use.
type Fabric struct {
	cfg    Config
	log    *slog.Logger
	vlan   vlan.Datapath
	region Region
	sub    *model.Subscription
	done   chan struct{}

	mu        sync.Mutex
	cond      *sync.Cond
	processed uint64
	errs      []error // reconcile errors since the last Err call
	closed    bool

	routers  map[string]*router  // VPC id
	nodes    map[string]*node    // instance id
	enis     map[string]*eniLink // ENI id (non-branch)
	branches map[string]*branchLink
	subnets  map[string]model.Subnet
	vpcs     map[string]model.VPC
	groups   map[string]model.SecurityGroup // with their rules

	// ownMu guards the IMDS dispatch books apart from mu: a metadata
	// request never waits for the kernel work mu is held across (a node's
	// namespace, a security group render), which takes seconds on a busy
	// machine while the real ipamd's IMDS client waits 500 ms for an
	// answer's headers (three tries, then ipamd exits).
	ownMu    sync.RWMutex
	owners   map[netip.Addr]string   // private IPv4 -> instance id
	pfxOwner map[netip.Prefix]string // delegated prefix -> instance id
}

// New builds the kernel state for the region's current state and starts
// following its changes. A fabric with the same Name left behind by an
// earlier process (see Detach) is adopted and reconciled, not duplicated.
func New(cfg Config) (*Fabric, error) {
	if !validName.MatchString(cfg.Name) {
		return nil, fmt.Errorf("fabric name %q: want 1-8 characters of [a-z0-9] starting with a letter", cfg.Name)
	}
	if cfg.Region == nil {
		return nil, errors.New("fabric: Config.Region is nil")
	}
	f := &Fabric{
		cfg: cfg, log: cfg.Logger, region: cfg.Region, vlan: cfg.VLAN, done: make(chan struct{}),
		routers: map[string]*router{}, nodes: map[string]*node{}, enis: map[string]*eniLink{}, branches: map[string]*branchLink{},
		owners: map[netip.Addr]string{}, pfxOwner: map[netip.Prefix]string{}, subnets: map[string]model.Subnet{}, vpcs: map[string]model.VPC{},
		groups: map[string]model.SecurityGroup{},
	}
	f.cond = sync.NewCond(&f.mu)
	if f.log == nil {
		f.log = slog.Default()
	}
	f.log = f.log.With("fabric", cfg.Name)
	if f.vlan == nil {
		dp, err := vlan.Default()
		if err != nil {
			return nil, fmt.Errorf("fabric %s: %w", cfg.Name, err)
		}
		f.vlan = dp
	}
	snap, sub := f.region.SubscribeWithSnapshot()
	f.sub = sub
	f.mu.Lock()
	err := f.syncAll(snap)
	f.processed = snap.Seq
	f.mu.Unlock()
	if err != nil {
		sub.Close()
		f.teardown()
		return nil, fmt.Errorf("fabric %s: initial sync: %w", cfg.Name, err)
	}
	go f.loop()
	return f, nil
}

// Datapath names the VLAN datapath in use ("8021q" or "bpf").
func (f *Fabric) Datapath() string { return f.vlan.Kind() }

// Name returns the fabric's name prefix.
func (f *Fabric) Name() string { return f.cfg.Name }

// filterBatch bounds how many changes the security group tables may lag
// behind in a burst.
const filterBatch = 64

func (f *Fabric) loop() {
	defer close(f.done)
	behind := 0 // changes applied since the tables were last rendered
	for c := range f.sub.C {
		f.mu.Lock()
		if !f.closed {
			if err := f.apply(c); err != nil {
				f.log.Error("reconcile", "change", c.Kind, "eni", c.ENIID, "instance", c.InstanceID, "err", err)
				f.errs = append(f.errs, err)
			}
			behind++
			// One render for a burst: each is a kernel transaction.
			if behind >= filterBatch || f.sub.Pending() == 0 {
				if err := f.syncFilters(); err != nil {
					f.log.Error("security groups", "err", err)
					f.errs = append(f.errs, err)
				}
				behind = 0
			}
		}
		if behind == 0 || f.closed {
			// Synced means the tables too.
			f.processed = c.Seq
			f.cond.Broadcast()
		}
		f.mu.Unlock()
	}
}

// apply reconciles what one change touched; f.mu is held.
func (f *Fabric) apply(c model.Change) error {
	switch c.Kind {
	case model.ChangeInstanceRunning:
		inst, err := f.region.Instance(c.InstanceID)
		if err != nil || inst.State != "running" {
			return nil // already gone again
		}
		if err := f.ensureNode(inst); err != nil {
			return err
		}
		return f.reconcileInstanceENIs(c.InstanceID)
	case model.ChangeInstanceTerminated:
		return f.removeNode(c.InstanceID)
	case model.ChangeInstanceMetadata:
		return nil
	case model.ChangeTrunkAssociated, model.ChangeTrunkDisassociated:
		return f.reconcileBranch(c.ENIID)
	case model.ChangeGroupCreated, model.ChangeGroupRules:
		f.groups[c.SecurityGroup.ID] = *c.SecurityGroup
		return nil
	case model.ChangeGroupDeleted:
		delete(f.groups, c.SecurityGroup.ID)
		return nil
	}
	if c.ENIID == "" {
		return nil
	}
	return f.reconcileENI(c.ENIID)
}

// WaitSynced blocks until the kernel reflects every change the region had
// made when it was called, or ctx ends. It returns the reconcile errors
// seen since the previous call, if any.
func (f *Fabric) WaitSynced(ctx context.Context) error {
	target := f.region.FeedSeq()
	stop := context.AfterFunc(ctx, func() {
		f.mu.Lock()
		f.cond.Broadcast()
		f.mu.Unlock()
	})
	defer stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.processed < target && !f.closed {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("fabric %s: wait for change %d (at %d): %w", f.cfg.Name, target, f.processed, err)
		}
		f.cond.Wait()
	}
	errs := f.errs
	f.errs = nil
	return errors.Join(errs...)
}

// Close stops following the region and removes every kernel object of the
// fabric: namespaces (with their links, routes, rules, qdiscs and BPF
// programs), the links it put into adopted namespaces, and listeners.
func (f *Fabric) Close() error {
	f.stop()
	return f.teardown()
}

// Detach stops following the region and closes listeners but leaves the
// kernel state in place, for a later New with the same Name to adopt.
func (f *Fabric) Detach() {
	f.stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.routers {
		r.close()
	}
	for _, n := range f.nodes {
		n.close()
	}
}

func (f *Fabric) stop() {
	f.mu.Lock()
	already := f.closed
	f.closed = true
	f.cond.Broadcast()
	f.mu.Unlock()
	if !already {
		f.sub.Close()
		<-f.done
	}
}

func (f *Fabric) teardown() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for id, n := range f.nodes {
		if n.adopted {
			for _, l := range f.enis {
				if l.instanceID == id {
					errs = append(errs, n.delLink(l.nodeName))
				}
			}
		}
		n.close()
		if !n.adopted {
			errs = append(errs, netx.DeleteNamed(n.nsName))
		}
	}
	for _, r := range f.routers {
		r.close()
		errs = append(errs, netx.DeleteNamed(r.nsName))
		if r.inetName != "" {
			errs = append(errs, netx.DeleteNamed(r.inetName))
		}
	}
	f.nodes, f.routers, f.enis, f.branches = map[string]*node{}, map[string]*router{}, map[string]*eniLink{}, map[string]*branchLink{}
	errs = append(errs, GC(f.cfg.Name))
	return errors.Join(errs...)
}

// GC removes every namespace named "<name>-…" — what a crashed fabric of
// that name left behind, with everything inside them.
func GC(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("gc %q: not a fabric name", name)
	}
	names, err := netx.ListNamed(name + "-")
	if err != nil {
		return fmt.Errorf("gc %s: %w", name, err)
	}
	var errs []error
	for _, n := range names {
		errs = append(errs, netx.DeleteNamed(n))
	}
	return errors.Join(errs...)
}

// Err-free lookups for callers.

// NodeNamespace returns the namespace path of a running instance.
func (f *Fabric) NodeNamespace(instanceID string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[instanceID]
	if !ok {
		return "", false
	}
	return n.path, true
}

// RouterNamespace returns the namespace path of a VPC's router.
func (f *Fabric) RouterNamespace(vpcID string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.routers[vpcID]
	if !ok {
		return "", false
	}
	return netx.Path(r.nsName), true
}

// InternetNamespace returns the namespace path of a VPC's internet host.
func (f *Fabric) InternetNamespace(vpcID string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.routers[vpcID]
	if !ok || r.inetName == "" {
		return "", false
	}
	return netx.Path(r.inetName), true
}

// LinkName returns the node-side link name of an attached ENI ("eth1").
func (f *Fabric) LinkName(eniID string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.enis[eniID]
	if !ok {
		return "", false
	}
	return l.nodeName, true
}

// RouterLinkName returns the router-side link name of an attached ENI, or
// of a branch ENI's VLAN link.
func (f *Fabric) RouterLinkName(eniID string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.enis[eniID]; ok {
		return l.routerName, true
	}
	if b, ok := f.branches[eniID]; ok {
		return b.routerName, true
	}
	return "", false
}

// ownerOf maps a source address to the instance whose ENI owns it.
func (f *Fabric) ownerOf(a netip.Addr) string {
	f.ownMu.RLock()
	defer f.ownMu.RUnlock()
	if id, ok := f.owners[a]; ok {
		return id
	}
	for p, id := range f.pfxOwner {
		if p.Contains(a) {
			return id
		}
	}
	return ""
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}
