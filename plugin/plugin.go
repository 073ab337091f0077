package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	cniip "github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	vversion "github.com/vpclab/vpclab/internal/version"
	"github.com/vpclab/vpclab/ipamd/rpc"
)

// Supported lists the CNI spec versions aws-cni speaks.
var Supported = version.PluginSupports("0.4.0", "1.0.0", "1.1.0")

// Funcs are the skel entry points.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: CmdAdd, Del: CmdDel, Check: CmdCheck, Status: CmdStatus, GC: CmdGC}
}

func logger(c *NetConf) (*slog.Logger, func()) {
	if c == nil || c.PluginLogFile == "" || c.PluginLogFile == "stdout" {
		return slog.New(slog.NewJSONHandler(io.Discard, nil)), func() {}
	}
	var w io.Writer = os.Stderr
	closeFn := func() {}
	if c.PluginLogFile != "stderr" {
		f, err := os.OpenFile(c.PluginLogFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return slog.New(slog.NewJSONHandler(io.Discard, nil)), func() {}
		}
		w, closeFn = f, func() { f.Close() }
	}
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(strings.ToLower(c.PluginLogLevel)))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})), closeFn
}

func loadArgs(args *skel.CmdArgs) (*NetConf, *K8sArgs, error) {
	conf, err := LoadConf(args.StdinData)
	if err != nil {
		return nil, nil, err
	}
	k := &K8sArgs{}
	if err := types.LoadArgs(args.Args, k); err != nil {
		return nil, nil, types.NewError(types.ErrInvalidEnvironmentVariables, "failed to parse CNI_ARGS", err.Error())
	}
	return conf, k, nil
}

// dial connects to ipamd's socket.
func dial(conf *NetConf) (*grpc.ClientConn, error) {
	if _, err := os.Stat(conf.IPAMDSocket); err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("ipamd unreachable: socket %s", conf.IPAMDSocket), err.Error())
	}
	c, err := grpc.NewClient("unix://"+conf.IPAMDSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, "ipamd unreachable", err.Error())
	}
	return c, nil
}

func callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// podIdentity returns the pod's namespace and name (the container id when
// the runtime passes no Kubernetes args).
func podIdentity(k *K8sArgs, args *skel.CmdArgs) (string, string) {
	ns, name := string(k.K8S_POD_NAMESPACE), string(k.K8S_POD_NAME)
	if name == "" {
		ns, name = "default", args.ContainerID
	}
	return ns, name
}

// CmdAdd is ADD: an address from ipamd, then the pod datapath.
func CmdAdd(args *skel.CmdArgs) error {
	conf, k, err := loadArgs(args)
	if err != nil {
		return err
	}
	log, done := logger(conf)
	defer done()
	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("pod netns %q not found", args.Netns), err.Error())
	}
	defer podNS.Close()
	conn, err := dial(conf)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := rpc.NewCNIBackendClient(conn)
	ns, name := podIdentity(k, args)
	ctx, cancel := callCtx()
	defer cancel()
	reply, err := client.AddNetwork(ctx, &rpc.AddNetworkRequest{
		ClientVersion: vversion.Version, K8S_POD_NAME: name, K8S_POD_NAMESPACE: ns, K8S_POD_INFRA_CONTAINER_ID: string(k.K8S_POD_INFRA_CONTAINER_ID),
		Netns: args.Netns, ContainerID: args.ContainerID, NetworkName: conf.Name, IfName: args.IfName,
	})
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, "add cmd: Error received from AddNetwork gRPC call (ipamd unreachable or refused the request)", err.Error())
	}
	if !reply.Success || len(reply.IPAllocationMetadata) == 0 {
		return types.NewError(types.ErrTryAgainLater, "add cmd: failed to assign an IP address to container (ipamd has no address available)", "")
	}
	meta := reply.IPAllocationMetadata[0]
	ip, err := netip.ParseAddr(meta.IPv4Addr)
	if err != nil {
		release(client, args, k, conf, "SetupNSFailed")
		return types.NewError(types.ErrInternal, fmt.Sprintf("ipamd returned a bad address %q", meta.IPv4Addr), "")
	}
	var res *current.Result
	if reply.PodVlanId != 0 {
		res, err = addBranch(args, conf, podNS, ns, name, ip, reply)
		if err != nil {
			release(client, args, k, conf, "SetupNSFailed")
			log.Error("ADD (branch ENI) failed; rolled back", "pod", ns+"/"+name, "ip", ip.String(), "vlan", reply.PodVlanId, "err", err)
			return err
		}
		log.Info("ADD (branch ENI)", "pod", ns+"/"+name, "ip", ip.String(), "vlan", reply.PodVlanId, "eniMAC", reply.PodENIMAC, "mode", conf.PodSGEnforcingMode)
	} else {
		table := int(meta.RouteTableId)
		hostName := HostVethName(conf.VethPrefix, ns, name)
		hostMAC, podMAC, err := setupPod(podNS, args.IfName, hostName, conf.mtu, ip, table)
		if err != nil {
			teardownHost(hostName, ip, true)
			release(client, args, k, conf, "SetupNSFailed")
			log.Error("ADD failed; rolled back", "pod", ns+"/"+name, "ip", ip.String(), "err", err)
			return types.NewError(types.ErrInternal, "add command: failed to setup network", err.Error())
		}
		log.Info("ADD", "pod", ns+"/"+name, "ip", ip.String(), "hostVeth", hostName, "table", table)
		res = result(args, ns, name, hostName, hostMAC, podMAC, ip, table, int(meta.DeviceNumber))
	}
	if prev := prevResult(conf); prev != nil {
		res = merge(prev, res)
	}
	return types.PrintResult(res, conf.CNIVersion)
}

// result encodes the pod like the VPC CNI does, so either plugin's DEL can
// tear down from the other's prevResult: the container interface's "mac"
// carries the route table and a dummy interface carries the device number.
func result(args *skel.CmdArgs, ns, name, hostName string, hostMAC, podMAC net.HardwareAddr, ip netip.Addr, table, device int) *current.Result {
	idx := 1
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: hostName, Mac: hostMAC.String()},
			{Name: args.IfName, Mac: strconv.Itoa(table), Sandbox: args.Netns},
			{Name: DummyName(ns, name), Mac: "0", Sandbox: strconv.Itoa(device)},
		},
		IPs:    []*current.IPConfig{{Interface: &idx, Address: net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}}},
		Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: net.ParseIP(GatewayIP)}},
	}
}

func merge(prev, res *current.Result) *current.Result {
	off := len(prev.Interfaces)
	out := *prev
	out.Interfaces = append(append([]*current.Interface{}, prev.Interfaces...), res.Interfaces...)
	for _, ipc := range res.IPs {
		c := *ipc
		i := *c.Interface + off
		c.Interface = &i
		out.IPs = append(out.IPs, &c)
	}
	out.Routes = append(out.Routes, res.Routes...)
	return &out
}

func release(client rpc.CNIBackendClient, args *skel.CmdArgs, k *K8sArgs, conf *NetConf, reason string) {
	ctx, cancel := callCtx()
	defer cancel()
	ns, name := podIdentity(k, args)
	_, _ = client.DelNetwork(ctx, &rpc.DelNetworkRequest{ClientVersion: vversion.Version, K8S_POD_NAME: name, K8S_POD_NAMESPACE: ns,
		K8S_POD_INFRA_CONTAINER_ID: string(k.K8S_POD_INFRA_CONTAINER_ID), ContainerID: args.ContainerID, NetworkName: conf.Name, IfName: args.IfName, Reason: reason})
}

// setupPod builds the pod's datapath as the VPC CNI lays it out: the veth
// pair (made by the CNI project's pkg/ip inside the pod's namespace, host
// end moved out and up), then the pod side (address as /32, link-scope
// route to the gateway, default route via it, static ARP entry at the host
// veth's MAC) and the host side (/32 route, to-pod and from-pod rules).
// The routes and rules are written here rather than with pkg/ip's helpers:
// those add (EEXIST on a retried ADD) and know nothing of this layout.
func setupPod(podNS ns.NetNS, ifName, hostName string, mtu int, addr netip.Addr, table int) (net.HardwareAddr, net.HardwareAddr, error) {
	hostIf, podIf, err := setupVeth(podNS, ifName, hostName, mtu, addr)
	if err != nil {
		return nil, nil, err
	}
	if err := routeToPod(hostIf.Index, addr, table); err != nil {
		return nil, nil, err
	}
	return hostIf.HardwareAddr, podIf.HardwareAddr, nil
}

// routeToPod is the host side of a pod routed by address: the /32 route
// to its veth in main, the to-pod rule and, unless the table is main, the
// from-pod rule into it.
func routeToPod(hostIndex int, addr netip.Addr, table int) error {
	host := net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}
	if err := netlink.RouteReplace(&netlink.Route{LinkIndex: hostIndex, Dst: &host, Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("host route: %w", err)
	}
	if err := addRule(toRule(addr)); err != nil {
		return fmt.Errorf("to-pod rule: %w", err)
	}
	if table != mainTable && table > 1 {
		if err := addRule(fromRule(addr, table)); err != nil {
			return fmt.Errorf("from-pod rule: %w", err)
		}
	}
	return nil
}

// setupVeth makes the pod's veth pair (the pod side configured, the host
// side up) for any pod, branch pods included.
func setupVeth(podNS ns.NetNS, ifName, hostName string, mtu int, addr netip.Addr) (hostIf, podIf net.Interface, err error) {
	if old, err := netlinksafe.LinkByName(hostName); err == nil {
		_ = netlink.LinkDel(old) // a stale pair from an earlier sandbox of this pod
	}
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return hostIf, podIf, fmt.Errorf("host netns: %w", err)
	}
	defer hostNS.Close()
	err = podNS.Do(func(ns.NetNS) error {
		var err error
		if hostIf, podIf, err = cniip.SetupVethWithName(ifName, hostName, mtu, "", hostNS); err != nil {
			return fmt.Errorf("create veth %s/%s: %w", hostName, ifName, err)
		}
		return setupPodSide(podIf.Index, hostIf.HardwareAddr, addr)
	})
	if err != nil {
		return hostIf, podIf, err
	}
	// Best effort, as upstream: these keys are absent when IPv6 is disabled
	// (pkg/ip has already set accept_ra).
	for k, v := range map[string]string{"accept_redirects": "1", "forwarding": "0"} {
		_, _ = sysctl.Sysctl("net/ipv6/conf/"+hostName+"/"+k, v)
	}
	return hostIf, podIf, nil
}

// setupPodSide configures the pod's interface; it runs inside the pod's
// namespace.
func setupPodSide(index int, hostMAC net.HardwareAddr, addr netip.Addr) error {
	pod, err := netlink.LinkByIndex(index)
	if err != nil {
		return fmt.Errorf("pod link %d: %w", index, err)
	}
	gw := net.ParseIP(GatewayIP).To4()
	steps := []struct {
		what string
		f    func() error
	}{
		{"pod link up", func() error { return netlink.LinkSetUp(pod) }},
		{"pod gateway route", func() error {
			return netlink.RouteReplace(&netlink.Route{LinkIndex: index, Dst: &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK})
		}},
		{"pod default route", func() error {
			return netlink.RouteReplace(&netlink.Route{LinkIndex: index, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Gw: gw})
		}},
		{"pod address", func() error {
			return netlink.AddrReplace(pod, &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}})
		}},
		{"pod gateway ARP entry", func() error {
			return netlink.NeighSet(&netlink.Neigh{LinkIndex: index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: gw, HardwareAddr: hostMAC})
		}},
	}
	for _, s := range steps {
		if err := s.f(); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	return nil
}

func toRule(ip netip.Addr) *netlink.Rule {
	r := netlink.NewRule()
	r.Dst = &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}
	r.Table, r.Priority, r.Family = mainTable, ToPodRulePriority, netlink.FAMILY_V4
	return r
}

func fromRule(ip netip.Addr, table int) *netlink.Rule {
	r := netlink.NewRule()
	r.Src = &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}
	r.Table, r.Priority, r.Family = table, FromPodRulePriority, netlink.FAMILY_V4
	return r
}

func addRule(r *netlink.Rule) error {
	if err := netlink.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

// teardownHost removes the pod's rules and host route, and the veth when
// deleteLink is set; every step tolerates what is already gone.
func teardownHost(hostName string, ip netip.Addr, deleteLink bool) error {
	var errs []error
	if ip.IsValid() {
		for {
			if err := netlink.RuleDel(toRule(ip)); err != nil {
				break
			}
		}
		rules, err := netlinksafe.RuleList(netlink.FAMILY_V4)
		if err == nil {
			for _, r := range rules {
				if r.Priority == FromPodRulePriority && r.Src != nil && r.Src.IP.Equal(ip.AsSlice()) {
					if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
						errs = append(errs, fmt.Errorf("delete rule from %s: %w", ip, err))
					}
				}
			}
		}
		// The scope must match the route ADD made (link): the kernel matches
		// it on delete, so a zero (universe) scope deletes nothing.
		_ = netlink.RouteDel(&netlink.Route{Dst: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}, Table: mainTable, Scope: netlink.SCOPE_LINK})
	}
	if !deleteLink {
		return errors.Join(errs...)
	}
	if l, err := netlinksafe.LinkByName(hostName); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", hostName, err))
		}
	}
	return errors.Join(errs...)
}

// prevResult parses the configuration's prevResult once; nil when there
// is none or it cannot be read.
func prevResult(conf *NetConf) *current.Result {
	if conf.prevParsed {
		return conf.prev
	}
	conf.prevParsed = true
	if conf.RawPrevResult == nil {
		return nil
	}
	if err := version.ParsePrevResult(&conf.NetConf); err != nil {
		return nil
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil
	}
	conf.prev = prev
	return prev
}

// fromPrevResult recovers the pod's address and route table from a
// prevResult in the VPC CNI's encoding.
func fromPrevResult(conf *NetConf, ifName string) (netip.Addr, int, string) {
	prev := prevResult(conf)
	if prev == nil {
		return netip.Addr{}, 0, ""
	}
	var ip netip.Addr
	table, host := mainTable, ""
	for i, itf := range prev.Interfaces {
		if itf.Sandbox == "" && host == "" && !strings.HasPrefix(itf.Name, "dummy") {
			host = itf.Name
		}
		if itf.Name == ifName && itf.Sandbox != "" {
			if t, err := strconv.Atoi(itf.Mac); err == nil && t > 1 {
				table = t
			}
			for _, c := range prev.IPs {
				if c.Interface != nil && *c.Interface == i {
					if a, ok := netip.AddrFromSlice(c.Address.IP); ok {
						ip = a.Unmap()
					}
				}
			}
		}
	}
	return ip, table, host
}

// CmdDel is DEL: it releases the address and removes the pod's rules and
// host route. It is idempotent, and tolerant of a missing netns, a missing
// link, ipamd not knowing the pod or being unreachable (it then tears down
// from prevResult, as the VPC CNI does).
func CmdDel(args *skel.CmdArgs) error {
	conf, k, err := loadArgs(args)
	if err != nil {
		return err
	}
	log, done := logger(conf)
	defer done()
	ns, name := podIdentity(k, args)
	// A branch ENI pod is torn down from its prevResult alone, never
	// asking ipamd (as the VPC CNI does: the branch is the controller's).
	if vid, ip, ok := branchFromPrevResult(conf, args.IfName, ns, name); ok {
		return delBranch(args, log.With("from", "prevResult"), ns+"/"+name, ip, vid)
	}
	hostName := HostVethName(conf.VethPrefix, ns, name)
	ip, _, prevHost := fromPrevResult(conf, args.IfName)
	vid := 0
	if prevHost != "" {
		hostName = prevHost
	}
	conn, derr := dial(conf)
	if derr == nil {
		defer conn.Close()
		ctx, cancel := callCtx()
		defer cancel()
		reply, err := rpc.NewCNIBackendClient(conn).DelNetwork(ctx, &rpc.DelNetworkRequest{
			ClientVersion: vversion.Version, K8S_POD_NAME: name, K8S_POD_NAMESPACE: ns, K8S_POD_INFRA_CONTAINER_ID: string(k.K8S_POD_INFRA_CONTAINER_ID),
			K8S_POD_UID: string(k.K8S_POD_UID), ContainerID: args.ContainerID, NetworkName: conf.Name, IfName: args.IfName, Reason: "PodDeleted",
		})
		switch {
		case err == nil && len(reply.IPAllocationMetadata) > 0:
			m := reply.IPAllocationMetadata[0]
			if a, perr := netip.ParseAddr(m.IPv4Addr); perr == nil {
				ip = a
			}
			vid = int(reply.PodVlanId)
		case err != nil && strings.Contains(err.Error(), "datastore: unknown pod"):
			log.Info("DEL: ipamd has no record of the pod", "pod", ns+"/"+name)
		case err != nil:
			log.Warn("DEL: ipamd DelNetwork failed; tearing down from prevResult", "err", err)
		}
	} else {
		log.Warn("DEL: ipamd unreachable; tearing down from prevResult", "err", derr)
	}
	if vid != 0 { // ipamd knew it as a branch pod
		return delBranch(args, log.With("from", "ipamd"), ns+"/"+name, ip, vid)
	}
	// The veth goes with the pod's netns, which the runtime deletes after
	// DEL (as with the VPC CNI); deleting it here would double DEL's cost.
	if err := teardownHost(hostName, ip, false); err != nil {
		return types.NewError(types.ErrInternal, "del cmd: failed on tear down pod network", err.Error())
	}
	log.Info("DEL", "pod", ns+"/"+name, "ip", ip.String())
	return nil
}

// CmdStatus is STATUS (CNI 1.1): ready when ipamd's gRPC health says so.
func CmdStatus(args *skel.CmdArgs) error {
	conf, err := LoadConf(args.StdinData)
	if err != nil {
		return err
	}
	conn, err := dial(conf)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "ipamd is not reachable", err.Error())
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		detail := fmt.Sprint(err)
		if r != nil {
			detail = r.Status.String()
		}
		return types.NewError(types.ErrPluginNotAvailable, "ipamd is not serving", detail)
	}
	return nil
}
