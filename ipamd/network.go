package ipamd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Rule priorities and chains, as aws-node uses them.
const (
	ruleENIPriority    = 32765
	ruleFwmarkPriority = 1024
	// ruleExternalServicePriority routes each AWS_EXTERNAL_SERVICE_CIDRS
	// entry by the main table, ahead of the pods' 1536 "from" rules.
	ruleExternalServicePriority = 1535
	snatChain                   = "AWS-SNAT-CHAIN-0"
	connmarkChain               = "AWS-CONNMARK-CHAIN-0"
	mainTable                   = 254
	linkLookupAttempts          = 10
	linkLookupInterval          = 300 * time.Millisecond
	iptablesWaitSeconds         = "5"
)

// RouteTableID is the VPC CNI's table for an ENI: main for device 0 on
// card 0, device+1 on card 0, 10000+device+100·card on other cards.
func RouteTableID(card, device int) int {
	switch {
	case card == 0 && device == 0:
		return mainTable
	case card == 0:
		return device + 1
	}
	return 10000 + device + 100*card
}

// hostNetwork programs the node's own namespace (ipamd runs inside it).
type hostNetwork struct {
	c *Config
}

func linkByMAC(mac string) (netlink.Link, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return nil, fmt.Errorf("mac %q: %w", mac, err)
	}
	for i := 0; i < linkLookupAttempts; i++ {
		if l, err := findLink(hw); err != nil || l != nil {
			return l, err
		}
		time.Sleep(linkLookupInterval)
	}
	return nil, fmt.Errorf("no link with MAC %s", mac)
}

// findLink is the node's ENI link with MAC hw (not a VLAN or macvlan link
// on top of it, which share its MAC), or nil.
func findLink(hw net.HardwareAddr) (netlink.Link, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		if l.Attrs().HardwareAddr.String() == hw.String() && l.Type() != "vlan" && l.Type() != "macvlan" {
			return l, nil
		}
	}
	return nil, nil
}

// waitForLink waits, up to wait, until the node has a link with the MAC
// of an ENI just attached (the instance's OS sees the device once EC2 has
// finished attaching it).
func waitForLink(ctx context.Context, mac string, wait time.Duration) error {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return fmt.Errorf("mac %q: %w", mac, err)
	}
	deadline := time.Now().Add(wait)
	for back := 50 * time.Millisecond; ; back = min(back*2, time.Second) {
		if l, err := findLink(hw); err != nil || l != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no link with MAC %s after %s", mac, wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(back):
		}
	}
}

// setEarlyDemux sets net.ipv4.tcp_early_demux as aws-node's init
// container does: 0 when disabled, else 1, and only where the key exists.
func setEarlyDemux(disable bool) error {
	const key = "net/ipv4/tcp_early_demux"
	if _, err := os.Stat("/proc/sys/" + key); err != nil {
		return nil
	}
	v := "1"
	if disable {
		v = "0"
	}
	if _, err := sysctl.Sysctl(key, v); err != nil {
		return fmt.Errorf("tcp_early_demux: %w", err)
	}
	return nil
}

// setupHost prepares the node: primary ENI MTU, loose reverse-path filter
// on it, the fwmark rule, and SNAT/connmark chains for traffic leaving the
// VPC (unless external SNAT).
func (h *hostNetwork) setupHost(primaryMAC string, primaryIP netip.Addr, vpcCIDRs []netip.Prefix) error {
	l, err := linkByMAC(primaryMAC)
	if err != nil {
		return fmt.Errorf("primary ENI: %w", err)
	}
	if err := netlink.LinkSetMTU(l, h.c.MTU); err != nil {
		return fmt.Errorf("primary ENI %s MTU %d: %w", l.Attrs().Name, h.c.MTU, err)
	}
	if _, err := sysctl.Sysctl("net/ipv4/conf/"+l.Attrs().Name+"/rp_filter", "2"); err != nil {
		return fmt.Errorf("primary ENI %s rp_filter: %w", l.Attrs().Name, err)
	}
	if err := setEarlyDemux(h.c.DisableTCPEarlyDemux); err != nil {
		return err
	}
	rule := netlink.NewRule()
	rule.Priority, rule.Table = ruleFwmarkPriority, mainTable
	rule.Mark, rule.Mask = h.c.ConnMark, &h.c.ConnMark
	rule.Family = netlink.FAMILY_V4
	if !h.c.ExternalSNAT || h.c.NodePortSupport {
		if err := netlink.RuleAdd(rule); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("fwmark rule: %w", err)
		}
	}
	if err := h.externalServiceRules(); err != nil {
		return err
	}
	if h.c.EnablePodENI && h.c.PodSGEnforcingMode == "strict" {
		// As aws-node: the local table moves from priority 0 to 20, below
		// strict mode's incoming-interface rules (10), so even traffic from
		// a branch pod to the node's own addresses goes out through the
		// branch ENI and meets its security groups.
		local := netlink.NewRule()
		local.Table, local.Priority, local.Family = unix.RT_TABLE_LOCAL, localRulePriority, netlink.FAMILY_V4
		if err := netlink.RuleAdd(local); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("local table rule at %d: %w", localRulePriority, err)
		}
		local.Priority = 0
		if err := netlink.RuleDel(local); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete the local table rule at 0: %w", err)
		}
	}
	return h.setupSNAT(primaryIP, vpcCIDRs)
}

// externalServiceRules makes the rules at ruleExternalServicePriority
// exactly one "to CIDR lookup main" per AWS_EXTERNAL_SERVICE_CIDRS entry,
// as aws-node does at start-up: every rule there goes (a restart with
// another list leaves none stale), then the list's are added.
func (h *hostNetwork) externalServiceRules() error {
	if err := delRules(func(r netlink.Rule) bool { return r.Priority == ruleExternalServicePriority && r.Table == mainTable }); err != nil {
		return fmt.Errorf("external service rules: %w", err)
	}
	for _, c := range h.c.ExternalServiceCIDRs {
		r := netlink.NewRule()
		r.Priority, r.Table, r.Family = ruleExternalServicePriority, mainTable, netlink.FAMILY_V4
		r.Dst = &net.IPNet{IP: c.Addr().AsSlice(), Mask: net.CIDRMask(c.Bits(), 32)}
		if err := netlink.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("external service rule to %s: %w", c, err)
		}
	}
	return nil
}

// localRulePriority is where strict pod-ENI mode moves the local table.
const localRulePriority = 20

func iptables(args ...string) error {
	out, err := exec.Command("iptables", append([]string{"-w", iptablesWaitSeconds}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ensureRule appends a rule unless it is already there.
func ensureRule(table, chain string, rule ...string) error {
	if iptables(append([]string{"-t", table, "-C", chain}, rule...)...) == nil {
		return nil
	}
	return iptables(append([]string{"-t", table, "-A", chain}, rule...)...)
}

func (h *hostNetwork) setupSNAT(primaryIP netip.Addr, vpcCIDRs []netip.Prefix) error {
	if _, err := exec.LookPath("iptables"); err != nil {
		return fmt.Errorf("SNAT needs iptables (make deps installs it): %w", err)
	}
	jumpSNAT := []string{"-m", "comment", "--comment", "AWS SNAT CHAIN", "-j", snatChain}
	jumpMark := []string{"-i", h.c.VethPrefix + "+", "-m", "comment", "--comment", "AWS, outbound connections", "-j", connmarkChain}
	restore := []string{"-m", "comment", "--comment", "AWS, CONNMARK", "-j", "CONNMARK", "--restore-mark", "--mask", fmt.Sprintf("%#x", h.c.ConnMark)}
	if h.c.ExternalSNAT {
		_ = iptables(append([]string{"-t", "nat", "-D", "POSTROUTING"}, jumpSNAT...)...)
		_ = iptables(append([]string{"-t", "nat", "-D", "PREROUTING"}, jumpMark...)...)
		_ = iptables(append([]string{"-t", "nat", "-D", "PREROUTING"}, restore...)...)
		for _, ch := range []string{snatChain, connmarkChain} {
			_ = iptables("-t", "nat", "-F", ch)
			_ = iptables("-t", "nat", "-X", ch)
		}
		return nil
	}
	for _, ch := range []string{snatChain, connmarkChain} {
		_ = iptables("-t", "nat", "-N", ch)
		if err := iptables("-t", "nat", "-F", ch); err != nil {
			return err
		}
	}
	skip := append(append([]netip.Prefix{}, vpcCIDRs...), h.c.ExcludeSNATCIDRs...)
	for _, p := range skip {
		comment := "AWS SNAT CHAIN"
		if !containsPrefix(vpcCIDRs, p) {
			comment = "AWS SNAT CHAIN EXCLUSION"
		}
		if err := iptables("-t", "nat", "-A", snatChain, "-d", p.String(), "-m", "comment", "--comment", comment, "-j", "RETURN"); err != nil {
			return err
		}
		if err := iptables("-t", "nat", "-A", connmarkChain, "-d", p.String(), "-m", "comment", "--comment", "AWS CONNMARK CHAIN", "-j", "RETURN"); err != nil {
			return err
		}
	}
	snat := []string{"-t", "nat", "-A", snatChain, "!", "-o", "vlan+", "-m", "comment", "--comment", "AWS, SNAT", "-m", "addrtype", "!", "--dst-type", "LOCAL", "-j", "SNAT", "--to-source", primaryIP.String()}
	switch h.c.RandomizeSNAT {
	case "prng":
		if err := iptables(append(snat, "--random-fully")...); err == nil {
			snat = nil
		} else {
			snat = append(snat, "--random")
		}
	case "hashrandom":
		snat = append(snat, "--random")
	}
	if snat != nil {
		if err := iptables(snat...); err != nil {
			return err
		}
	}
	if err := iptables("-t", "nat", "-A", connmarkChain, "-m", "comment", "--comment", "AWS, CONNMARK", "-j", "CONNMARK", "--set-xmark", fmt.Sprintf("%#x/%#x", h.c.ConnMark, h.c.ConnMark)); err != nil {
		return err
	}
	if err := ensureRule("nat", "POSTROUTING", jumpSNAT...); err != nil {
		return err
	}
	if err := ensureRule("nat", "PREROUTING", jumpMark...); err != nil {
		return err
	}
	return ensureRule("nat", "PREROUTING", restore...)
}

func containsPrefix(ps []netip.Prefix, p netip.Prefix) bool {
	for _, x := range ps {
		if x == p {
			return true
		}
	}
	return false
}

// setupENI configures a secondary ENI's link as aws-node does: MTU, up,
// its primary address, a route table (device+1) with the subnet gateway as
// default, no connected route in main, and a rule from its address.
func (h *hostNetwork) setupENI(mac string, ip netip.Addr, subnet netip.Prefix, table int, trunk bool) error {
	l, err := linkByMAC(mac)
	if err != nil {
		return err
	}
	name := l.Attrs().Name
	if err := netlink.LinkSetMTU(l, h.c.MTU); err != nil {
		return fmt.Errorf("%s MTU: %w", name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("%s up: %w", name, err)
	}
	addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("%s addresses: %w", name, err)
	}
	want := netip.PrefixFrom(ip, subnet.Bits())
	for _, a := range addrs {
		if a.IPNet.String() != want.String() {
			_ = netlink.AddrDel(l, &a)
		}
	}
	if err := netlink.AddrReplace(l, &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(subnet.Bits(), 32)}}); err != nil {
		return fmt.Errorf("%s address %s: %w", name, want, err)
	}
	gw := subnet.Masked().Addr().Next()
	idx := l.Attrs().Index
	routes := []*netlink.Route{
		{LinkIndex: idx, Dst: &net.IPNet{IP: gw.AsSlice(), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK, Table: table},
		{LinkIndex: idx, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Gw: gw.AsSlice(), Table: table},
	}
	for _, r := range routes {
		var err error
		for i, back := 0, 500*time.Millisecond; i < 5; i, back = i+1, min(back*2, 5*time.Second) {
			if err = netlink.RouteReplace(r); err == nil {
				break
			}
			time.Sleep(back)
		}
		if err != nil {
			return fmt.Errorf("%s route %v table %d: %w", name, r.Dst, table, err)
		}
	}
	connected := &netlink.Route{LinkIndex: idx, Dst: &net.IPNet{IP: subnet.Masked().Addr().AsSlice(), Mask: net.CIDRMask(subnet.Bits(), 32)}, Scope: netlink.SCOPE_LINK, Src: ip.AsSlice(), Table: mainTable, Protocol: unix.RTPROT_KERNEL}
	_ = netlink.RouteDel(connected)
	if trunk {
		return nil
	}
	rule := netlink.NewRule()
	rule.Src = &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}
	rule.Table, rule.Priority, rule.Family = table, ruleENIPriority, netlink.FAMILY_V4
	if err := netlink.RuleAdd(rule); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("%s rule from %s lookup %d: %w", name, ip, table, err)
	}
	return nil
}

// teardownENI removes the rules pointing at a freed ENI's address.
func (h *hostNetwork) teardownENI(ip netip.Addr) error {
	return delRules(func(r netlink.Rule) bool { return r.Src != nil && r.Src.IP.Equal(ip.AsSlice()) })
}

// delRules deletes the node's IPv4 rules that match (one already gone is
// not an error).
func delRules(match func(netlink.Rule) bool) error {
	rules, err := netlinksafe.RuleList(netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	var errs []error
	for _, r := range rules {
		if match(r) {
			if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete rule %s: %w", r, err))
			}
		}
	}
	return errors.Join(errs...)
}

// hostPodRoutes lists the pod addresses the node routes to host veths
// named prefix…: address -> veth.
func hostPodRoutes(prefix string) (map[netip.Addr]string, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := map[netip.Addr]string{}
	for _, l := range links {
		name := l.Attrs().Name
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		routes, err := netlinksafe.RouteList(l, netlink.FAMILY_V4)
		if err != nil {
			return nil, fmt.Errorf("list routes of %s: %w", name, err)
		}
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			if ones, bits := r.Dst.Mask.Size(); ones != 32 || bits != 32 {
				continue
			}
			if a, ok := netip.AddrFromSlice(r.Dst.IP.To4()); ok {
				out[a] = name
			}
		}
	}
	return out, nil
}
