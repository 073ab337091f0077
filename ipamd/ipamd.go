// Package ipamd is the node's IPAM daemon, behaving like the AWS VPC CNI's
// ipamd: same environment variables, same warm-pool algorithm, same gRPC
// protocol (package rpc), checkpoint format, metrics and introspection. It
// reaches EC2 and IMDS only through aws-sdk-go-v2, so it runs unchanged
// against AWS or fakeec2, and it programs the node namespace it runs in.
package ipamd

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vpclab/vpclab/internal/version"
)

// Version is the version string exchanged in the ClientVersion handshake
// (internal/version.Version, empty by default like open-source VPC CNI
// builds).
var Version = version.Version

// Daemon is a running ipamd.
type Daemon struct {
	c     *Config
	log   *slog.Logger
	m     *metrics
	cloud *cloud
	ds    *DataStore
	host  *hostNetwork
	kick  chan struct{}

	instanceID   string
	instanceType string
	vpcID        string
	primaryENI   string
	primaryMAC   string
	primaryIP    netip.Addr
	subnetID     string
	az           string // the instance's availability zone
	subnetCIDR   netip.Prefix
	// groupsSorted are the primary ENI's security groups (IMDS), sorted:
	// what syncGroups compares and new ENIs get (under mu once serving).
	groupsSorted []string
	vpcCIDRs     []netip.Prefix

	maxENI            int
	typeMaxPods       int // the instance type's max pods (eni-max-pods.txt)
	maxIPsPerENI      int
	maxPrefixesPerENI int
	unmanaged         int // ENIs ipamd leaves alone (under mu once serving)
	unmanagedIDs      map[string]bool
	devices           map[int]bool // device indexes in use (managed or not)

	poolMu    sync.Mutex // serialises pool actions and reconciliation
	metricsMu sync.Mutex // serialises updateMetrics

	mu                sync.Mutex
	lastPoolAction    time.Time
	lastDecrease      time.Time
	insufficientUntil time.Time
	backoffUntil      time.Time
	backoff           time.Duration // throttling's
	errBackoff        time.Duration // other errors'
	backoffClass      string        // what backoffUntil is for: throttling or error
	lastPoolError     string
	fullInEC2         bool // EC2 had no room for an ENI; until the next reconciliation
	terminating       bool

	kube         *kubeClient // nil outside a cluster
	nodeView     nodeView    // what the node says (under mu)
	lastIAMEvent time.Time

	trunkRequested bool // the CNINode asks for one (under mu)

	// recheckVeths are restored allocations too young to judge by their
	// pod's veth at start-up (the plugin may not have created it yet);
	// Run checks them again once VethGrace has passed.
	recheckVeths []Allocation
}

// processStart is when the process started, for the start-up duration.
var processStart = time.Now()

// New initialises the node like the VPC CNI's nodeInit: instance facts
// from IMDS, limits from its table (DescribeInstanceTypes for a type not
// there), host networking, the
// attached ENIs (IMDS + one DescribeNetworkInterfaces), the checkpoint.
func New(ctx context.Context, c *Config, log *slog.Logger) (*Daemon, error) {
	d := &Daemon{c: c, log: log, m: newMetrics(Version), host: &hostNetwork{c: c}, kick: make(chan struct{}, 1), unmanagedIDs: map[string]bool{}, devices: map[int]bool{}}
	d.ds = NewDataStore(c.EnablePrefixDelegation, c.IPCooldown, func(ck Checkpoint) error { return WriteCheckpoint(c.BackingStore, ck) })
	var err error
	if d.kube, err = newKubeClient(c); err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	if c.AnnotatePodIP && d.kube == nil {
		log.Warn("ANNOTATE_POD_IP=true needs the Kubernetes API (aws-node in a cluster, KUBERNETES_SERVICE_HOST set); no annotations")
	}
	if d.kube != nil {
		d.readNode(ctx)
	}
	t0 := time.Now()
	d.m.actionInProgress.WithLabelValues("nodeInit").Inc()
	defer d.m.actionInProgress.WithLabelValues("nodeInit").Dec()
	if err := d.nodeInit(ctx); err != nil {
		d.m.ipamdErr.WithLabelValues("nodeInit").Inc()
		return nil, fmt.Errorf("ipamd init: %w", err)
	}
	d.m.nodeInit.WithLabelValues("true").Observe(time.Since(t0).Seconds())
	d.log.Info("node initialised", "instance", d.instanceID, "type", d.instanceType, "maxENI", d.maxENI, "maxIPsPerENI", d.maxIPsPerENI,
		"prefixDelegation", c.EnablePrefixDelegation, "took", time.Since(t0).String())
	return d, nil
}

func (d *Daemon) nodeInit(ctx context.Context) error {
	var err error
	if d.cloud, err = newCloud(ctx, d.c, d.m, d.log); err != nil {
		return err
	}
	if err := d.readMetadata(ctx); err != nil {
		return err
	}
	limit, perENI, err := d.cloud.instanceLimits(ctx, d.instanceType)
	if err != nil {
		return err
	}
	d.maxENI = limit
	// What the EKS AMI's eni-max-pods.txt says for the type (the VPC CNI's
	// cap without an API server): every ENI's addresses but its own, + 2.
	d.typeMaxPods = limit*(perENI-1) + 2
	if d.c.MaxENI >= 1 && d.c.MaxENI < limit {
		d.maxENI = d.c.MaxENI
	}
	d.maxIPsPerENI = perENI - 1
	if d.c.EnablePrefixDelegation {
		d.maxPrefixesPerENI = perENI - 1
		d.maxIPsPerENI = d.maxPrefixesPerENI * 16
	}
	if err := d.initCustomNetworking(ctx); err != nil {
		return err
	}
	if err := d.host.setupHost(d.primaryMAC, d.primaryIP, d.vpcCIDRs); err != nil {
		return fmt.Errorf("host network: %w", err)
	}
	if err := d.adoptENIs(ctx); err != nil {
		return err
	}
	if err := d.restoreCheckpoint(); err != nil {
		return err
	}
	// As the VPC CNI: after the managed ENIs are known, before any new one.
	if !d.c.DisableProvisioning {
		if err := d.syncGroups(ctx); err != nil {
			return err
		}
	}
	// Leftovers of the other mode go back to EC2.
	for eni, cidrs := range d.ds.inactiveFree() {
		for _, p := range cidrs {
			_ = d.ds.DelCIDR(eni, p)
		}
		if err := d.cloud.unassign(ctx, eni, cidrs); err != nil {
			d.log.Warn("release other-mode addresses", "eni", eni, "err", err)
		}
	}
	if err := d.preScaleCustom(ctx); err != nil {
		return err
	}
	d.updateMetrics()
	return nil
}

// readMetadata learns the instance, its primary ENI, subnet and VPC from
// IMDS.
func (d *Daemon) readMetadata(ctx context.Context) error {
	var err error
	md := func(p string) string {
		if err != nil {
			return ""
		}
		var v string
		v, err = d.cloud.metadata(ctx, p)
		return v
	}
	d.instanceID = md("instance-id")
	d.instanceType = md("instance-type")
	d.primaryMAC = md("mac")
	ip := md("local-ipv4")
	base := "network/interfaces/macs/" + d.primaryMAC + "/"
	d.primaryENI = md(base + "interface-id")
	d.subnetID = md(base + "subnet-id")
	d.vpcID = md(base + "vpc-id")
	d.az = md("placement/availability-zone")
	cidr := md(base + "subnet-ipv4-cidr-block")
	if err != nil {
		return err
	}
	if d.primaryIP, err = netip.ParseAddr(ip); err != nil {
		return fmt.Errorf("imds local-ipv4 %q: %w", ip, err)
	}
	if d.subnetCIDR, err = netip.ParsePrefix(cidr); err != nil {
		return fmt.Errorf("imds subnet-ipv4-cidr-block %q: %w", cidr, err)
	}
	vpc, err := d.cloud.metadataList(ctx, base+"vpc-ipv4-cidr-blocks")
	if err != nil {
		return err
	}
	for _, s := range vpc {
		if p, err := netip.ParsePrefix(s); err == nil {
			d.vpcCIDRs = append(d.vpcCIDRs, p)
		}
	}
	return nil
}

// adoptENIs puts the attached, managed ENIs into the datastore and
// configures their links. IMDS lists them; EC2 (one DescribeNetworkInterfaces
// by attachment) confirms each and what it holds: an ENI IMDS lists but
// EC2 does not have attached here is skipped, an address IMDS lists but EC2
// no longer has is left out, and every device index EC2 has in use counts
// as taken, seen by IMDS yet or not.
func (d *Daemon) adoptENIs(ctx context.Context) error {
	ienis, err := d.cloud.imdsENIs(ctx)
	if err != nil {
		return err
	}
	desc, err := d.cloud.attachedENIs(ctx, d.instanceID)
	if err != nil {
		return err
	}
	for _, n := range desc {
		if n.Attachment != nil && n.Attachment.DeviceIndex != nil {
			d.devices[int(*n.Attachment.DeviceIndex)] = true
		}
	}
	for _, e := range ienis {
		n, ok := desc[e.ID]
		if !ok && e.ID != d.primaryENI {
			d.log.Warn("IMDS lists an ENI EC2 does not have attached here; skipped", "eni", e.ID, "mac", e.MAC)
			continue
		}
		d.devices[e.Device] = true
		e = confirmed(e, held(n))
		tags := tagMap(n.TagSet)
		if e.Card != 0 {
			continue // network cards > 0 are not managed (no ENABLE_MULTI_NIC)
		}
		typ := string(n.InterfaceType)
		if !d.managedENI(e.ID, tags) || typ == "efa-only" {
			d.unmanaged++
			d.unmanagedIDs[e.ID] = true
			continue
		}
		if typ != "trunk" && !d.c.DisableProvisioning {
			if err := d.cloud.tagMissing(ctx, e.ID, tags, d.eniTags()); err != nil {
				return fmt.Errorf("tag managed ENI %s: %w", e.ID, err) // as the VPC CNI's nodeInit
			}
		}
		if err := d.addENI(ctx, e, typ == "trunk", typ == "efa", time.Time{}); err != nil {
			if e.ID == d.primaryENI {
				return err
			}
			// As the VPC CNI does: give up on this ENI for now (its link may
			// not exist yet); reconciliation adopts it later.
			d.log.Warn("skipping ENI at start-up", "eni", e.ID, "err", err)
		}
	}
	return nil
}

// eniTags are the tags every ENI ipamd manages carries.
func (d *Daemon) eniTags() map[string]string {
	return ENITags(d.instanceID, d.c.ClusterName, d.c.AdditionalENITags)
}

// managedENI says whether ipamd manages an attached ENI with these tags
// (Manages, for this node).
func (d *Daemon) managedENI(id string, tags map[string]string) bool {
	return Manages(id == d.primaryENI, tags, d.instanceID, d.c.ManageUntaggedENI)
}

// confirmed is e with only the secondary addresses and prefixes EC2 has.
func confirmed(e imdsENI, ec2 map[netip.Prefix]bool) imdsENI {
	if len(e.IPv4s) > 1 {
		keep := []netip.Addr{e.IPv4s[0]}
		for _, a := range e.IPv4s[1:] {
			if ec2[netip.PrefixFrom(a, 32)] {
				keep = append(keep, a)
			}
		}
		e.IPv4s = keep
	}
	e.Prefixes = slices.DeleteFunc(slices.Clone(e.Prefixes), func(p netip.Prefix) bool { return !ec2[p] })
	return e
}

// addENI puts one attached ENI into the datastore and sets up its link.
func (d *Daemon) addENI(ctx context.Context, e imdsENI, trunk, efa bool, created time.Time) error {
	if len(e.IPv4s) == 0 {
		return fmt.Errorf("ENI %s: IMDS lists no IPv4 address", e.ID)
	}
	de := &ENI{ID: e.ID, IsPrimary: e.ID == d.primaryENI, IsTrunk: trunk, IsEFA: efa, DeviceNumber: e.Device,
		RouteTableID: RouteTableID(e.Card, e.Device), SubnetID: e.SubnetID, mac: e.MAC, primaryIP: e.IPv4s[0], subnet: e.SubnetCIDR, createTime: created}
	if !de.IsPrimary {
		if err := d.host.setupENI(e.MAC, e.IPv4s[0], e.SubnetCIDR, de.RouteTableID, trunk); err != nil {
			return fmt.Errorf("set up %s: %w", e.ID, err)
		}
	}
	if d.c.SubnetDiscovery && !trunk && !efa {
		// As the VPC CNI: an ENI in a subnet tagged out of pod addresses
		// (kubernetes.io/role/cni=0, or tagged for another cluster) stays,
		// but no pod gets an address from it. On an error it is not
		// excluded (failing open, as upstream).
		excluded, err := d.cloud.subnetExcluded(ctx, d.vpcID, d.az, e.SubnetID, d.c.ClusterName)
		if err != nil {
			d.log.Warn("subnet exclusion check failed; the ENI is used", "eni", e.ID, "subnet", e.SubnetID, "err", err)
		}
		if excluded {
			d.log.Info("ENI in an excluded subnet: no pod addresses from it", "eni", e.ID, "subnet", e.SubnetID)
		}
		de.IsExcludedForPodIPs = excluded
	}
	if d.c.CustomNetworking && de.IsPrimary {
		// Custom networking: pods get addresses from the ENIConfig's
		// subnet only, never the primary ENI's.
		de.IsExcludedForPodIPs = true
	}
	if err := d.ds.AddENI(de); err != nil {
		return err
	}
	if trunk {
		return nil
	}
	for _, a := range e.IPv4s[1:] {
		if err := d.ds.AddCIDR(e.ID, netip.PrefixFrom(a, 32), false); err != nil {
			return err
		}
	}
	for _, p := range e.Prefixes {
		if err := d.ds.AddCIDR(e.ID, p, true); err != nil {
			return err
		}
	}
	return nil
}

// Run serves gRPC, metrics and introspection and runs the pool manager and
// the leaked-ENI sweep until ctx ends.
func (d *Daemon) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv, err := d.startServers(ctx)
	if err != nil {
		return err
	}
	defer srv.stop()
	d.m.startup.WithLabelValues("true", strconv.FormatBool(d.kube != nil), "").Observe(time.Since(processStart).Seconds())
	var wg sync.WaitGroup
	wg.Add(6)
	go func() { defer wg.Done(); d.groupLoop(ctx) }()
	go func() { defer wg.Done(); d.recheckLater(ctx) }()
	go func() { defer wg.Done(); d.nodeLoop(ctx) }()
	go func() { defer wg.Done(); d.poolLoop(ctx) }()
	go func() { defer wg.Done(); d.reconcileLoop(ctx) }()
	go func() { defer wg.Done(); d.leakLoop(ctx) }()
	d.log.Info("serving", "socket", d.c.SocketPath, "version", Version)
	<-ctx.Done()
	wg.Wait()
	return nil
}

// Terminate stops ENI and address changes (SIGTERM), as aws-node does; the
// daemon keeps serving from what it has.
func (d *Daemon) Terminate() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.terminating = true
}

// DataStore exposes the datastore (tests, introspection).
func (d *Daemon) DataStore() *DataStore { return d.ds }

// updateMetrics sets the pool gauges from the datastore.
func (d *Daemon) updateMetrics() {
	d.metricsMu.Lock() // a scrape and a pool tick may both update
	defer d.metricsMu.Unlock()
	s := d.ds.GetStats()
	enis := d.ds.ENIs()
	d.m.eniAllocated.Set(float64(len(enis)))
	d.m.totalIPs.Set(float64(s.TotalIPs))
	d.m.assignedIPs.Set(float64(s.AssignedIPs))
	d.m.totalPrefixes.Set(float64(s.TotalPrefixes))
	unmanaged := d.unmanagedCount()
	d.m.eniMax.Set(float64(d.maxENI - unmanaged))
	d.m.ipMax.Set(float64(d.maxIPsPerENI * (d.maxENI - unmanaged)))
	d.m.assignedPerENI.Reset() // a freed ENI's (or address's) series goes with it
	d.m.assignedPerCidr.Reset()
	for _, e := range enis {
		n := 0
		for _, c := range e.AvailableIPv4Cidrs {
			k := c.assignedCount()
			n += k
			d.m.assignedPerCidr.WithLabelValues(c.prefix.String()).Set(float64(k))
		}
		d.m.assignedPerENI.WithLabelValues(e.ID).Set(float64(n))
	}
}

// isCapacityError reports the EC2 errors after which the VPC CNI pauses
// scale-up (subnet out of addresses or /28 blocks).
func isCapacityError(err error) bool {
	c := errorCode(err)
	return c == "InsufficientFreeAddressesInSubnet" || c == "InsufficientCidrBlocks"
}

// isThrottle reports EC2 throttling, including the SDK giving up on it
// (retry quota exhausted).
func isThrottle(err error) bool {
	c := errorCode(err)
	return c == "RequestLimitExceeded" || c == "Throttling" || strings.Contains(err.Error(), "RequestLimitExceeded") ||
		strings.Contains(err.Error(), "retry quota exceeded")
}

// unmanagedCount is how many attached ENIs ipamd leaves alone.
func (d *Daemon) unmanagedCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.unmanaged
}
