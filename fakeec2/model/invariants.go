package model

import (
	"errors"
	"fmt"
	"net/netip"
)

// CheckInvariants verifies the model's internal consistency: every address
// has exactly one owner and is inside its subnet and not reserved, subnet
// free counts are exact, no ENI exceeds its slot budget, no instance exceeds
// its ENI limits, device indexes are unique, VLAN ids are unique per trunk
// and branch counts are within limits. It returns all violations found.
func (r *Region) CheckInvariants() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := &checker{r: r, owned: map[netip.Addr]string{}, usedPerSubnet: map[string]int{}}
	for _, id := range r.order {
		c.eni(id, r.enis[id])
	}
	c.indexes()
	c.subnets()
	for _, inst := range r.insts {
		c.instance(inst)
	}
	c.trunks()
	return errors.Join(c.errs...)
}

// checker collects the violations one CheckInvariants pass finds.
type checker struct {
	r             *Region
	errs          []error
	owned         map[netip.Addr]string // address -> ENI, as the ENIs say
	usedPerSubnet map[string]int
}

func (c *checker) bad(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

// eni checks one ENI's addresses, prefixes, slots and attachment.
func (c *checker) eni(id string, e *eniState) {
	r := c.r
	s := r.subnets[e.SubnetID]
	if s == nil {
		c.bad("%s: unknown subnet %s", id, e.SubnetID)
		return
	}
	all := e.SecondaryIPs
	if e.PrivateIP.IsValid() {
		all = append([]netip.Addr{e.PrivateIP}, e.SecondaryIPs...)
	}
	for _, a := range all {
		c.address(id, s, a)
	}
	for _, p := range e.Prefixes {
		if o, _ := r.owners.prefix(p); o != id {
			c.bad("prefix %s on %s but owner index says %q", p, id, o)
		}
		if p.Bits() != 28 || p.Masked() != p || !s.CIDR.Contains(p.Addr()) {
			c.bad("prefix %s of %s not an aligned /28 of %s", p, id, s.CIDR)
		}
		for a := range c.owned {
			if p.Contains(a) {
				c.bad("address %s of %s inside prefix %s of %s", a, c.owned[a], p, id)
			}
		}
		c.usedPerSubnet[s.ID] += 16
	}
	limit, _ := r.ipv4Limit(e)
	if e.Slots() > limit {
		c.bad("%s uses %d slots, limit %d", id, e.Slots(), limit)
	}
	// available ⇔ neither an attachment nor a trunk association; an
	// associated branch is in-use without an attachment.
	if (e.Attachment == nil && e.assoc == "") != (e.Status == "available") {
		c.bad("%s status %s with attachment %v, trunk association %q", id, e.Status, e.Attachment, e.assoc)
	}
	if e.assoc != "" && e.Status != "in-use" {
		c.bad("associated branch %s is %s, not in-use", id, e.Status)
	}
	if e.Attachment != nil && r.attach[e.Attachment.ID] != id {
		c.bad("attachment %s of %s missing from index", e.Attachment.ID, id)
	}
	if e.Attachment != nil && e.assoc != "" {
		c.bad("branch %s is attached", id)
	}
}

// address checks one private IPv4 of ENI id in subnet s.
func (c *checker) address(id string, s *subnetState, a netip.Addr) {
	if prev, dup := c.owned[a]; dup {
		c.bad("address %s owned by %s and %s", a, prev, id)
	}
	c.owned[a] = id
	if o, _ := c.r.owners.addr(a); o != id {
		c.bad("address %s on %s but owner index says %q", a, id, o)
	}
	i, in := s.pool.index(a)
	if !in {
		c.bad("address %s of %s outside subnet %s", a, id, s.CIDR)
		return
	}
	if s.pool.reserved(i) {
		c.bad("reserved address %s handed to %s", a, id)
	}
	if !s.pool.isSet(i) {
		c.bad("address %s of %s not marked used in %s", a, id, s.ID)
	}
	c.usedPerSubnet[s.ID]++
}

// indexes checks the owner and attachment indexes against the ENIs.
func (c *checker) indexes() {
	r := c.r
	if n, _ := r.owners.count(true); len(c.owned) != n {
		c.bad("owner index has %d addresses, ENIs hold %d", n, len(c.owned))
	}
	for p := range r.owners.prefixes {
		for q := range r.owners.prefixes {
			if p != q && p.Overlaps(q) {
				c.bad("prefixes %s and %s overlap", p, q)
			}
		}
	}
	for aid, eid := range r.attach {
		if e, ok := r.enis[eid]; !ok || e.Attachment == nil || e.Attachment.ID != aid {
			c.bad("attachment index %s -> %s is stale", aid, eid)
		}
	}
}

// subnets checks every subnet's free-address accounting.
func (c *checker) subnets() {
	for id, s := range c.r.subnets {
		if s.pool.free < 0 {
			c.bad("subnet %s has negative free count %d", id, s.pool.free)
		}
		if got := s.pool.usedCount(); got != c.usedPerSubnet[id] {
			c.bad("subnet %s accounts %d used addresses, ENIs hold %d", id, got, c.usedPerSubnet[id])
		}
		if err := s.pool.check(); err != nil {
			c.bad("subnet %s: %v", id, err)
		}
	}
}

// instance checks an instance's ENI limits, device indexes and primary.
func (c *checker) instance(inst *Instance) {
	r := c.r
	it, _ := r.InstanceType(inst.Type)
	total, perCard, dev := 0, map[int]int{}, map[[2]int]string{}
	primary := false
	for _, e := range r.enis {
		a := e.Attachment
		if a == nil || a.InstanceID != inst.ID {
			continue
		}
		if inst.State == "terminated" {
			c.bad("terminated %s still has %s attached", inst.ID, e.ID)
		}
		total++
		perCard[a.NetworkCardIndex]++
		k := [2]int{a.NetworkCardIndex, a.DeviceIndex}
		if other, dup := dev[k]; dup {
			c.bad("%s: %s and %s share card %d device %d", inst.ID, other, e.ID, k[0], k[1])
		}
		dev[k] = e.ID
		primary = primary || k == [2]int{0, 0}
	}
	if it != nil {
		if total > it.MaxENIs {
			c.bad("%s (%s) has %d ENIs, limit %d", inst.ID, it.Name, total, it.MaxENIs)
		}
		for card, n := range perCard {
			if nc, ok := it.Card(card); !ok || n > nc.MaxENIs {
				c.bad("%s card %d has %d ENIs", inst.ID, card, n)
			}
		}
	}
	if inst.State == "running" && !primary {
		c.bad("running %s has no primary ENI", inst.ID)
	}
}

// trunks checks trunk associations: live ENIs, unique VLANs per trunk,
// branch counts within the instance type's limit.
func (c *checker) trunks() {
	r := c.r
	vlans := map[string]map[int]bool{}
	branches := map[string]int{}
	for id, t := range r.trunks {
		tr, ok1 := r.enis[t.TrunkID]
		br, ok2 := r.enis[t.BranchID]
		if !ok1 || !ok2 {
			c.bad("trunk association %s refers to a deleted ENI", id)
			continue
		}
		if tr.InterfaceType != "trunk" || br.assoc != id {
			c.bad("trunk association %s inconsistent", id)
		}
		if vlans[t.TrunkID] == nil {
			vlans[t.TrunkID] = map[int]bool{}
		}
		if vlans[t.TrunkID][t.VlanID] {
			c.bad("VLAN %d used twice on %s", t.VlanID, t.TrunkID)
		}
		vlans[t.TrunkID][t.VlanID] = true
		if tr.Attachment != nil {
			branches[tr.Attachment.InstanceID]++
		}
	}
	for iid, n := range branches {
		if it, ok := r.InstanceType(r.insts[iid].Type); ok && n > it.BranchENIs {
			c.bad("%s has %d branch ENIs, limit %d", iid, n, it.BranchENIs)
		}
	}
}
