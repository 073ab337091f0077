package fabric_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/internal/vlan"
)

type benchWorld struct {
	r      *model.Region
	f      *fabric.Fabric
	subnet string
}

func newBenchWorld(b *testing.B, name string, opts ...func(*fabric.Config)) *benchWorld {
	b.Helper()
	r := model.NewRegion(model.Options{Seed: 99})
	v, err := r.CreateVPC(model.CreateVPCInput{CIDR: netip.MustParsePrefix("10.0.0.0/16")})
	if err != nil {
		b.Fatal(err)
	}
	s, err := r.CreateSubnet(model.CreateSubnetInput{VPCID: v.ID, CIDR: netip.MustParsePrefix("10.0.0.0/18")})
	if err != nil {
		b.Fatal(err)
	}
	srv := fakeec2.NewServer(r, fakeec2.ServerOptions{})
	b.Cleanup(func() { _ = srv.Close() })
	cfg := fabric.Config{Name: name, Region: r, IMDS: srv.IMDS(), EC2: srv, VLAN: vlan.BPF{}}
	for _, o := range opts {
		o(&cfg)
	}
	f, err := fabric.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = f.Close() })
	return &benchWorld{r: r, f: f, subnet: s.ID}
}

func (w *benchWorld) sync(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := w.f.WaitSynced(ctx); err != nil {
		b.Fatal(err)
	}
}

func (w *benchWorld) run(b *testing.B) model.Instance {
	insts, err := w.r.RunInstances(model.RunInstancesInput{InstanceType: "m5.large", SubnetID: w.subnet})
	if err != nil {
		b.Fatal(err)
	}
	return insts[0]
}

func (w *benchWorld) attachENI(b *testing.B, inst string, dev int) {
	e, err := w.r.CreateNetworkInterface(model.CreateNetworkInterfaceInput{SubnetID: w.subnet, SecondaryCount: 4})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := w.r.AttachNetworkInterface(model.AttachNetworkInterfaceInput{ENIID: e.ID, InstanceID: inst, DeviceIndex: dev}); err != nil {
		b.Fatal(err)
	}
}

func median(d []time.Duration) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// bareNode is the floor: a namespace and a veth pair born in place with an
// address, links up, by direct netlink calls (no model, no router state).
func bareNode(b *testing.B, prefix string, i int, router netlinksafe.Handle) {
	name := fmt.Sprintf("%s-bare%d", prefix, i)
	nodeNS, err := netx.CreateNamed(name)
	if err != nil {
		b.Fatal(err)
	}
	defer nodeNS.Close()
	h, err := netx.Handle(nodeNS)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	mac, _ := net.ParseMAC(fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8, i&0xff))
	if err := router.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("r%d", i), MTU: fabric.MTU}, PeerName: "eth0", PeerHardwareAddr: mac, PeerNamespace: netlink.NsFd(int(nodeNS.Fd()))}); err != nil {
		b.Fatal(err)
	}
	l, err := h.LinkByName("eth0")
	if err != nil {
		b.Fatal(err)
	}
	addr, _ := netlink.ParseAddr(fmt.Sprintf("10.1.%d.%d/16", i>>8, i&0xff+1))
	if err := h.AddrAdd(l, addr); err != nil {
		b.Fatal(err)
	}
	if err := h.LinkSetUp(l); err != nil {
		b.Fatal(err)
	}
	rl, err := router.LinkByName(fmt.Sprintf("r%d", i))
	if err != nil {
		b.Fatal(err)
	}
	if err := router.LinkSetUp(rl); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkFabric prints instance bring-up, attach-to-link-ready and the
// 50×3 bring-up, next to the bare-netlink floor measured in the same run.
func BenchmarkFabric(b *testing.B) {
	for range b.N {
		name := uniqueName()
		b.Cleanup(func() { _ = fabric.GC(name) })

		// Floor: bare netlink nodes.
		rns, err := netx.CreateNamed(name + "-barer")
		if err != nil {
			b.Fatal(err)
		}
		rh, err := netx.Handle(rns)
		if err != nil {
			b.Fatal(err)
		}
		var bare []time.Duration
		for i := 0; i < 20; i++ {
			t0 := time.Now()
			bareNode(b, name, i, rh)
			bare = append(bare, time.Since(t0))
		}
		rh.Close()
		rns.Close()
		_ = fabric.GC(name)

		w := newBenchWorld(b, name)
		var up, att []time.Duration
		var insts []string
		for i := 0; i < 20; i++ {
			t0 := time.Now()
			in := w.run(b)
			w.sync(b)
			up = append(up, time.Since(t0))
			insts = append(insts, in.ID)
		}
		for i, id := range insts {
			t0 := time.Now()
			w.attachENI(b, id, 1+i%2)
			w.sync(b)
			att = append(att, time.Since(t0))
		}
		if err := w.f.Close(); err != nil {
			b.Fatal(err)
		}

		w50 := newBenchWorld(b, name)
		t0 := time.Now()
		var ids []string
		for i := 0; i < 50; i++ {
			ids = append(ids, w50.run(b).ID)
		}
		for _, id := range ids {
			w50.attachENI(b, id, 1)
			w50.attachENI(b, id, 2)
		}
		w50.sync(b)
		total := time.Since(t0)
		t1 := time.Now()
		if err := w50.f.Close(); err != nil {
			b.Fatal(err)
		}
		down := time.Since(t1)

		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		fmt.Printf("BENCH fabric_instance_bringup_p50 %.2f ms\n", ms(median(up)))
		fmt.Printf("BENCH fabric_bare_netlink_node_p50 %.2f ms\n", ms(median(bare)))
		fmt.Printf("BENCH fabric_eni_attach_to_link_ready_p50 %.2f ms\n", ms(median(att)))
		fmt.Printf("BENCH fabric_50x3_bringup %.0f ms\n", ms(total))
		fmt.Printf("BENCH fabric_50x3_teardown %.0f ms\n", ms(down))
		fmt.Printf("BENCH fabric_peak_rss %.1f MiB\n", float64(ru.Maxrss)/1024)
	}
}
