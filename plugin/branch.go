package plugin

// Pods with their own branch ENI (security groups for pods), laid out as
// the VPC CNI lays them out: the pod's veth as for any pod, then a VLAN
// link "vlan.eth.<vlan id>" on the trunk ENI's link carrying the branch
// ENI's MAC, and route table 100+<vlan id> sending the pod's traffic out
// of it. In strict mode (host veth prefix "vlan") rules by incoming
// interface steer everything from and to the pod through that table, so
// even traffic to pods on the same node leaves through the VPC and meets
// the branch ENI's security groups; in standard mode (the normal prefix)
// the pod is routed like any other, with table 100+<vlan id> for what it
// sends.

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpclab/vpclab/internal/vlan"
	"github.com/vpclab/vpclab/ipamd/rpc"
)

// Branch ENI constants, as the VPC CNI has them.
const (
	// VlanTableOffset: a branch pod's route table is VlanTableOffset + its
	// VLAN id.
	VlanTableOffset = 100
	// VlanRulePriority is the priority of strict mode's incoming-interface
	// rules.
	VlanRulePriority = 10
	maxVlanID        = 4094
	// bpfTag names the BPF programs of the software VLAN datapath.
	bpfTag = "awscni"
)

// VlanLinkName is a branch pod's VLAN link on the node.
func VlanLinkName(vid int) string { return fmt.Sprintf("vlan.eth.%d", vid) }

// vlanTable maps a VLAN id to its route table, refusing ids out of range
// and ids whose table would be one the kernel reserves (253–255).
func vlanTable(vid int) (int, error) {
	if vid < 1 || vid > maxVlanID {
		return 0, fmt.Errorf("invalid VLAN id %d: want 1..%d", vid, maxVlanID)
	}
	t := vid + VlanTableOffset
	if t >= unix.RT_TABLE_DEFAULT && t <= unix.RT_TABLE_LOCAL {
		return 0, fmt.Errorf("VLAN id %d maps to reserved route table %d", vid, t)
	}
	return t, nil
}

// branch is what ipamd answers for a branch pod.
type branch struct {
	vid    int
	mac    net.HardwareAddr
	gw     netip.Addr
	parent int // the trunk ENI's link index
}

// hostPrefix is the host veth prefix of a branch pod: "vlan" in strict
// mode, the configured prefix in standard mode.
func (c *NetConf) branchPrefix() string {
	if c.PodSGEnforcingMode == "standard" {
		return c.VethPrefix
	}
	return "vlan"
}

func (c *NetConf) strict() bool { return c.PodSGEnforcingMode != "standard" }

// setupBranchPod builds a branch pod's datapath in the current (host)
// namespace and the pod's.
func setupBranchPod(podNS ns.NetNS, ifName, hostName string, mtu int, addr netip.Addr, b branch, strict bool) (net.HardwareAddr, net.HardwareAddr, error) {
	table, err := vlanTable(b.vid)
	if err != nil {
		return nil, nil, err
	}
	hostIf, podIf, err := setupVeth(podNS, ifName, hostName, mtu, addr)
	if err != nil {
		return nil, nil, err
	}
	// An earlier sandbox of this pod may have left rules for its veth.
	if err := delRules(netlink.FAMILY_V4, func(r netlink.Rule) bool { return r.Priority == VlanRulePriority && r.IifName == hostName }); err != nil {
		return nil, nil, err
	}
	h, err := netlinksafe.NewHandle()
	if err != nil {
		return nil, nil, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	parent, err := h.LinkByIndex(b.parent)
	if err != nil {
		return nil, nil, fmt.Errorf("trunk link (index %d): %w", b.parent, err)
	}
	name := VlanLinkName(b.vid)
	if err := vlan.DelAny(h, name, b.vid); err != nil { // left when the trunk changed
		return nil, nil, err
	}
	link, _, err := vlan.AddAny(h, parent, vlan.Link{Name: name, VID: b.vid, MAC: b.mac, Tag: bpfTag})
	if err != nil {
		return nil, nil, err
	}
	for k, v := range map[string]string{"accept_ra": "0", "accept_redirects": "1", "forwarding": "0"} {
		_, _ = sysctl.Sysctl("net/ipv6/conf/"+name+"/"+k, v) // absent without IPv6, as upstream tolerates
	}
	idx := link.Attrs().Index
	gw := b.gw.AsSlice()
	for _, rt := range []*netlink.Route{
		{LinkIndex: idx, Dst: &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK, Table: table},
		{LinkIndex: idx, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Gw: gw, Table: table},
	} {
		if err := netlink.RouteReplace(rt); err != nil {
			return nil, nil, fmt.Errorf("route %v via %s in table %d: %w", rt.Dst, b.gw, table, err)
		}
	}
	if !strict {
		if err := routeToPod(hostIf.Index, addr, table); err != nil {
			return nil, nil, err
		}
		return hostIf.HardwareAddr, podIf.HardwareAddr, nil
	}
	// Strict: everything from and to the pod through table 100+vlan.
	host := &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}
	if err := netlink.RouteReplace(&netlink.Route{LinkIndex: hostIf.Index, Dst: host, Scope: netlink.SCOPE_LINK, Table: table}); err != nil {
		return nil, nil, fmt.Errorf("pod route in table %d: %w", table, err)
	}
	for _, iif := range []string{name, hostName} {
		if err := addRule(iifRule(iif, table)); err != nil {
			return nil, nil, fmt.Errorf("rule iif %s lookup %d: %w", iif, table, err)
		}
	}
	return hostIf.HardwareAddr, podIf.HardwareAddr, nil
}

func iifRule(iif string, table int) *netlink.Rule {
	r := netlink.NewRule()
	r.IifName, r.Table, r.Priority, r.Family = iif, table, VlanRulePriority, netlink.FAMILY_V4
	return r
}

// teardownBranchPod removes a branch pod's VLAN link, its incoming-
// interface rules (whatever the mode: the pod may have been set up under
// another) and its address rules and route. An invalid VLAN id skips the
// teardown, as upstream does.
func teardownBranchPod(addr netip.Addr, vid int) error {
	table, err := vlanTable(vid)
	if err != nil {
		return nil
	}
	h, err := netlinksafe.NewHandle()
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	errs := []error{
		vlan.DelAny(h, VlanLinkName(vid), vid),
		delRules(netlink.FAMILY_V4, func(r netlink.Rule) bool { return r.Priority == VlanRulePriority && r.Table == table }),
	}
	if addr.IsValid() {
		errs = append(errs, teardownHost("", addr, false))
	}
	return errors.Join(errs...)
}

// delRules deletes every rule of the family that match selects.
func delRules(family int, match func(netlink.Rule) bool) error {
	rules, err := netlinksafe.RuleList(family)
	if err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	var errs []error
	for _, r := range rules {
		if match(r) {
			if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete rule %v: %w", r, err))
			}
		}
	}
	return errors.Join(errs...)
}

// addBranch wires a pod to the branch ENI ipamd answered with and returns
// the result in the VPC CNI's encoding: the dummy interface carries the
// VLAN id (and no device number), the address the branch subnet's gateway.
func addBranch(args *skel.CmdArgs, conf *NetConf, podNS ns.NetNS, ns, name string, ip netip.Addr, reply *rpc.AddNetworkReply) (*current.Result, error) {
	vid := int(reply.PodVlanId)
	if _, err := vlanTable(vid); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "branch ENI: "+err.Error(), "")
	}
	mac, err := net.ParseMAC(reply.PodENIMAC)
	if err != nil {
		return nil, types.NewError(types.ErrInternal, fmt.Sprintf("ipamd returned a bad branch ENI MAC %q", reply.PodENIMAC), err.Error())
	}
	gw, err := netip.ParseAddr(reply.PodENISubnetGW)
	if err != nil || !gw.Is4() {
		return nil, types.NewError(types.ErrInternal, fmt.Sprintf("ipamd returned a bad branch subnet gateway %q", reply.PodENISubnetGW), "")
	}
	hostName := HostVethName(conf.branchPrefix(), ns, name)
	hostMAC, _, err := setupBranchPod(podNS, args.IfName, hostName, conf.mtu, ip, branch{vid: vid, mac: mac, gw: gw, parent: int(reply.ParentIfIndex)}, conf.strict())
	if err != nil {
		_ = teardownBranchPod(ip, vid)
		_ = teardownHost(hostName, netip.Addr{}, true)
		return nil, types.NewError(types.ErrInternal, "failed to set up the branch ENI pod network", err.Error())
	}
	idx := 1
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: hostName, Mac: hostMAC.String()},
			{Name: args.IfName, Mac: strconv.Itoa(int(reply.IPAllocationMetadata[0].RouteTableId)), Sandbox: args.Netns},
			{Name: DummyName(ns, name), Mac: strconv.Itoa(vid)},
		},
		IPs:    []*current.IPConfig{{Interface: &idx, Address: net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}, Gateway: gw.AsSlice()}},
		Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: net.ParseIP(GatewayIP)}},
	}, nil
}

// delBranch is DEL for a branch pod; with no netns (the sandbox is gone)
// there is nothing of the pod's left to tear down.
func delBranch(args *skel.CmdArgs, log *slog.Logger, pod string, ip netip.Addr, vid int) error {
	if args.Netns == "" {
		return nil
	}
	if err := teardownBranchPod(ip, vid); err != nil {
		return types.NewError(types.ErrInternal, "failed to tear down the branch ENI pod network", err.Error())
	}
	log.Info("DEL (branch ENI)", "pod", pod, "ip", ip.String(), "vlan", vid)
	return nil
}

// branchFromPrevResult reads a branch pod's VLAN id and address from the
// prevResult (the dummy interface named for the pod carries the VLAN id;
// 0 means not a branch pod).
func branchFromPrevResult(conf *NetConf, ifName, ns, name string) (int, netip.Addr, bool) {
	prev := prevResult(conf)
	if prev == nil {
		return 0, netip.Addr{}, false
	}
	vid := 0
	for _, itf := range prev.Interfaces {
		if itf.Name == DummyName(ns, name) {
			vid, _ = strconv.Atoi(itf.Mac)
		}
	}
	if vid == 0 {
		return 0, netip.Addr{}, false
	}
	ip, _, _ := fromPrevResult(conf, ifName)
	return vid, ip, true
}
