package fabric

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/netx"
)

// rtProto marks the routes the fabric owns, so reconciling can tell them
// from the kernel's own.
const rtProto = netlink.RouteProtocol(118)

// router is one VPC's router namespace.
type router struct {
	vpcID    string
	nsName   string
	inetName string
	ns       ns.NetNS
	h        netlinksafe.Handle
	servers  []*http.Server
	gateways map[netip.Addr]bool
	filter   *filterState   // the security groups table as committed; nil: rebuild
	nft      *nftables.Conn // lasting netlink socket for the table
}

func (r *router) close() {
	for _, s := range r.servers {
		_ = s.Close()
	}
	r.servers = nil
	_ = r.dropFilter(nil)
	if r.h.Handle != nil {
		r.h.Close()
		r.h = netlinksafe.Handle{}
	}
	if r.ns != nil {
		_ = r.ns.Close()
	}
}

// openOrCreate opens the named namespace, creating it when missing; it
// reports whether it already existed.
func openOrCreate(name string) (ns.NetNS, bool, error) {
	if _, err := os.Stat(netx.Path(name)); err == nil {
		n, err := netx.Open(name)
		return n, true, err
	}
	n, err := netx.CreateNamed(name)
	return n, false, err
}

func (f *Fabric) vpc(id string) (model.VPC, error) {
	if v, ok := f.vpcs[id]; ok {
		return v, nil
	}
	for _, v := range f.region.VPCs() {
		f.vpcs[v.ID] = v
	}
	if v, ok := f.vpcs[id]; ok {
		return v, nil
	}
	return model.VPC{}, fmt.Errorf("vpc %s not in the region", id)
}

func (f *Fabric) subnet(id string) (model.Subnet, error) {
	if s, ok := f.subnets[id]; ok {
		return s, nil
	}
	for _, s := range f.region.Subnets() {
		f.subnets[s.ID] = s
	}
	if s, ok := f.subnets[id]; ok {
		return s, nil
	}
	return model.Subnet{}, fmt.Errorf("subnet %s not in the region", id)
}

// gatewayOf returns a subnet's router address (the network address + 1).
func gatewayOf(p netip.Prefix) netip.Addr { return p.Masked().Addr().Next() }

// ensureRouter returns the VPC's router, creating its namespace, sysctls,
// service addresses, listeners and internet peer as needed; f.mu is held.
func (f *Fabric) ensureRouter(vpcID string) (*router, error) {
	if r, ok := f.routers[vpcID]; ok {
		return r, nil
	}
	v, err := f.vpc(vpcID)
	if err != nil {
		return nil, err
	}
	r := &router{vpcID: vpcID, nsName: f.cfg.Name + "-" + vpcID, gateways: map[netip.Addr]bool{}}
	if r.ns, _, err = openOrCreate(r.nsName); err != nil {
		return nil, fmt.Errorf("router for %s: %w", vpcID, err)
	}
	fail := func(err error) (*router, error) {
		r.close()
		return nil, fmt.Errorf("router for %s: %w", vpcID, err)
	}
	if r.h, err = netx.Handle(r.ns); err != nil {
		return fail(err)
	}
	for _, kv := range [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv4.conf.all.rp_filter", "0"},
		{"net.ipv4.conf.default.rp_filter", "0"},
		{"net.ipv4.conf.all.send_redirects", "0"},
		{"net.ipv4.conf.default.send_redirects", "0"},
		// The fabric models IPv4 only; no IPv6 link-local chatter from the VPC.
		{"net.ipv6.conf.all.disable_ipv6", "1"},
		{"net.ipv6.conf.default.disable_ipv6", "1"},
	} {
		if err := netx.Sysctl(r.ns, kv[0], kv[1]); err != nil {
			return fail(err)
		}
	}
	lo, err := r.h.LinkByName("lo")
	if err != nil {
		return fail(err)
	}
	for _, a := range []string{IMDSAddr, EC2Addr} {
		if err := r.h.AddrReplace(lo, &netlink.Addr{IPNet: hostNet(netip.MustParseAddr(a))}); err != nil {
			return fail(fmt.Errorf("add %s to lo: %w", a, err))
		}
	}
	// Addresses in the VPC that no ENI owns go nowhere (and fail the
	// source check), rather than out to the internet.
	for _, c := range v.CIDRBlocks {
		rt := &netlink.Route{Dst: prefixNet(c), Type: unix.RTN_BLACKHOLE, Protocol: rtProto}
		if err := r.h.RouteReplace(rt); err != nil {
			return fail(fmt.Errorf("blackhole %s: %w", c, err))
		}
	}
	if f.cfg.Internet {
		if err := f.ensureInternet(r); err != nil {
			return fail(err)
		}
	}
	if f.cfg.IMDS != nil {
		if err := f.serve(r, IMDSAddr, http.HandlerFunc(f.serveIMDS)); err != nil {
			return fail(err)
		}
	}
	if f.cfg.EC2 != nil {
		if err := f.serve(r, EC2Addr, f.cfg.EC2); err != nil {
			return fail(err)
		}
	}
	f.routers[vpcID] = r
	f.log.Debug("router up", "vpc", vpcID, "netns", r.nsName)
	return r, nil
}

func (f *Fabric) serve(r *router, addr string, h http.Handler) error {
	ln, err := netx.Listen(r.ns, "tcp", net.JoinHostPort(addr, "80"))
	if err != nil {
		return err
	}
	s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if f.cfg.IMDS != nil {
		s.ConnContext = f.cfg.IMDS.ConnContext
	}
	r.servers = append(r.servers, s)
	go func() {
		if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			f.log.Error("serve", "addr", addr, "vpc", r.vpcID, "err", err)
		}
	}()
	return nil
}

// serveIMDS hands a request to the metadata of the instance owning the
// source address, as EC2 does by the ENI a request arrives on.
func (f *Fabric) serveIMDS(w http.ResponseWriter, req *http.Request) {
	host, _, err := net.SplitHostPort(req.RemoteAddr)
	a, perr := netip.ParseAddr(host)
	if err != nil || perr != nil {
		http.Error(w, "bad remote address", http.StatusForbidden)
		return
	}
	id := f.ownerOf(a.Unmap())
	if id == "" {
		http.Error(w, "no instance owns "+host, http.StatusForbidden)
		return
	}
	f.cfg.IMDS.Handler(id).ServeHTTP(w, req)
}

// ensureGateway puts a subnet's gateway address on the router so it
// answers ARP for it on every ENI link.
func (f *Fabric) ensureGateway(r *router, s model.Subnet) error {
	gw := gatewayOf(s.CIDR)
	if r.gateways[gw] {
		return nil
	}
	lo, err := r.h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("router %s: %w", r.vpcID, err)
	}
	if err := r.h.AddrReplace(lo, &netlink.Addr{IPNet: hostNet(gw)}); err != nil {
		return fmt.Errorf("router %s: gateway %s: %w", r.vpcID, gw, err)
	}
	r.gateways[gw] = true
	return nil
}

// ensureInternet adds the internet host namespace, the link to it, and NAT
// of VPC sources leaving on it.
func (f *Fabric) ensureInternet(r *router) error {
	r.inetName = r.nsName + "-inet"
	ins, existed, err := openOrCreate(r.inetName)
	if err != nil {
		return fmt.Errorf("internet host: %w", err)
	}
	defer ins.Close()
	ih, err := netx.Handle(ins)
	if err != nil {
		return fmt.Errorf("internet host: %w", err)
	}
	defer ih.Close()
	if _, err := r.h.LinkByName("igw"); err != nil || !existed {
		if err := r.h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "igw", MTU: 1500}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ins.Fd()))}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("internet link: %w", err)
		}
	}
	igw, err := r.h.LinkByName("igw")
	if err != nil {
		return fmt.Errorf("internet link: %w", err)
	}
	ie, err := ih.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("internet host eth0: %w", err)
	}
	steps := []error{
		r.h.AddrReplace(igw, &netlink.Addr{IPNet: mustNet(NATAddr + "/30")}),
		r.h.LinkSetUp(igw),
		ih.AddrReplace(ie, &netlink.Addr{IPNet: mustNet("198.18.0.2/30")}),
		ih.AddrReplace(ie, &netlink.Addr{IPNet: hostNet(netip.MustParseAddr(InternetHostAddr))}),
		ih.LinkSetUp(ie),
	}
	if err := errors.Join(steps...); err != nil {
		return fmt.Errorf("internet link: %w", err)
	}
	if err := ih.RouteReplace(&netlink.Route{Dst: mustNet("0.0.0.0/0"), Gw: net.ParseIP(NATAddr), LinkIndex: ie.Attrs().Index}); err != nil {
		return fmt.Errorf("internet host default route: %w", err)
	}
	if err := r.h.RouteReplace(&netlink.Route{Dst: mustNet("0.0.0.0/0"), Gw: net.ParseIP("198.18.0.2"), LinkIndex: igw.Attrs().Index, Protocol: rtProto}); err != nil {
		return fmt.Errorf("router default route: %w", err)
	}
	rule := []string{"-t", "nat", "POSTROUTING", "-o", "igw", "-j", "MASQUERADE"}
	check := append([]string{"netns", "exec", r.nsName, "iptables", "-w"}, rule[:2]...)
	check = append(append(check, "-C"), rule[2:]...)
	if exec.Command("ip", check...).Run() != nil {
		add := append([]string{"netns", "exec", r.nsName, "iptables", "-w"}, rule[:2]...)
		add = append(append(add, "-A"), rule[2:]...)
		if out, err := exec.Command("ip", add...).CombinedOutput(); err != nil {
			return fmt.Errorf("internet NAT (iptables, from make deps): %v: %s", err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

func hostNet(a netip.Addr) *net.IPNet {
	return prefixNet(netip.PrefixFrom(a, a.BitLen()))
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func mustNet(s string) *net.IPNet {
	p := netip.MustParsePrefix(s)
	return prefixNet(p)
}
