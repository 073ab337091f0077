package fabric

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/internal/vlan"
)

// branchLink is a branch ENI made real: a VLAN link on the router side of
// its trunk's veth, so the VPC reaches the branch with tagged frames.
type branchLink struct {
	id         string
	trunkID    string
	vid        int
	routerName string
	sdc        *bool
	addrs      []netip.Addr
	groups     []string
}

// branchLinkName names the router-side VLAN link of a branch; the trunk's
// id tail keeps equal VLAN ids on different trunks apart.
func branchLinkName(trunkID string, vid int) string {
	tail := routerLinkName(trunkID)[1:]
	return fmt.Sprintf("b%s.%d", tail[len(tail)-8:], vid)
}

func (f *Fabric) association(branchID string) (model.TrunkAssociation, bool) {
	for _, t := range f.region.TrunkAssociations() {
		if t.BranchID == branchID {
			return t, true
		}
	}
	return model.TrunkAssociation{}, false
}

// reconcileBranchesOf reconciles every branch associated with a trunk.
func (f *Fabric) reconcileBranchesOf(trunkID string) error {
	for _, t := range f.region.TrunkAssociations() {
		if t.TrunkID == trunkID {
			if err := f.reconcileBranch(t.BranchID); err != nil {
				return err
			}
		}
	}
	return nil
}

// reconcileBranch makes one branch ENI's VLAN path match the region; f.mu
// is held.
func (f *Fabric) reconcileBranch(id string) error {
	e, err := f.region.NetworkInterface(id)
	assoc, associated := f.association(id)
	var trunk *eniLink
	if err == nil && associated {
		trunk = f.enis[assoc.TrunkID]
	}
	b, have := f.branches[id]
	if have && (trunk == nil || b.trunkID != assoc.TrunkID || b.vid != assoc.VlanID) {
		if err := f.removeBranch(b); err != nil {
			return err
		}
		have = false
	}
	if trunk == nil {
		return nil
	}
	r, ok := f.routers[trunk.vpcID]
	if !ok {
		return fmt.Errorf("branch %s: no router for %s", id, trunk.vpcID)
	}
	if s, err := f.subnet(e.SubnetID); err == nil {
		if err := f.ensureGateway(r, s); err != nil {
			return err
		}
	}
	if !have {
		b = &branchLink{id: id, trunkID: assoc.TrunkID, vid: assoc.VlanID, routerName: branchLinkName(assoc.TrunkID, assoc.VlanID)}
		parent, err := r.h.LinkByName(trunk.routerName)
		if err != nil {
			return fmt.Errorf("branch %s: trunk link: %w", id, err)
		}
		if old, err := r.h.LinkByName(b.routerName); err == nil {
			_ = f.vlan.Del(r.h, parent, old.Attrs().Name, b.vid)
		}
		if _, err := f.vlan.Add(r.h, parent, vlan.Link{Name: b.routerName, VID: b.vid, MTU: MTU, Tag: f.cfg.Name}); err != nil {
			return fmt.Errorf("branch %s (vlan %d on %s): %w", id, b.vid, trunk.routerName, err)
		}
		for _, kv := range [][2]string{{"net/ipv4/conf/" + b.routerName + "/proxy_arp", "1"}, {"net/ipv4/neigh/" + b.routerName + "/proxy_delay", "0"}} {
			if err := netx.Sysctl(r.ns, kv[0], kv[1]); err != nil {
				return fmt.Errorf("branch %s: %w", id, err)
			}
		}
		f.branches[id] = b
		f.log.Debug("branch up", "eni", id, "trunk", assoc.TrunkID, "vlan", b.vid, "link", b.routerName)
	}
	link, err := r.h.LinkByName(b.routerName)
	if err != nil {
		return fmt.Errorf("branch %s: %w", id, err)
	}
	addrs := slices.Clone(e.SecondaryIPs)
	if e.PrivateIP.IsValid() {
		addrs = append([]netip.Addr{e.PrivateIP}, addrs...)
	}
	if err := syncDelivery(r.h, link, e.MAC, addrs, e.Prefixes); err != nil {
		return fmt.Errorf("branch %s: %w", id, err)
	}
	if b.sdc == nil || *b.sdc != e.SourceDestCheck {
		if err := f.setSourceDestCheck(r.ns, b.routerName, e.SourceDestCheck); err != nil {
			return fmt.Errorf("branch %s: %w", id, err)
		}
		v := e.SourceDestCheck
		b.sdc = &v
	}
	f.setOwner(b.addrs, nil, "")
	b.addrs, b.groups = addrs, slices.Clone(e.SecurityGroups)
	f.setOwner(b.addrs, nil, trunk.instanceID)
	return nil
}

func (f *Fabric) removeBranch(b *branchLink) error {
	delete(f.branches, b.id)
	f.setOwner(b.addrs, nil, "")
	trunk, ok := f.enis[b.trunkID]
	if !ok {
		return nil // the trunk's link, and the branch link on it, are gone
	}
	r, ok := f.routers[trunk.vpcID]
	if !ok || r.h.Handle == nil {
		return nil
	}
	parent, err := r.h.LinkByName(trunk.routerName)
	if err != nil {
		return nil
	}
	if err := f.vlan.Del(r.h, parent, b.routerName, b.vid); err != nil {
		return fmt.Errorf("branch %s: %w", b.id, err)
	}
	return nil
}
