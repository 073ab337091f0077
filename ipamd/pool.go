package ipamd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"
)

// poolLoop runs the warm-pool manager every PoolInterval, and at once when
// woken (a node change; with VPCLAB_POOL_WAKE, every ADD and DEL).
func (d *Daemon) poolLoop(ctx context.Context) {
	t := time.NewTicker(d.c.PoolInterval)
	defer t.Stop()
	d.poolTick(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.kick:
		}
		d.poolTick(ctx)
	}
}

// podWake wakes the pool manager after an ADD or DEL when
// VPCLAB_POOL_WAKE asks for it; by default, as the VPC CNI, the pool is
// evaluated on its tick only (so a burst can outrun it, as on EKS).
func (d *Daemon) podWake() {
	if d.c.PoolWake {
		d.wake()
	}
}

// wake asks the pool manager to run soon.
func (d *Daemon) wake() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// targetState is the VPC CNI's datastoreTargetState, but for cooling
// addresses, which do not count as warm.
func (d *Daemon) targetState(s Stats) (short, over int, warmDefined bool) {
	warm, minimum := d.c.WarmIPTarget, d.c.MinimumIPTarget
	warmDefined = warm != 0 || minimum != 0
	avail := s.Available()
	// Unlike the VPC CNI, a cooling address is not a warm one: it cannot
	// be handed out, so a pool whose free addresses are all cooling is
	// short (upstream's next pod fails until the cooldown ends).
	short = max(warm-(avail-s.CooldownIPs), 0)
	short = max(short, minimum-s.TotalIPs)
	over = max(avail-warm, 0)
	over = max(min(over, s.TotalIPs-minimum), 0)
	if d.c.EnablePrefixDelegation {
		short = ceilDiv(short, 16)
		needWarm := ceilDiv(s.AssignedIPs+warm, 16)
		needMin := ceilDiv(minimum, 16)
		over = max(min(s.FreePrefixes, s.TotalPrefixes-needWarm, s.TotalPrefixes-needMin), 0)
	}
	return short, over, warmDefined
}

func ceilDiv(a, b int) int {
	if a <= 0 {
		return 0
	}
	return (a + b - 1) / b
}

// tooLow is isDatastorePoolTooLow.
func (d *Daemon) tooLow(s Stats) bool {
	if m := d.maxPods(); m > 0 && s.TotalIPs >= m {
		return false
	}
	short, _, warmDefined := d.targetState(s)
	if warmDefined {
		return short > 0
	}
	target, per := d.c.WarmENITarget, d.maxIPsPerENI
	if d.c.EnablePrefixDelegation {
		target, per = d.c.WarmPrefixTarget, 16
	}
	avail := s.Available()
	return avail < per*target || (target == 0 && avail == 0)
}

// tooHigh is isDatastorePoolTooHigh.
func (d *Daemon) tooHigh(s Stats) bool {
	_, over, warmDefined := d.targetState(s)
	if warmDefined {
		return over > 0
	}
	if d.c.EnablePrefixDelegation {
		return s.FreePrefixes > d.c.WarmPrefixTarget
	}
	return false // WARM_ENI_TARGET alone never returns single addresses
}

func (d *Daemon) poolTick(ctx context.Context) {
	d.poolMu.Lock()
	defer d.poolMu.Unlock()
	d.mu.Lock()
	term := d.terminating
	wait := time.Until(d.backoffUntil)
	d.mu.Unlock()
	defer d.updateMetrics()
	if term || d.c.DisableProvisioning {
		return
	}
	if wait > 0 {
		d.mu.Lock()
		label := "api-backoff"
		if d.backoffClass == "error" {
			label = "error-backoff"
		}
		d.mu.Unlock()
		d.m.throttled.WithLabelValues(label).Inc()
		return
	}
	s := d.ds.GetStats()
	switch {
	case d.tooLow(s):
		d.m.actionInProgress.WithLabelValues("increaseDatastorePool").Inc()
		err := d.increase(ctx, s)
		d.m.actionInProgress.WithLabelValues("increaseDatastorePool").Dec()
		d.noteResult("increase", err)
	case d.tooHigh(s):
		d.mu.Lock()
		due := time.Since(d.lastDecrease) >= d.c.DecreaseInterval
		d.mu.Unlock()
		if due {
			d.m.actionInProgress.WithLabelValues("decreaseDatastorePool").Inc()
			err := d.decrease(ctx, s)
			d.m.actionInProgress.WithLabelValues("decreaseDatastorePool").Dec()
			d.noteResult("decrease", err)
		}
	}
	if d.shouldRemoveENI(d.ds.GetStats()) {
		d.noteResult("free ENI", d.tryFreeENI(ctx))
	}
}

// increase is increaseDatastorePool: fill existing ENIs first, else attach
// a new ENI when there is room.
func (d *Daemon) increase(ctx context.Context, s Stats) error {
	d.mu.Lock()
	paused := time.Now().Before(d.insufficientUntil)
	d.mu.Unlock()
	if paused {
		d.m.throttled.WithLabelValues("insufficient-capacity").Inc()
		return nil
	}
	if d.growthBlocked() {
		d.m.throttled.WithLabelValues("node-unschedulable").Inc()
		return nil
	}
	short, _, warmDefined := d.targetState(s)
	pd := d.c.EnablePrefixDelegation
	perENI := d.maxIPsPerENI
	need := perENI
	if pd {
		perENI = d.maxPrefixesPerENI
		need = max(1, d.c.WarmPrefixTarget-s.FreePrefixes)
		if warmDefined {
			need = max(1, short)
		}
	} else if warmDefined {
		need = short
	}
	for _, e := range d.ds.ENIs() {
		if e.IsTrunk || e.IsExcludedForPodIPs {
			continue
		}
		have := d.ds.cidrCount(e.ID)
		if have >= perENI {
			continue
		}
		ask := min(perENI-have, need)
		got, err := d.cloud.assign(ctx, e.ID, ask, pd)
		// As upstream: a refused batch is retried for one address (or
		// prefix), so a subnet's last addresses are used; only when even
		// one cannot be had does a capacity error pause scale-up.
		if err != nil && ask > 1 && !isThrottle(err) && errorCode(err) != "PrivateIpAddressLimitExceeded" {
			got, err = d.cloud.assign(ctx, e.ID, 1, pd)
		}
		if err != nil {
			if errorCode(err) == "PrivateIpAddressLimitExceeded" {
				return d.resyncENI(ctx, e.ID, err)
			}
			if isCapacityError(err) && d.c.SubnetDiscovery {
				// As the VPC CNI with subnet discovery: this ENI's subnet
				// is full; the next ENI, or a new one in a subnet with room,
				// may still get addresses. Scale-up pauses only when
				// creating that ENI meets the same answer.
				d.log.Warn("subnet out of addresses for this ENI; trying the next", "eni", e.ID, "err", err)
				continue
			}
			if isCapacityError(err) {
				d.pauseScaleUp(err)
			}
			return err
		}
		for _, p := range got {
			if err := d.ds.AddCIDR(e.ID, p, pd); err != nil {
				return err
			}
		}
		d.touched()
		d.log.Info("assigned to ENI", "eni", e.ID, "cidrs", len(got))
		return nil
	}
	if !d.hasRoomForENI() {
		return nil
	}
	count := perENI
	if pd {
		count = min(max(need, 1), perENI)
	} else if warmDefined {
		count = min(short, perENI)
	}
	return d.attachENI(ctx, count)
}

// resyncENI adopts what EC2 says an ENI holds after a limit error.
func (d *Daemon) resyncENI(ctx context.Context, id string, cause error) error {
	desc, err := d.cloud.describeENIs(ctx, []string{id})
	if err != nil {
		return errors.Join(cause, err)
	}
	n, ok := desc[id]
	if !ok {
		return cause
	}
	for _, a := range n.PrivateIpAddresses {
		if a.Primary != nil && *a.Primary {
			continue
		}
		if ip, err := netip.ParseAddr(*a.PrivateIpAddress); err == nil && !d.c.EnablePrefixDelegation {
			_ = d.ds.AddCIDR(id, netip.PrefixFrom(ip, 32), false)
		}
	}
	for _, p := range n.Ipv4Prefixes {
		if pf, err := netip.ParsePrefix(*p.Ipv4Prefix); err == nil && d.c.EnablePrefixDelegation {
			_ = d.ds.AddCIDR(id, pf, true)
		}
	}
	d.m.reconcile.WithLabelValues("eniDataStorePoolReconcileAdd").Inc()
	return nil
}

// hasRoomForENI: another ENI fits under the limit, less a slot kept for a
// trunk while pod ENIs are on and none is attached.
func (d *Daemon) hasRoomForENI() bool {
	return d.ds.ENICount() < d.maxENI-d.unmanagedCount()-d.trunkReserve()
}

// attachENI creates, attaches and sets up a new ENI. EC2's answer is the
// witness of what it holds (IMDS may lag it by minutes, in either
// direction); the device index is one EC2 has free (DescribeInstances, as
// the VPC CNI does), and the node's kernel shows the link before ipamd uses
// it.
func (d *Daemon) attachENI(ctx context.Context, count int) error {
	d.mu.Lock()
	used, full := maps.Clone(d.devices), d.fullInEC2
	d.mu.Unlock()
	if full {
		return nil
	}
	dev, attached, err := d.cloud.freeDeviceIndex(ctx, d.instanceID, used)
	if err != nil {
		return err
	}
	if attached >= d.maxENI-d.trunkReserve() {
		// EC2 has more attached than the datastore holds (attached by
		// someone else, or one whose set-up failed): no room, whatever
		// ipamd's count says. Reconciliation adopts what is attached; until
		// it has run, no more DescribeInstances for this.
		d.mu.Lock()
		d.fullInEC2 = true
		d.mu.Unlock()
		d.log.Warn("no room for another ENI in EC2's view; waiting for reconciliation", "attached", attached, "max", d.maxENI)
		return nil
	}
	d.mu.Lock()
	groups := d.groupsSorted // sorted, as the VPC CNI creates ENIs
	d.mu.Unlock()
	var subnets []subnetChoice
	if d.c.CustomNetworking {
		place, g, err := d.customENIPlace(ctx)
		if err != nil {
			return err
		}
		subnets, groups = []subnetChoice{place}, g
	} else if subnets, err = d.cloud.eniSubnets(ctx, d.c.SubnetDiscovery, d.vpcID, d.az, d.subnetID, d.c.ClusterName); err != nil {
		return err
	}
	spec := newENISpec{instanceID: d.instanceID, groups: groups, cluster: d.c.ClusterName, extraTags: d.c.AdditionalENITags, device: dev}
	if d.c.EnablePrefixDelegation {
		spec.prefixes = count
	} else {
		spec.ips = count
	}
	var e imdsENI
	for _, sn := range subnets { // as the VPC CNI: the next subnet when one fails
		spec.subnetID = sn.id
		if e, err = d.cloud.allocENI(ctx, spec); err == nil {
			e.SubnetCIDR = sn.cidr
			break
		}
		d.log.Warn("create ENI", "subnet", sn.id, "free", sn.free, "err", err)
	}
	if err != nil {
		if isCapacityError(err) {
			d.pauseScaleUp(err)
		}
		return err
	}
	d.mu.Lock()
	d.devices[dev] = true
	d.mu.Unlock()
	d.touched()
	if err := waitForLink(ctx, e.MAC, d.c.ENIAttachWait); err != nil {
		return fmt.Errorf("ENI %s: %w", e.ID, err)
	}
	if err := d.addENI(ctx, e, false, false, time.Now()); err != nil {
		return err
	}
	d.log.Info("attached ENI", "eni", e.ID, "device", dev, "cidrs", len(e.IPv4s)-1+len(e.Prefixes))
	return nil
}

// decrease is decreaseDatastorePool: return free addresses or prefixes.
func (d *Daemon) decrease(ctx context.Context, s Stats) error {
	_, over, warmDefined := d.targetState(s)
	if d.c.EnablePrefixDelegation && !warmDefined {
		over = s.FreePrefixes - d.c.WarmPrefixTarget
	}
	if warmDefined && !d.c.EnablePrefixDelegation {
		// Cooling addresses count as available in the VPC CNI's pool math,
		// so it may return the only usable warm address and leave pods to
		// fail until the cooldown ends; keep WARM_IP_TARGET usable ones.
		over = min(over, s.Available()-s.CooldownIPs-d.c.WarmIPTarget)
	}
	if over <= 0 {
		return nil
	}
	d.mu.Lock()
	d.lastDecrease = time.Now()
	d.mu.Unlock()
	var errs []error
	for eni, cidrs := range d.ds.freeCidrs(over) {
		var removed []netip.Prefix
		for _, p := range cidrs {
			if d.ds.DelCIDR(eni, p) == nil {
				removed = append(removed, p)
			}
		}
		if len(removed) == 0 {
			continue
		}
		if err := d.cloud.unassign(ctx, eni, removed); err != nil {
			for _, p := range removed { // keep them: EC2 still has them
				_ = d.ds.AddCIDR(eni, p, d.c.EnablePrefixDelegation)
			}
			errs = append(errs, err)
			continue
		}
		d.touched()
		d.m.reconcile.WithLabelValues("eniIPPoolReconcileDel").Add(float64(len(removed)))
		d.log.Info("released to EC2", "eni", eni, "cidrs", len(removed))
	}
	return errors.Join(errs...)
}

// shouldRemoveENI is shouldRemoveExtraENIs: with prefix delegation, when
// the available addresses do not say so, an ENI without pods may still be
// freeable (the prefixes over the warm target went back to EC2 and left it
// empty); removableENI then decides, keeping what WARM_PREFIX_TARGET needs.
func (d *Daemon) shouldRemoveENI(s Stats) bool {
	if _, _, warmDefined := d.targetState(s); warmDefined {
		return true
	}
	if d.c.EnablePrefixDelegation {
		return s.Available() >= (d.c.WarmPrefixTarget+1)*d.maxIPsPerENI || d.ds.freeableENIExists()
	}
	return s.Available() >= (d.c.WarmENITarget+1)*d.maxIPsPerENI
}

// tryFreeENI frees at most one ENI the targets do not need.
func (d *Daemon) tryFreeENI(ctx context.Context) error {
	warm, minimum, warmPrefixes := d.c.WarmIPTarget, d.c.MinimumIPTarget, 0
	if d.c.EnablePrefixDelegation {
		warm, minimum, warmPrefixes = ceilDiv(warm, 16)*16, ceilDiv(minimum, 16)*16, d.c.WarmPrefixTarget
	}
	e := d.ds.removableENI(d.c.MinENILifetime, warm, minimum, warmPrefixes)
	if e == nil {
		return nil
	}
	if err := d.ds.DelENI(e.ID); err != nil {
		return nil // a pod took an address meanwhile
	}
	if err := d.host.teardownENI(e.primaryIP); err != nil {
		d.log.Warn("remove ENI rules", "eni", e.ID, "err", err)
	}
	d.touched()
	if err := d.cloud.freeENI(ctx, e.ID, 2*time.Minute); err != nil {
		return err
	}
	d.mu.Lock()
	delete(d.devices, e.DeviceNumber)
	d.mu.Unlock()
	d.m.reconcile.WithLabelValues("eniReconcileDel").Inc()
	d.log.Info("freed ENI", "eni", e.ID)
	return nil
}

// leakLoop deletes detached ENIs some node's ipamd created that outlived
// the grace period (what a crash between create and attach leaves behind,
// or a node terminated before it could detach and delete them).
func (d *Daemon) leakLoop(ctx context.Context) {
	if d.c.DisableLeakedENIClean || d.c.DisableProvisioning {
		return
	}
	sweep := func() {
		if err := d.cleanLeaked(ctx); err != nil {
			d.log.Warn("leaked ENI sweep", "err", err)
		}
	}
	// As the VPC CNI: a first sweep soon after start, at a random moment
	// (up to 5 min, or the interval when that is shorter, so a fleet
	// started together does not sweep together), then every interval.
	first := time.Duration(rand.Int64N(int64(min(d.c.LeakedENIStartDelay, d.c.LeakedENIInterval)) + 1))
	d.log.Info("leaked ENI sweep scheduled", "first", first.String(), "every", d.c.LeakedENIInterval.String())
	select {
	case <-ctx.Done():
		return
	case <-time.After(first):
	}
	sweep()
	every(ctx, d.c.LeakedENIInterval, sweep)
}

// every runs fn every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}

func (d *Daemon) cleanLeaked(ctx context.Context) error {
	enis, err := d.cloud.leakedENIs(ctx, d.vpcID, d.c.ClusterName)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range enis {
		id := *n.NetworkInterfaceId
		if d.ds.HasENI(id) || slices.Contains([]string{d.primaryENI}, id) {
			continue
		}
		created, err := time.Parse(time.RFC3339, tagMap(n.TagSet)[TagCreatedAt])
		if err != nil {
			errs = append(errs, d.cloud.tagCreatedAt(ctx, id))
			continue
		}
		if time.Since(created) < d.c.LeakedENIGrace {
			continue
		}
		if err := d.cloud.deleteENI(ctx, id); err != nil {
			d.cloud.utilsErr("cleanUpLeakedENIDeleteErr", err)
			errs = append(errs, err)
			continue
		}
		d.log.Info("deleted leaked ENI", "eni", id)
	}
	return errors.Join(errs...)
}

// reconcileLoop compares the datastore with IMDS every ReconcileInterval
// (nodeIPPoolReconcile): addresses and ENIs EC2 added are adopted, those it
// removed are dropped (force-removed if a pod still held them).
func (d *Daemon) reconcileLoop(ctx context.Context) {
	every(ctx, d.c.ReconcileInterval, func() {
		d.m.actionInProgress.WithLabelValues("nodeIPPoolReconcile").Inc()
		err := d.reconcile(ctx)
		d.m.actionInProgress.WithLabelValues("nodeIPPoolReconcile").Dec()
		if err != nil {
			d.m.ipamdErr.WithLabelValues("nodeIPPoolReconcile").Inc()
			d.log.Warn("reconcile with IMDS", "err", err)
		}
		d.updateMetrics()
	})
}

func (d *Daemon) reconcile(ctx context.Context) error {
	d.poolMu.Lock()
	defer d.poolMu.Unlock()
	d.mu.Lock()
	recent := time.Since(d.lastPoolAction) < d.c.ReconcileInterval
	d.mu.Unlock()
	// As aws-node: a node waiting for its trunk reconciles anyway.
	if recent && !d.awaitingTrunk() {
		return nil // IMDS may not show the pool's own recent changes yet
	}
	ienis, err := d.cloud.imdsENIs(ctx)
	if err != nil {
		return err
	}
	w := &witness{ctx: ctx, d: d}
	seen := map[string]bool{}
	for _, e := range ienis {
		seen[e.ID] = true
		if e.Card != 0 || d.unmanagedIDs[e.ID] {
			continue
		}
		if !d.ds.HasENI(e.ID) {
			if err := d.reconcileNewENI(ctx, w, e); err != nil {
				return err
			}
			continue
		}
		if err := d.reconcileAddresses(w, e); err != nil {
			return err
		}
	}
	for _, de := range d.ds.ENIs() {
		if seen[de.ID] {
			continue
		}
		// IMDS no longer lists it: EC2 says whether it is really gone.
		view, err := w.view()
		if err != nil {
			return err
		}
		if _, ok := view[de.ID]; ok {
			d.log.Warn("reconcile: IMDS does not list an ENI EC2 has attached; kept", "eni", de.ID)
			continue
		}
		if n := d.ds.forceDelENI(de.ID); n > 0 {
			d.m.forceRemovedENIs.Inc()
			d.m.forceRemovedIPs.Add(float64(n))
		}
		d.m.reconcile.WithLabelValues("eniReconcileDel").Inc()
		d.log.Warn("reconcile: ENI gone from IMDS and EC2", "eni", de.ID)
	}
	d.mu.Lock()
	d.fullInEC2 = false // the pool may ask EC2 for room again
	d.mu.Unlock()
	return nil
}

// witness is EC2's view of the node's ENIs, asked for at most once per
// reconciliation and only when IMDS and the datastore disagree: IMDS lags
// EC2, in any direction, so it is never the only witness of a change.
type witness struct {
	ctx  context.Context
	d    *Daemon
	enis ec2ENIs
}

func (w *witness) view() (ec2ENIs, error) {
	if w.enis != nil {
		return w.enis, nil
	}
	v, err := w.d.cloud.attachedENIs(w.ctx, w.d.instanceID)
	if err != nil {
		return nil, fmt.Errorf("reconcile: IMDS and the datastore disagree and EC2 did not answer: %w", err)
	}
	w.enis = v
	return v, nil
}

// reconcileNewENI adopts an ENI IMDS shows and the datastore lacks, unless
// ipamd must leave it alone (managedENI) or it is EFA-only.
func (d *Daemon) reconcileNewENI(ctx context.Context, w *witness, e imdsENI) error {
	view, err := w.view()
	if err != nil {
		return err
	}
	n, ok := view[e.ID]
	if !ok {
		d.log.Warn("reconcile: IMDS lists an ENI EC2 does not have attached here; skipped", "eni", e.ID)
		return nil
	}
	e = confirmed(e, held(n))
	if !d.managedENI(e.ID, tagMap(n.TagSet)) || n.InterfaceType == "efa-only" {
		d.mu.Lock()
		d.unmanagedIDs[e.ID] = true
		d.unmanaged++
		d.mu.Unlock()
		return nil
	}
	if n.InterfaceType != "trunk" && !d.c.DisableProvisioning {
		if err := d.cloud.tagMissing(ctx, e.ID, tagMap(n.TagSet), d.eniTags()); err != nil {
			return fmt.Errorf("tag managed ENI %s: %w", e.ID, err) // adopted at the next reconciliation
		}
	}
	if err := d.addENI(ctx, e, n.InterfaceType == "trunk", n.InterfaceType == "efa", time.Now()); err != nil {
		return err
	}
	d.mu.Lock()
	d.devices[e.Device] = true
	d.mu.Unlock()
	d.m.reconcile.WithLabelValues("eniReconcileAdd").Inc()
	d.log.Info("reconcile: adopted ENI", "eni", e.ID)
	return nil
}

// reconcileAddresses makes the datastore's addresses on a known ENI those
// IMDS shows, where EC2 agrees: an address IMDS no longer lists is removed
// (even if assigned) only if EC2 no longer has it on the ENI; a new one is
// added only if EC2 has it.
func (d *Daemon) reconcileAddresses(w *witness, e imdsENI) error {
	want := map[netip.Prefix]bool{}
	if len(e.IPv4s) > 1 {
		for _, a := range e.IPv4s[1:] {
			want[netip.PrefixFrom(a, 32)] = true
		}
	}
	for _, p := range e.Prefixes {
		want[p] = true
	}
	var have []netip.Prefix
	for _, de := range d.ds.ENIs() {
		if de.ID != e.ID {
			continue
		}
		for _, c := range de.AvailableIPv4Cidrs {
			have = append(have, c.prefix)
			if !want[c.prefix] {
				view, err := w.view()
				if err != nil {
					return err
				}
				if n, ok := view[e.ID]; ok && held(n)[c.prefix] {
					d.log.Warn("reconcile: IMDS does not list an address EC2 has on the ENI; kept", "eni", e.ID, "cidr", c.prefix.String())
					continue
				}
				if c.assignedCount() > 0 {
					d.m.forceRemovedIPs.Add(float64(c.assignedCount()))
				}
				d.ds.forceDelCIDR(e.ID, c.prefix)
				d.m.reconcile.WithLabelValues("eniIPPoolReconcileDel").Inc()
				d.log.Warn("reconcile: address gone from IMDS", "eni", e.ID, "cidr", c.prefix.String())
			}
		}
	}
	for p := range want {
		if slices.Contains(have, p) {
			continue
		}
		view, err := w.view()
		if err != nil {
			return err
		}
		if n, ok := view[e.ID]; !ok || !held(n)[p] {
			d.log.Warn("reconcile: IMDS lists an address EC2 does not have on the ENI; skipped", "eni", e.ID, "cidr", p.String())
			continue
		}
		_ = d.ds.AddCIDR(e.ID, p, p.Bits() != 32)
		d.m.reconcile.WithLabelValues("eniDataStorePoolReconcileAdd").Inc()
	}
	return nil
}
