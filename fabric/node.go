package fabric

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/netx"
)

// node is one instance's namespace.
type node struct {
	id         string
	vpcID      string
	nsName     string // "" when adopted
	path       string
	adopted    bool
	linkPrefix string
	ns         ns.NetNS
	h          netlinksafe.Handle
}

func (n *node) close() {
	if n.h.Handle != nil {
		n.h.Close()
		n.h = netlinksafe.Handle{}
	}
	if n.ns != nil {
		_ = n.ns.Close()
	}
}

func (n *node) delLink(name string) error {
	if n.h.Handle == nil {
		return nil
	}
	l, err := n.h.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("node %s: %w", n.id, err)
	}
	if err := n.h.LinkDel(l); err != nil {
		return fmt.Errorf("node %s: delete %s: %w", n.id, name, err)
	}
	return nil
}

// eniLink is an attached ENI made real: a veth pair between the router
// and the instance.
type eniLink struct {
	id         string
	instanceID string
	vpcID      string
	mac        string
	device     int
	card       int
	routerName string
	nodeName   string
	sdc        *bool // the source/destination check as last applied
	addrs      []netip.Addr
	prefixes   []netip.Prefix
	groups     []string
}

// routerLinkName names an ENI's router-side link after its id's tail.
func routerLinkName(eniID string) string {
	hex := strings.TrimPrefix(eniID, "eni-")
	if len(hex) > 13 {
		hex = hex[len(hex)-13:]
	}
	return "e" + hex
}

func nodeLinkName(prefix string, card, device int) string {
	if card == 0 {
		return fmt.Sprintf("%seth%d", prefix, device)
	}
	return fmt.Sprintf("%sc%deth%d", prefix, card, device)
}

// ensureNode creates (or adopts) a running instance's namespace; f.mu is held.
func (f *Fabric) ensureNode(inst model.Instance) error {
	if _, ok := f.nodes[inst.ID]; ok {
		return nil
	}
	if _, err := f.ensureRouter(inst.VPCID); err != nil {
		return fmt.Errorf("instance %s: %w", inst.ID, err)
	}
	n := &node{id: inst.ID, vpcID: inst.VPCID}
	var err error
	if f.cfg.NodeNamespace != nil {
		if nn, ok := f.cfg.NodeNamespace(inst); ok {
			n.adopted, n.path, n.linkPrefix = true, nn.Path, nn.LinkPrefix
			if n.ns, err = netx.Open(nn.Path); err != nil {
				return fmt.Errorf("instance %s: %w", inst.ID, err)
			}
		}
	}
	if !n.adopted {
		n.nsName = f.cfg.Name + "-" + inst.ID
		n.path = netx.Path(n.nsName)
		if n.ns, _, err = openOrCreate(n.nsName); err != nil {
			return fmt.Errorf("instance %s: %w", inst.ID, err)
		}
		// Node OS defaults of an EKS AMI: the node forwards for its pods.
		if err := netx.Sysctl(n.ns, "net.ipv4.ip_forward", "1"); err != nil {
			n.close()
			return fmt.Errorf("instance %s: %w", inst.ID, err)
		}
	}
	if n.h, err = netx.Handle(n.ns); err != nil {
		n.close()
		return fmt.Errorf("instance %s: netlink: %w", inst.ID, err)
	}
	f.nodes[inst.ID] = n
	f.log.Debug("node up", "instance", inst.ID, "netns", n.path)
	return nil
}

// removeNode deletes a terminated instance's namespace (or, when adopted,
// its ENI links); f.mu is held.
func (f *Fabric) removeNode(id string) error {
	n, ok := f.nodes[id]
	if !ok {
		return nil
	}
	var errs []error
	for eid, l := range f.enis {
		if l.instanceID != id {
			continue
		}
		if n.adopted {
			errs = append(errs, n.delLink(l.nodeName))
		}
		f.forgetENI(eid)
	}
	n.close()
	if !n.adopted {
		errs = append(errs, netx.DeleteNamed(n.nsName))
	}
	delete(f.nodes, id)
	return errors.Join(errs...)
}

// forgetENI drops an ENI's link (and its branches) from the books.
func (f *Fabric) forgetENI(id string) {
	l, ok := f.enis[id]
	if !ok {
		return
	}
	f.setOwner(l.addrs, l.prefixes, "")
	delete(f.enis, id)
	for bid, b := range f.branches {
		if b.trunkID == id {
			f.setOwner(b.addrs, nil, "")
			delete(f.branches, bid)
		}
	}
}

func (f *Fabric) setOwner(addrs []netip.Addr, prefixes []netip.Prefix, inst string) {
	f.ownMu.Lock()
	defer f.ownMu.Unlock()
	for _, a := range addrs {
		if inst == "" {
			delete(f.owners, a)
		} else {
			f.owners[a] = inst
		}
	}
	for _, p := range prefixes {
		if inst == "" {
			delete(f.pfxOwner, p)
		} else {
			f.pfxOwner[p] = inst
		}
	}
}

// reconcileInstanceENIs reconciles every ENI attached to an instance.
func (f *Fabric) reconcileInstanceENIs(instanceID string) error {
	var errs []error
	for _, e := range f.attachedTo(instanceID) {
		errs = append(errs, f.reconcileENI(e))
	}
	return errors.Join(errs...)
}

func (f *Fabric) attachedTo(instanceID string) []string {
	var ids []string
	for _, e := range f.region.NetworkInterfaces() {
		if e.Attachment != nil && e.Attachment.InstanceID == instanceID {
			ids = append(ids, e.ID)
		}
	}
	return ids
}

// wantLink reports whether an ENI should have a link: attached (or still
// detaching) to an instance the fabric runs.
func (f *Fabric) wantLink(e model.NetworkInterface) (*node, bool) {
	if e.InterfaceType == "branch" || e.Attachment == nil {
		return nil, false
	}
	if s := e.Attachment.Status; s != "attached" && s != "detaching" {
		return nil, false
	}
	n, ok := f.nodes[e.Attachment.InstanceID]
	return n, ok
}

// reconcileENI makes one ENI's kernel state match the region; f.mu is held.
func (f *Fabric) reconcileENI(id string) error {
	e, err := f.region.NetworkInterface(id)
	if err != nil {
		if _, isBranch := f.branches[id]; isBranch {
			return f.reconcileBranch(id)
		}
		return f.removeENI(id)
	}
	if e.InterfaceType == "branch" {
		return f.reconcileBranch(id)
	}
	n, want := f.wantLink(e)
	l, have := f.enis[id]
	if have && (!want || l.instanceID != n.id || l.device != e.Attachment.DeviceIndex || l.card != e.Attachment.NetworkCardIndex) {
		if err := f.removeENI(id); err != nil {
			return err
		}
		have = false
	}
	if !want {
		return nil
	}
	r, err := f.ensureRouter(e.VPCID)
	if err != nil {
		return fmt.Errorf("eni %s: %w", id, err)
	}
	s, err := f.subnet(e.SubnetID)
	if err != nil {
		return fmt.Errorf("eni %s: %w", id, err)
	}
	if err := f.ensureGateway(r, s); err != nil {
		return err
	}
	if !have {
		if l, err = f.createLink(r, n, e, s); err != nil {
			return err
		}
		f.enis[id] = l
	}
	return f.syncENI(r, l, e)
}

// createLink makes the veth pair of an attached ENI, created in place (the
// peer born inside the instance namespace, which is far cheaper than moving
// it), and configures the primary ENI like EC2's DHCP would.
func (f *Fabric) createLink(r *router, n *node, e model.NetworkInterface, s model.Subnet) (*eniLink, error) {
	a := e.Attachment
	l := &eniLink{id: e.ID, instanceID: n.id, vpcID: e.VPCID, mac: e.MAC, device: a.DeviceIndex, card: a.NetworkCardIndex,
		routerName: routerLinkName(e.ID), nodeName: nodeLinkName(n.linkPrefix, a.NetworkCardIndex, a.DeviceIndex)}
	mac, err := net.ParseMAC(e.MAC)
	if err != nil {
		return nil, fmt.Errorf("eni %s: mac %q: %w", e.ID, e.MAC, err)
	}
	fail := func(step string, err error) (*eniLink, error) {
		if rl, lerr := r.h.LinkByName(l.routerName); lerr == nil {
			_ = r.h.LinkDel(rl)
		}
		return nil, fmt.Errorf("attach %s to %s (%s): %s: %w", e.ID, n.id, l.nodeName, step, err)
	}
	// Adopt a pair left by an earlier fabric when its node side is right.
	rl, rerr := r.h.LinkByName(l.routerName)
	nl, nerr := n.h.LinkByName(l.nodeName)
	if rerr == nil && (nerr != nil || nl.Attrs().HardwareAddr.String() != e.MAC) {
		_ = r.h.LinkDel(rl)
		rerr = netlink.LinkNotFoundError{}
	}
	if rerr != nil {
		if nerr == nil {
			return fail("node link name taken", fmt.Errorf("%s already exists", l.nodeName))
		}
		// One netlink call through the router's handle, born in place with
		// the ENI's MAC: pkg/ip's SetupVeth would need a thread switch into
		// the node per ENI, and the fabric never enters namespaces.
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: l.routerName, MTU: MTU}, PeerName: l.nodeName,
			PeerHardwareAddr: mac, PeerNamespace: netlink.NsFd(int(n.ns.Fd()))}
		if err := r.h.LinkAdd(veth); err != nil {
			return fail("create veth", err)
		}
		if rl, err = r.h.LinkByName(l.routerName); err != nil {
			return fail("router link", err)
		}
		if nl, err = n.h.LinkByName(l.nodeName); err != nil {
			return fail("node link", err)
		}
	}
	if err := r.h.LinkSetUp(rl); err != nil {
		return fail("router link up", err)
	}
	for _, kv := range [][2]string{{"proxy_arp", "1"}, {"send_redirects", "0"}} {
		if err := netx.Sysctl(r.ns, "net/ipv4/conf/"+l.routerName+"/"+kv[0], kv[1]); err != nil {
			return fail("sysctl", err)
		}
	}
	if err := netx.Sysctl(r.ns, "net/ipv4/neigh/"+l.routerName+"/proxy_delay", "0"); err != nil {
		return fail("sysctl", err)
	}
	if err := n.h.LinkSetUp(nl); err != nil {
		return fail("node link up", err)
	}
	if a.DeviceIndex == 0 && a.NetworkCardIndex == 0 {
		addr := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(e.PrivateIP, s.CIDR.Bits()))}
		if err := n.h.AddrReplace(nl, addr); err != nil {
			return fail("primary address", err)
		}
		gw := gatewayOf(s.CIDR)
		// A namespace of our own gets the VPC as its default route; an
		// adopted one (the host) keeps its own default and reaches the VPC,
		// IMDS and the EC2 endpoint through the ENI.
		dsts := []*net.IPNet{mustNet("0.0.0.0/0")}
		if n.adopted {
			dsts = []*net.IPNet{hostNet(netip.MustParseAddr(IMDSAddr)), hostNet(netip.MustParseAddr(EC2Addr))}
			if v, err := f.vpc(e.VPCID); err == nil {
				for _, c := range v.CIDRBlocks {
					dsts = append(dsts, prefixNet(c))
				}
			}
		}
		for _, d := range dsts {
			rt := &netlink.Route{Dst: d, Gw: gw.AsSlice(), LinkIndex: nl.Attrs().Index}
			if err := n.h.RouteReplace(rt); err != nil {
				return fail("route "+d.String(), err)
			}
		}
	}
	f.log.Debug("eni link up", "eni", e.ID, "instance", n.id, "link", l.nodeName, "router", l.routerName)
	return l, nil
}

// removeENI deletes an ENI's veth pair (detach); f.mu is held.
func (f *Fabric) removeENI(id string) error {
	l, ok := f.enis[id]
	if !ok {
		return nil
	}
	f.forgetENI(id)
	r, ok := f.routers[l.vpcID]
	if !ok || r.h.Handle == nil {
		return nil
	}
	rl, err := r.h.LinkByName(l.routerName)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("detach %s: %w", id, err)
	}
	if err := r.h.LinkDel(rl); err != nil {
		return fmt.Errorf("detach %s: delete %s: %w", id, l.routerName, err)
	}
	return nil
}

// syncENI programs the router for the ENI's addresses and its source/
// destination check; f.mu is held.
func (f *Fabric) syncENI(r *router, l *eniLink, e model.NetworkInterface) error {
	rl, err := r.h.LinkByName(l.routerName)
	if err != nil {
		return fmt.Errorf("eni %s: %w", e.ID, err)
	}
	addrs := slices.Clone(e.SecondaryIPs)
	if e.PrivateIP.IsValid() {
		addrs = append([]netip.Addr{e.PrivateIP}, addrs...)
	}
	if err := syncDelivery(r.h, rl, e.MAC, addrs, e.Prefixes); err != nil {
		return fmt.Errorf("eni %s: %w", e.ID, err)
	}
	if l.sdc == nil || *l.sdc != e.SourceDestCheck {
		if err := f.setSourceDestCheck(r.ns, l.routerName, e.SourceDestCheck); err != nil {
			return fmt.Errorf("eni %s: %w", e.ID, err)
		}
		v := e.SourceDestCheck
		l.sdc = &v
	}
	f.setOwner(l.addrs, l.prefixes, "")
	l.addrs, l.prefixes, l.groups = addrs, slices.Clone(e.Prefixes), slices.Clone(e.SecurityGroups)
	f.setOwner(l.addrs, l.prefixes, l.instanceID)
	if e.InterfaceType == "trunk" {
		return f.reconcileBranchesOf(e.ID)
	}
	return nil
}

// setSourceDestCheck applies an ENI's source/destination check on the
// router side of its link. The security group table enforces it (a packet
// from the ENI whose source the ENI does not own is dropped, as on EC2);
// only an unfiltered fabric uses strict reverse-path filtering instead,
// which also drops ARP from a sender address the ENI does not own (a
// branch pod's node asks for the gateway from its own address) — EC2
// answers those.
func (f *Fabric) setSourceDestCheck(n ns.NetNS, link string, on bool) error {
	v := "0"
	if on && f.cfg.Unfiltered {
		v = "1"
	}
	return netx.Sysctl(n, "net/ipv4/conf/"+link+"/rp_filter", v)
}

// syncDelivery makes the routes and permanent neighbour entries on a router
// link deliver exactly addrs and prefixes to mac.
func syncDelivery(h netlinksafe.Handle, link netlink.Link, mac string, addrs []netip.Addr, prefixes []netip.Prefix) error {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return fmt.Errorf("mac %q: %w", mac, err)
	}
	idx := link.Attrs().Index
	want := map[netip.Prefix]bool{}
	wantNeigh := map[netip.Addr]bool{}
	for _, a := range addrs {
		if a.Is4() {
			want[netip.PrefixFrom(a, 32)] = true
			wantNeigh[a] = true
		}
	}
	for _, p := range prefixes {
		want[p.Masked()] = true
		for a := p.Masked().Addr(); p.Contains(a); a = a.Next() {
			wantNeigh[a] = true
		}
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: idx, Protocol: rtProto}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("list routes on %s: %w", link.Attrs().Name, err)
	}
	var errs []error
	for _, rt := range routes {
		p, ok := netipPrefix(rt.Dst)
		if ok && want[p] {
			delete(want, p)
			continue
		}
		if err := h.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %v: %w", rt.Dst, err))
		}
	}
	neighs, err := netx.NeighList(h, idx, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list neighbours on %s: %w", link.Attrs().Name, err)
	}
	for _, n := range neighs {
		if n.State&netlink.NUD_PERMANENT == 0 {
			continue
		}
		a, ok := netip.AddrFromSlice(n.IP)
		if ok && wantNeigh[a.Unmap()] && n.HardwareAddr.String() == hw.String() {
			delete(wantNeigh, a.Unmap())
			continue
		}
		if err := h.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete neighbour %v: %w", n.IP, err))
		}
	}
	// Neighbours first, so a route never points at an address that would
	// be ARPed for (pod addresses never answer ARP).
	for a := range wantNeigh {
		n := &netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: a.AsSlice(), HardwareAddr: hw}
		if err := h.NeighSet(n); err != nil {
			errs = append(errs, fmt.Errorf("neighbour %s: %w", a, err))
		}
	}
	for p := range want {
		rt := &netlink.Route{Dst: prefixNet(p), LinkIndex: idx, Scope: netlink.SCOPE_LINK, Protocol: rtProto}
		if err := h.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}
