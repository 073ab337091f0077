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
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	owned := map[netip.Addr]string{}
	usedPerSubnet := map[string]int{}
	for _, id := range r.order {
		e := r.enis[id]
		s := r.subnets[e.SubnetID]
		if s == nil {
			bad("%s: unknown subnet %s", id, e.SubnetID)
			continue
		}
		all := e.SecondaryIPs
		if e.PrivateIP.IsValid() {
			all = append([]netip.Addr{e.PrivateIP}, e.SecondaryIPs...)
		}
		for _, a := range all {
			if prev, dup := owned[a]; dup {
				bad("address %s owned by %s and %s", a, prev, id)
			}
			owned[a] = id
			if o, _ := r.owners.addr(a); o != id {
				bad("address %s on %s but owner index says %q", a, id, o)
			}
			i, in := s.pool.index(a)
			if !in {
				bad("address %s of %s outside subnet %s", a, id, s.CIDR)
				continue
			}
			if s.pool.reserved(i) {
				bad("reserved address %s handed to %s", a, id)
			}
			if !s.pool.isSet(i) {
				bad("address %s of %s not marked used in %s", a, id, s.ID)
			}
			usedPerSubnet[s.ID]++
		}
		for _, p := range e.Prefixes {
			if o, _ := r.owners.prefix(p); o != id {
				bad("prefix %s on %s but owner index says %q", p, id, o)
			}
			if p.Bits() != 28 || p.Masked() != p || !s.CIDR.Contains(p.Addr()) {
				bad("prefix %s of %s not an aligned /28 of %s", p, id, s.CIDR)
			}
			for a := range owned {
				if p.Contains(a) {
					bad("address %s of %s inside prefix %s of %s", a, owned[a], p, id)
				}
			}
			usedPerSubnet[s.ID] += 16
		}
		limit, _ := r.ipv4Limit(e)
		if e.Slots() > limit {
			bad("%s uses %d slots, limit %d", id, e.Slots(), limit)
		}
		if (e.Attachment == nil) != (e.Status == "available") {
			bad("%s status %s with attachment %v", id, e.Status, e.Attachment)
		}
		if e.Attachment != nil && r.attach[e.Attachment.ID] != id {
			bad("attachment %s of %s missing from index", e.Attachment.ID, id)
		}
		if e.Attachment != nil && e.assoc != "" {
			bad("branch %s is attached", id)
		}
	}
	if n, _ := r.owners.count(true); len(owned) != n {
		bad("owner index has %d addresses, ENIs hold %d", n, len(owned))
	}
	for p := range r.owners.prefixes {
		for q := range r.owners.prefixes {
			if p != q && p.Overlaps(q) {
				bad("prefixes %s and %s overlap", p, q)
			}
		}
	}
	for id, s := range r.subnets {
		if s.pool.free < 0 {
			bad("subnet %s has negative free count %d", id, s.pool.free)
		}
		if got := s.pool.usedCount(); got != usedPerSubnet[id] {
			bad("subnet %s accounts %d used addresses, ENIs hold %d", id, got, usedPerSubnet[id])
		}
	}
	if len(r.attach) > 0 {
		for aid, eid := range r.attach {
			if e, ok := r.enis[eid]; !ok || e.Attachment == nil || e.Attachment.ID != aid {
				bad("attachment index %s -> %s is stale", aid, eid)
			}
		}
	}
	for _, inst := range r.insts {
		it, _ := r.InstanceType(inst.Type)
		total, perCard, dev := 0, map[int]int{}, map[[2]int]string{}
		primary := false
		for _, e := range r.enis {
			a := e.Attachment
			if a == nil || a.InstanceID != inst.ID {
				continue
			}
			if inst.State == "terminated" {
				bad("terminated %s still has %s attached", inst.ID, e.ID)
			}
			total++
			perCard[a.NetworkCardIndex]++
			k := [2]int{a.NetworkCardIndex, a.DeviceIndex}
			if other, dup := dev[k]; dup {
				bad("%s: %s and %s share card %d device %d", inst.ID, other, e.ID, k[0], k[1])
			}
			dev[k] = e.ID
			primary = primary || k == [2]int{0, 0}
		}
		if it != nil {
			if total > it.MaxENIs {
				bad("%s (%s) has %d ENIs, limit %d", inst.ID, it.Name, total, it.MaxENIs)
			}
			for c, n := range perCard {
				if card, ok := it.Card(c); !ok || n > card.MaxENIs {
					bad("%s card %d has %d ENIs", inst.ID, c, n)
				}
			}
		}
		if inst.State == "running" && !primary {
			bad("running %s has no primary ENI", inst.ID)
		}
	}
	vlans := map[string]map[int]bool{}
	branches := map[string]int{}
	for id, t := range r.trunks {
		tr, ok1 := r.enis[t.TrunkID]
		br, ok2 := r.enis[t.BranchID]
		if !ok1 || !ok2 {
			bad("trunk association %s refers to a deleted ENI", id)
			continue
		}
		if tr.InterfaceType != "trunk" || br.assoc != id {
			bad("trunk association %s inconsistent", id)
		}
		if vlans[t.TrunkID] == nil {
			vlans[t.TrunkID] = map[int]bool{}
		}
		if vlans[t.TrunkID][t.VlanID] {
			bad("VLAN %d used twice on %s", t.VlanID, t.TrunkID)
		}
		vlans[t.TrunkID][t.VlanID] = true
		if tr.Attachment != nil {
			branches[tr.Attachment.InstanceID]++
		}
	}
	for iid, n := range branches {
		if it, ok := r.InstanceType(r.insts[iid].Type); ok && n > it.BranchENIs {
			bad("%s has %d branch ENIs, limit %d", iid, n, it.BranchENIs)
		}
	}
	return errors.Join(errs...)
}
