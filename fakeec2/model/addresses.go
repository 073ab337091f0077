package model

import (
	"net/netip"
	"slices"
	"time"

	"github.com/vpclab/vpclab/fakeec2/catalog"
)

// allocTx takes addresses and prefixes from one subnet and can give them all
// back, so a request that fails half-way changes nothing.
type allocTx struct {
	r        *Region
	s        *subnetState
	addrs    []netip.Addr
	prefixes []netip.Prefix
}

func (r *Region) beginAlloc(s *subnetState) *allocTx { return &allocTx{r: r, s: s} }

func (t *allocTx) addr(a netip.Addr, allowReassign bool) error {
	if err := t.r.checkExplicitAddr(t.s, a, allowReassign); err != nil {
		return err
	}
	if slices.Contains(t.addrs, a) {
		return ErrInvalid("The address %s is specified more than once.", a)
	}
	t.s.pool.takeAddr(a)
	t.addrs = append(t.addrs, a)
	return nil
}

func (t *allocTx) count(n int) error {
	if n == 0 {
		return nil
	}
	got, ok := t.s.pool.take(n, t.r.pick())
	if !ok {
		return errNoAddresses()
	}
	t.addrs = append(t.addrs, got...)
	return nil
}

func (t *allocTx) prefix(p netip.Prefix) error {
	if err := t.r.checkExplicitPrefix(t.s, p); err != nil {
		return err
	}
	if slices.Contains(t.prefixes, p) {
		return ErrInvalid("The prefix %s is specified more than once.", p)
	}
	t.s.pool.takePrefix(p)
	t.prefixes = append(t.prefixes, p)
	return nil
}

func (t *allocTx) prefixCount(n int) error {
	if n == 0 {
		return nil
	}
	got, ok := t.s.pool.takePrefixes(n, t.r.pick())
	if !ok {
		return Errorf("InsufficientCidrBlocks", "The specified subnet does not have enough free cidr blocks to satisfy the request.")
	}
	t.prefixes = append(t.prefixes, got...)
	return nil
}

func (t *allocTx) rollback() {
	for _, a := range t.addrs {
		t.s.pool.release(a, time.Time{})
	}
	for _, p := range t.prefixes {
		t.s.pool.releasePrefix(p, time.Time{})
	}
	t.addrs, t.prefixes = nil, nil
}

func errNoAddresses() *APIError {
	return Errorf("InsufficientFreeAddressesInSubnet", "The specified subnet does not have enough free addresses to satisfy the request.")
}

// checkExplicitAddr validates an address a caller asked for by name. A
// secondary address of another ENI passes only with allowReassign (the
// caller then moves it); nothing else in use ever passes.
func (r *Region) checkExplicitAddr(s *subnetState, a netip.Addr, allowReassign bool) error {
	if !a.Is4() || !s.CIDR.Contains(a) {
		return ErrInvalid("Address %s does not fall within the subnet's address range", a)
	}
	if i, _ := s.pool.index(a); s.pool.reserved(i) {
		return ErrInvalid("Address %s is in subnet's reserved address range", a)
	}
	if !s.pool.inUse(a) {
		return nil
	}
	if owner, ok := r.owners.addr(a); ok && allowReassign && r.enis[owner].PrivateIP != a {
		return nil
	}
	return Errorf("PrivateIpAddressInUse", "The specified address %s is already in use.", a)
}

func (r *Region) checkExplicitPrefix(s *subnetState, p netip.Prefix) error {
	if !p.Addr().Is4() || p.Bits() != 28 || p.Masked() != p {
		return ErrInvalid("Prefix %s is not a valid /28 IPv4 prefix", p)
	}
	if !s.CIDR.Contains(p.Addr()) || s.CIDR.Bits() > 28 {
		return ErrInvalid("Prefix %s does not fall within the subnet's address range", p)
	}
	if !s.pool.prefixFree(p) {
		return ErrInvalid("Prefix %s overlaps addresses that are reserved or in use", p)
	}
	return nil
}

// AssignPrivateIPsInput asks for secondary addresses or /28 prefixes.
type AssignPrivateIPsInput struct {
	ENIID             string
	Addrs             []netip.Addr
	Count             int
	Prefixes          []netip.Prefix
	PrefixCount       int
	AllowReassignment bool
}

// AssignPrivateIPs adds secondary IPv4 addresses or /28 prefixes to an ENI
// and returns what was assigned. Each prefix uses one of the ENI's slots.
func (r *Region) AssignPrivateIPs(in AssignPrivateIPsInput) ([]netip.Addr, []netip.Prefix, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doing("AssignPrivateIpAddresses")
	e, err := r.lookupENI(in.ENIID)
	if err != nil {
		return nil, nil, err
	}
	if err := in.check(e); err != nil {
		return nil, nil, err
	}
	limit, _ := r.ipv4Limit(e)
	if e.Slots()+len(in.Addrs)+in.Count+len(in.Prefixes)+in.PrefixCount > limit {
		return nil, nil, Errorf("PrivateIpAddressLimitExceeded", "Number of private addresses will exceed limit.")
	}
	s := r.subnets[e.SubnetID]
	// Explicit addresses: validate all before changing anything.
	var moves []netip.Addr
	for i, a := range in.Addrs {
		if err := r.checkExplicitAddr(s, a, in.AllowReassignment); err != nil {
			return nil, nil, err
		}
		if slices.Contains(in.Addrs[:i], a) {
			return nil, nil, ErrInvalid("The address %s is specified more than once.", a)
		}
		if owner, ok := r.owners.addr(a); ok {
			if owner == e.ID {
				return nil, nil, Errorf("PrivateIpAddressInUse", "The specified address %s is already assigned to %s.", a, e.ID)
			}
			moves = append(moves, a)
		}
	}
	tx := r.beginAlloc(s)
	if err := tx.assignment(in, moves); err != nil {
		tx.rollback()
		return nil, nil, err
	}
	for _, a := range moves {
		id, _ := r.owners.addr(a)
		old := r.enis[id]
		old.SecondaryIPs = slices.DeleteFunc(old.SecondaryIPs, func(x netip.Addr) bool { return x == a })
		r.markGone(old, a)
		r.emit(Change{Kind: ChangeIPsUnassigned, ENIID: old.ID, MAC: old.MAC, SubnetID: old.SubnetID, Addrs: []netip.Addr{a}})
	}
	added := append(slices.Clone(moves), tx.addrs...)
	if len(in.Addrs) > 0 {
		added = slices.Clone(in.Addrs) // keep the caller's order
	}
	lagUntil := r.opts.Now().Add(r.addressLag())
	r.owners.hold(e.ID, added, tx.prefixes)
	for _, a := range added {
		e.SecondaryIPs = append(e.SecondaryIPs, a)
		r.markSeen(e, a, lagUntil)
	}
	for _, p := range tx.prefixes {
		e.Prefixes = append(e.Prefixes, p)
		r.markSeen(e, p, lagUntil)
	}
	if len(added) > 0 {
		r.emit(Change{Kind: ChangeIPsAssigned, ENIID: e.ID, MAC: e.MAC, SubnetID: e.SubnetID, Addrs: slices.Clone(added)})
	}
	if len(tx.prefixes) > 0 {
		r.emit(Change{Kind: ChangePrefixesAssigned, ENIID: e.ID, MAC: e.MAC, SubnetID: e.SubnetID, Prefixes: slices.Clone(tx.prefixes)})
	}
	return added, slices.Clone(tx.prefixes), nil
}

// check refuses what EC2 refuses before looking at the subnet: negative
// or missing counts, forbidden combinations, addresses on EFA-only ENIs.
func (in AssignPrivateIPsInput) check(e *eniState) error {
	v4 := len(in.Addrs) > 0 || in.Count > 0
	pf := len(in.Prefixes) > 0 || in.PrefixCount > 0
	switch {
	case in.Count < 0 || in.PrefixCount < 0:
		return ErrInvalid("Address and prefix counts must be positive")
	case !v4 && !pf:
		return ErrMissing("SecondaryPrivateIpAddressCount (You must specify either the IP addresses or the IP address count)")
	case len(in.Addrs) > 0 && in.Count > 0:
		return ErrCombination("The parameters 'SecondaryPrivateIpAddressCount' and 'PrivateIpAddress' cannot be used together")
	case len(in.Prefixes) > 0 && in.PrefixCount > 0:
		return ErrCombination("The parameters 'Ipv4PrefixCount' and 'Ipv4Prefix' cannot be used together")
	case v4 && pf:
		return ErrCombination("IPv4 prefixes cannot be combined with private IPv4 addresses")
	case e.InterfaceType == "efa-only":
		return ErrInvalid("EFA-only interfaces cannot have IP addresses")
	}
	return nil
}

// assignment takes what an assignment asks for from the subnet: explicit
// addresses (but the moves, which stay with their owner until applied),
// a count, prefixes or a prefix count. The caller rolls back on error.
func (t *allocTx) assignment(in AssignPrivateIPsInput, moves []netip.Addr) error {
	for _, a := range in.Addrs {
		if !slices.Contains(moves, a) {
			if err := t.addr(a, false); err != nil {
				return err
			}
		}
	}
	if err := t.count(in.Count); err != nil {
		return err
	}
	for _, p := range in.Prefixes {
		if err := t.prefix(p); err != nil {
			return err
		}
	}
	return t.prefixCount(in.PrefixCount)
}

func (r *Region) markSeen(e *eniState, key any, at time.Time) {
	delete(e.gone, key)
	if !at.After(r.opts.Now()) {
		return
	}
	if e.seen == nil {
		e.seen = map[any]time.Time{}
	}
	e.seen[key] = at
}

// markGone keeps a removed address or prefix in e's Describe answers for
// RemovalLag.
func (r *Region) markGone(e *eniState, key any) {
	delete(e.seen, key)
	if r.opts.RemovalLag <= 0 {
		return
	}
	if e.gone == nil {
		e.gone = map[any]time.Time{}
	}
	e.gone[key] = r.opts.Now().Add(r.opts.RemovalLag)
}

// UnassignPrivateIPs removes secondary addresses and/or prefixes from an ENI.
// Nothing changes unless every one of them is on the ENI.
func (r *Region) UnassignPrivateIPs(eniID string, addrs []netip.Addr, prefixes []netip.Prefix) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doing("UnassignPrivateIpAddresses")
	e, err := r.lookupENI(eniID)
	if err != nil {
		return err
	}
	if len(addrs) == 0 && len(prefixes) == 0 {
		return ErrMissing("PrivateIpAddress")
	}
	for _, a := range addrs {
		if a == e.PrivateIP {
			return ErrInvalid("The primary private IP address %s of network interface %s cannot be unassigned.", a, e.ID)
		}
		if !slices.Contains(e.SecondaryIPs, a) {
			return ErrInvalid("Some of the specified addresses are not assigned to interface %s", e.ID)
		}
	}
	for _, p := range prefixes {
		if !slices.Contains(e.Prefixes, p) {
			return ErrInvalid("Some of the specified prefixes are not assigned to interface %s", e.ID)
		}
	}
	s := r.subnets[e.SubnetID]
	r.owners.drop(addrs, prefixes)
	now := r.opts.Now()
	for _, a := range addrs {
		s.pool.release(a, now)
		r.markGone(e, a)
	}
	for _, p := range prefixes {
		s.pool.releasePrefix(p, now)
		r.markGone(e, p)
	}
	e.SecondaryIPs = slices.DeleteFunc(e.SecondaryIPs, func(a netip.Addr) bool { return slices.Contains(addrs, a) })
	e.Prefixes = slices.DeleteFunc(e.Prefixes, func(p netip.Prefix) bool { return slices.Contains(prefixes, p) })
	if len(addrs) > 0 {
		r.emit(Change{Kind: ChangeIPsUnassigned, ENIID: e.ID, MAC: e.MAC, SubnetID: e.SubnetID, Addrs: slices.Clone(addrs)})
	}
	if len(prefixes) > 0 {
		r.emit(Change{Kind: ChangePrefixesUnassigned, ENIID: e.ID, MAC: e.MAC, SubnetID: e.SubnetID, Prefixes: slices.Clone(prefixes)})
	}
	return nil
}

// allocIPv6 picks IPv6 addresses (from the subnet's /64) and /80 prefixes.
// It changes nothing; the caller records ownership.
func (r *Region) allocIPv6(s *subnetState, addrs []netip.Addr, count int, prefixes []netip.Prefix, pcount int, e *eniState) ([]netip.Addr, []netip.Prefix, error) {
	want := len(addrs) + count + len(prefixes) + pcount
	if want == 0 {
		return nil, nil, nil
	}
	if !s.IPv6CIDR.IsValid() {
		return nil, nil, ErrInvalid("The subnet '%s' does not have an IPv6 CIDR block.", s.ID)
	}
	have := 0
	limit := catalog.MaxIPv4PerENI()
	if e != nil {
		have = len(e.IPv6) + len(e.IPv6Prefixes)
		_, limit = r.ipv4Limit(e)
	}
	if have+want > limit {
		return nil, nil, Errorf("PrivateIpAddressLimitExceeded", "Number of IPv6 addresses will exceed limit.")
	}
	var outA []netip.Addr
	var outP []netip.Prefix
	taken := func(a netip.Addr) bool { return r.owners.covered(a) || slices.Contains(outA, a) }
	for _, a := range addrs {
		if !a.Is6() || !s.IPv6CIDR.Contains(a) {
			return nil, nil, ErrInvalid("Address %s does not fall within the subnet's IPv6 range", a)
		}
		if taken(a) {
			return nil, nil, Errorf("PrivateIpAddressInUse", "The specified address %s is already in use.", a)
		}
		outA = append(outA, a)
	}
	base := s.IPv6CIDR.Addr().As16()
	how := r.pick()
	next := s.v6Next
	for range count {
		for {
			// Lowest: the next interface id. Random: any of 2^64 ids from
			// the subnet's source, so a released address practically never
			// comes back (the random policy's avoid-recent for free).
			id := next
			if how.random {
				id = s.pool.rng.Uint64()
			} else {
				next++
			}
			b := base
			for i := 0; i < 8; i++ {
				b[15-i] = byte(id >> (8 * i))
			}
			if a := netip.AddrFrom16(b); id >= 0x10 && !taken(a) {
				outA = append(outA, a)
				break
			}
		}
	}
	for _, p := range prefixes {
		if !p.Addr().Is6() || p.Bits() != 80 || !s.IPv6CIDR.Contains(p.Addr()) {
			return nil, nil, ErrInvalid("Prefix %s is not a /80 inside the subnet's IPv6 range", p)
		}
		if _, ok := r.owners.prefix(p.Masked()); ok {
			return nil, nil, Errorf("PrivateIpAddressInUse", "The specified prefix %s is already in use.", p)
		}
		outP = append(outP, p.Masked())
	}
	outP, err := r.pickV6Prefixes(s, outP, len(prefixes)+pcount, how)
	if err != nil {
		return nil, nil, err
	}
	s.v6Next = next
	return outA, outP, nil
}

// pickV6Prefixes adds /80 blocks (1..65535 of the subnet's /64) to outP
// until it holds want: lowest first, or (random) a few random tries before
// the same scan.
func (r *Region) pickV6Prefixes(s *subnetState, outP []netip.Prefix, want int, how pick) ([]netip.Prefix, error) {
	base := s.IPv6CIDR.Addr().As16()
	free := func(k uint16) (netip.Prefix, bool) {
		b := base
		b[8], b[9] = byte(k>>8), byte(k)
		p := netip.PrefixFrom(netip.AddrFrom16(b), 80)
		_, used := r.owners.prefix(p)
		return p, k != 0 && !used && !slices.Contains(outP, p) && !r.owners.anyIn(p)
	}
	for try := 0; how.random && try < 64 && len(outP) < want; try++ {
		if p, ok := free(uint16(s.pool.rng.UintN(1 << 16))); ok {
			outP = append(outP, p)
		}
	}
	for k := 1; k < 1<<16 && len(outP) < want; k++ {
		if p, ok := free(uint16(k)); ok {
			outP = append(outP, p)
		}
	}
	if len(outP) < want {
		return nil, Errorf("InsufficientCidrBlocks", "The specified subnet does not have enough free cidr blocks to satisfy the request.")
	}
	return outP, nil
}

// AssignIPv6Input asks for IPv6 addresses or /80 prefixes.
type AssignIPv6Input struct {
	ENIID       string
	Addrs       []netip.Addr
	Count       int
	Prefixes    []netip.Prefix
	PrefixCount int
}

// AssignIPv6 adds IPv6 addresses or prefixes to an ENI.
func (r *Region) AssignIPv6(in AssignIPv6Input) ([]netip.Addr, []netip.Prefix, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doing("AssignIpv6Addresses")
	e, err := r.lookupENI(in.ENIID)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case len(in.Addrs)+in.Count+len(in.Prefixes)+in.PrefixCount == 0:
		return nil, nil, ErrMissing("Ipv6AddressCount (You must specify either the IPv6 addresses or the IPv6 address count)")
	case len(in.Addrs) > 0 && in.Count > 0, len(in.Prefixes) > 0 && in.PrefixCount > 0:
		return nil, nil, ErrCombination("IPv6 addresses and an IPv6 address count cannot be used together")
	case in.Count < 0 || in.PrefixCount < 0:
		return nil, nil, ErrInvalid("Address and prefix counts must be positive")
	}
	a, p, err := r.allocIPv6(r.subnets[e.SubnetID], in.Addrs, in.Count, in.Prefixes, in.PrefixCount, e)
	if err != nil {
		return nil, nil, err
	}
	r.owners.hold(e.ID, a, p)
	e.IPv6 = append(e.IPv6, a...)
	e.IPv6Prefixes = append(e.IPv6Prefixes, p...)
	r.emit(Change{Kind: ChangeIPv6Assigned, ENIID: e.ID, MAC: e.MAC, SubnetID: e.SubnetID, Addrs: slices.Clone(a), Prefixes: slices.Clone(p)})
	return a, p, nil
}

// UnassignIPv6 removes IPv6 addresses and prefixes from an ENI.
func (r *Region) UnassignIPv6(eniID string, addrs []netip.Addr, prefixes []netip.Prefix) ([]netip.Addr, []netip.Prefix, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doing("UnassignIpv6Addresses")
	e, err := r.lookupENI(eniID)
	if err != nil {
		return nil, nil, err
	}
	if len(addrs) == 0 && len(prefixes) == 0 {
		return nil, nil, ErrMissing("Ipv6Addresses")
	}
	for _, a := range addrs {
		if !slices.Contains(e.IPv6, a) {
			return nil, nil, ErrInvalid("Some of the specified addresses are not assigned to interface %s", e.ID)
		}
	}
	for _, p := range prefixes {
		if !slices.Contains(e.IPv6Prefixes, p) {
			return nil, nil, ErrInvalid("Some of the specified prefixes are not assigned to interface %s", e.ID)
		}
	}
	r.owners.drop(addrs, prefixes)
	e.IPv6 = slices.DeleteFunc(e.IPv6, func(a netip.Addr) bool { return slices.Contains(addrs, a) })
	e.IPv6Prefixes = slices.DeleteFunc(e.IPv6Prefixes, func(p netip.Prefix) bool { return slices.Contains(prefixes, p) })
	r.emit(Change{Kind: ChangeIPv6Unassigned, ENIID: e.ID, MAC: e.MAC, SubnetID: e.SubnetID, Addrs: slices.Clone(addrs), Prefixes: slices.Clone(prefixes)})
	return slices.Clone(addrs), slices.Clone(prefixes), nil
}
