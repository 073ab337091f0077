package plugin

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpclab/vpclab/internal/netx"
)

// CmdCheck is CHECK: the pod's interface, address, gateway route and ARP
// entry, and the host veth, route and rules must all be as ADD left them.
func CmdCheck(args *skel.CmdArgs) error {
	conf, k, err := loadArgs(args)
	if err != nil {
		return err
	}
	ip, table, host := fromPrevResult(conf, args.IfName)
	if !ip.IsValid() {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs the prevResult ADD returned", "")
	}
	ns, name := podIdentity(k, args)
	var hostMAC net.HardwareAddr
	problem := ""
	if vid, _, ok := branchFromPrevResult(conf, args.IfName, ns, name); ok {
		if host == "" {
			host = HostVethName(conf.branchPrefix(), ns, name)
		}
		hostMAC, problem = checkBranchHost(host, ip, vid, conf.strict())
	} else {
		if host == "" {
			host = HostVethName(conf.VethPrefix, ns, name)
		}
		hostMAC, problem = checkHost(host, ip, table)
	}
	if problem == "" {
		problem = checkPod(args.Netns, args.IfName, ip, hostMAC)
	}
	if problem != "" {
		return types.NewError(types.ErrInternal, fmt.Sprintf("CHECK %s: %s", args.ContainerID, problem), "")
	}
	return nil
}

// checkBranchHost checks a branch pod's host side: its VLAN link up, and
// strict mode's table route and incoming-interface rules or standard
// mode's routes and rules. It returns the host veth's MAC, or what is
// wrong.
func checkBranchHost(host string, ip netip.Addr, vid int, strict bool) (net.HardwareAddr, string) {
	table, err := vlanTable(vid)
	if err != nil {
		return nil, err.Error()
	}
	vl, err := netlinksafe.LinkByName(VlanLinkName(vid))
	if err != nil || vl.Attrs().Flags&net.FlagUp == 0 {
		return nil, fmt.Sprintf("VLAN link %s missing or down", VlanLinkName(vid))
	}
	if !strict {
		return checkHost(host, ip, table)
	}
	hl, err := netlinksafe.LinkByName(host)
	if err != nil || hl.Attrs().Flags&net.FlagUp == 0 {
		return nil, fmt.Sprintf("host veth %s missing or down", host)
	}
	routes, _ := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: hl.Attrs().Index, Table: table}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if !slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.Dst != nil && r.Dst.String() == ip.String()+"/32" }) {
		return nil, fmt.Sprintf("route %s/32 dev %s in table %d missing", ip, host, table)
	}
	rules, _ := netlinksafe.RuleList(netlink.FAMILY_V4)
	for _, iif := range []string{VlanLinkName(vid), host} {
		if !slices.ContainsFunc(rules, func(r netlink.Rule) bool {
			return r.Priority == VlanRulePriority && r.IifName == iif && r.Table == table
		}) {
			return nil, fmt.Sprintf("rule 'iif %s lookup %d' (priority %d) missing", iif, table, VlanRulePriority)
		}
	}
	return hl.Attrs().HardwareAddr, ""
}

// checkHost checks the host side of a pod: its veth up, the /32 route to
// the pod and both policy rules. It returns the veth's MAC, or what is wrong.
func checkHost(host string, ip netip.Addr, table int) (net.HardwareAddr, string) {
	hl, err := netlinksafe.LinkByName(host)
	if err != nil {
		return nil, fmt.Sprintf("host veth %s missing", host)
	}
	if hl.Attrs().Flags&net.FlagUp == 0 {
		return nil, fmt.Sprintf("host veth %s is down", host)
	}
	routes, _ := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: hl.Attrs().Index}, netlink.RT_FILTER_OIF)
	if !slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.Dst != nil && r.Dst.String() == ip.String()+"/32" }) {
		return nil, fmt.Sprintf("host route %s/32 dev %s missing", ip, host)
	}
	rules, _ := netlinksafe.RuleList(netlink.FAMILY_V4)
	toOK, fromOK := false, table == mainTable
	for _, r := range rules {
		if r.Priority == ToPodRulePriority && r.Dst != nil && r.Dst.IP.Equal(ip.AsSlice()) {
			toOK = true
		}
		if r.Priority == FromPodRulePriority && r.Src != nil && r.Src.IP.Equal(ip.AsSlice()) && r.Table == table {
			fromOK = true
		}
	}
	if !toOK {
		return nil, fmt.Sprintf("rule 'to %s lookup main' (priority %d) missing", ip, ToPodRulePriority)
	}
	if !fromOK {
		return nil, fmt.Sprintf("rule 'from %s lookup %d' (priority %d) missing", ip, table, FromPodRulePriority)
	}
	return hl.Attrs().HardwareAddr, ""
}

// checkPod checks the pod side: one /32 address, the default route via the
// link-local gateway and the permanent ARP entry for it at the host veth's
// MAC. It returns what is wrong, or "".
func checkPod(netnsPath, ifName string, ip netip.Addr, hostMAC net.HardwareAddr) string {
	podNS, err := ns.GetNS(netnsPath)
	if err != nil {
		return fmt.Sprintf("pod netns %s missing", netnsPath)
	}
	defer podNS.Close()
	ph, err := netx.Handle(podNS)
	if err != nil {
		return fmt.Sprintf("pod netns %s: %v", netnsPath, err)
	}
	defer ph.Close()
	pl, err := ph.LinkByName(ifName)
	if err != nil {
		return fmt.Sprintf("pod interface %s missing", ifName)
	}
	addrs, _ := netx.AddrList(ph, pl, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != ip.String()+"/32" {
		return fmt.Sprintf("pod interface %s has addresses %v, want %s/32", ifName, addrs, ip)
	}
	gw := net.ParseIP(GatewayIP)
	routes, _ := ph.RouteList(pl, netlink.FAMILY_V4)
	if !slices.ContainsFunc(routes, func(r netlink.Route) bool {
		return (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(gw)
	}) {
		return fmt.Sprintf("pod default route via %s missing", GatewayIP)
	}
	neighs, _ := netx.NeighList(ph, pl.Attrs().Index, netlink.FAMILY_V4)
	if !slices.ContainsFunc(neighs, func(n netlink.Neigh) bool {
		return n.IP.Equal(gw) && n.State&netlink.NUD_PERMANENT != 0 && n.HardwareAddr.String() == hostMAC.String()
	}) {
		return fmt.Sprintf("pod ARP entry %s -> %s missing", GatewayIP, hostMAC)
	}
	return ""
}
