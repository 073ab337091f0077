package model

import "net/netip"

// owners indexes which ENI holds each private address and prefix, IPv4
// and IPv6: the region's one answer to "is this taken, and by whom". The
// family of an address or prefix picks its index.
type owners struct {
	addrs    map[netip.Addr]string
	prefixes map[netip.Prefix]string
}

func newOwners() owners {
	return owners{addrs: map[netip.Addr]string{}, prefixes: map[netip.Prefix]string{}}
}

// hold records eni as the holder of addrs and prefixes.
func (o owners) hold(eni string, addrs []netip.Addr, prefixes []netip.Prefix) {
	for _, a := range addrs {
		if a.IsValid() {
			o.addrs[a] = eni
		}
	}
	for _, p := range prefixes {
		o.prefixes[p] = eni
	}
}

// drop forgets addrs and prefixes.
func (o owners) drop(addrs []netip.Addr, prefixes []netip.Prefix) {
	for _, a := range addrs {
		delete(o.addrs, a)
	}
	for _, p := range prefixes {
		delete(o.prefixes, p)
	}
}

// holdENI and dropENI record or forget everything an ENI holds.
func (o owners) holdENI(e *NetworkInterface) {
	o.hold(e.ID, append([]netip.Addr{e.PrivateIP}, e.SecondaryIPs...), e.Prefixes)
	o.hold(e.ID, e.IPv6, e.IPv6Prefixes)
}

func (o owners) dropENI(e *NetworkInterface) {
	o.drop(append([]netip.Addr{e.PrivateIP}, e.SecondaryIPs...), e.Prefixes)
	o.drop(e.IPv6, e.IPv6Prefixes)
}

// addr returns the holder of a.
func (o owners) addr(a netip.Addr) (string, bool) {
	id, ok := o.addrs[a]
	return id, ok
}

// prefix returns the holder of p.
func (o owners) prefix(p netip.Prefix) (string, bool) {
	id, ok := o.prefixes[p]
	return id, ok
}

// covered says whether a is held, alone or inside a held prefix of its
// family (IPv6 /80s are not pooled like IPv4, so this is how they are
// checked).
func (o owners) covered(a netip.Addr) bool {
	if _, ok := o.addrs[a]; ok {
		return true
	}
	for p := range o.prefixes {
		if p.Addr().Is4() == a.Is4() && p.Contains(a) {
			return true
		}
	}
	return false
}

// anyIn says whether a held address lies inside p.
func (o owners) anyIn(p netip.Prefix) bool {
	for a := range o.addrs {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// count is how many addresses and prefixes of one family are held.
func (o owners) count(v4 bool) (addrs, prefixes int) {
	for a := range o.addrs {
		if a.Is4() == v4 {
			addrs++
		}
	}
	for p := range o.prefixes {
		if p.Addr().Is4() == v4 {
			prefixes++
		}
	}
	return addrs, prefixes
}

// InstanceAt returns the instance an ENI holding private address a is
// attached to.
func (r *Region) InstanceAt(a netip.Addr) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id, ok := r.owners.addr(a)
	if !ok {
		return "", false
	}
	e := r.enis[id]
	if e == nil || e.Attachment == nil {
		return "", false
	}
	return e.Attachment.InstanceID, true
}
