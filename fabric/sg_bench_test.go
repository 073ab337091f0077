package fabric_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/netx"
)

// BenchmarkSecurityGroups prints how long a rule change takes to be
// enforced on packets (p50/p99, allowing and revoking), and TCP throughput
// through a filtered ENI next to an unfiltered fabric's, in the same run.
func BenchmarkSecurityGroups(b *testing.B) {
	for range b.N {
		name := uniqueName()
		b.Cleanup(func() { _ = fabric.GC(name) })
		w := newBenchWorld(b, name)
		src, dst := w.run(b), w.run(b)
		w.sync(b)
		web := w.group(b, "web")
		w.setGroups(b, dst, web)
		w.sync(b)
		srcNS, dstNS := w.ns(b, src.ID), w.ns(b, dst.ID)

		allow, revoke := ruleApplyTimes(b, w, web, srcNS, dstNS, dst.PrivateIP, 30)
		p := func(d []time.Duration, q float64) float64 {
			sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
			return ms(d[min(len(d)-1, int(q*float64(len(d))))])
		}
		fmt.Printf("BENCH sg_rule_apply_ms_p50 %.2f ms\n", p(allow, 0.5))
		fmt.Printf("BENCH sg_rule_apply_ms_p99 %.2f ms\n", p(allow, 0.99))
		fmt.Printf("BENCH sg_rule_revoke_ms_p50 %.2f ms\n", p(revoke, 0.5))
		fmt.Printf("BENCH sg_rule_revoke_ms_p99 %.2f ms\n", p(revoke, 0.99))

		// Throughput: dst in five groups of twenty rules each, the one
		// that admits the stream last; then the same on a fabric without
		// the table. Alternated, medians.
		var groups []string
		for g := range 5 {
			id := w.group(b, fmt.Sprintf("g%d", g))
			var rules []model.SGRule
			for i := range 20 {
				port := 20000 + 100*g + i
				rules = append(rules, model.SGRule{Protocol: "tcp", FromPort: port, ToPort: port, CIDR: netip.MustParsePrefix("10.0.0.0/16")})
			}
			if _, err := w.r.AuthorizeRules(id, false, rules); err != nil {
				b.Fatal(err)
			}
			groups = append(groups, id)
		}
		last := model.SGRule{Protocol: "tcp", FromPort: 5201, ToPort: 5201, CIDR: netip.MustParsePrefix("10.0.0.0/16")}
		if _, err := w.r.AuthorizeRules(groups[4], false, []model.SGRule{last}); err != nil {
			b.Fatal(err)
		}
		w.setGroups(b, dst, groups...)
		w.sync(b)

		wu := newBenchWorld(b, name[:len(name)-1]+"u", func(c *fabric.Config) { c.Unfiltered = true })
		usrc, udst := wu.run(b), wu.run(b)
		wu.sync(b)
		usrcNS, udstNS := wu.ns(b, usrc.ID), wu.ns(b, udst.ID)

		var filtered, unfiltered []float64
		for range 5 {
			filtered = append(filtered, throughput(b, srcNS, dstNS, dst.PrivateIP))
			unfiltered = append(unfiltered, throughput(b, usrcNS, udstNS, udst.PrivateIP))
		}
		sort.Float64s(filtered)
		sort.Float64s(unfiltered)
		fmt.Printf("BENCH sg_filtered_tcp_gbps %.2f Gbit/s\n", filtered[2])
		fmt.Printf("BENCH sg_unfiltered_tcp_gbps %.2f Gbit/s\n", unfiltered[2])
		fmt.Printf("BENCH sg_filtered_vs_unfiltered %.1f %% (target: within 10 %%)\n", 100*filtered[2]/unfiltered[2])
	}
}

func (w *benchWorld) group(b *testing.B, name string) string {
	g, err := w.r.CreateSecurityGroup(model.CreateSecurityGroupInput{VPCID: w.vpc(b), Name: name, Description: name})
	if err != nil {
		b.Fatal(err)
	}
	return g.ID
}

func (w *benchWorld) vpc(b *testing.B) string {
	for _, s := range w.r.Subnets() {
		if s.ID == w.subnet {
			return s.VPCID
		}
	}
	b.Fatalf("no subnet %s", w.subnet)
	return ""
}

func (w *benchWorld) setGroups(b *testing.B, inst model.Instance, groups ...string) {
	if err := w.r.ModifyNetworkInterfaceAttribute(model.ModifyNetworkInterfaceInput{ENIID: inst.PrimaryENI, SecurityGroups: groups}); err != nil {
		b.Fatal(err)
	}
}

func (w *benchWorld) ns(b *testing.B, inst string) ns.NetNS {
	p, ok := w.f.NodeNamespace(inst)
	if !ok {
		b.Fatalf("no namespace for %s", inst)
	}
	n, err := netx.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = n.Close() })
	return n
}

// ruleApplyTimes authorizes and revokes a UDP rule n times while the source
// sends a datagram on a new flow (a new source port) every 100 µs, each
// stamped with its send time. Allow: from the call to the first datagram
// received that was sent after it. Revoke: from the call to the last
// datagram received that was sent after it (0 when none was).
func ruleApplyTimes(b *testing.B, w *benchWorld, group string, srcNS, dstNS ns.NetNS, dst netip.Addr, n int) (allow, revoke []time.Duration) {
	pc, err := netx.ListenPacket(dstNS, "udp4", ":9000")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	epoch := time.Now()
	var mu sync.Mutex
	var arrivals [][2]time.Duration // sent, received (since epoch)
	go func() {
		buf := make([]byte, 16)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n == 8 {
				mu.Lock()
				arrivals = append(arrivals, [2]time.Duration{time.Duration(binary.BigEndian.Uint64(buf)), time.Since(epoch)})
				mu.Unlock()
			}
		}
	}()
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		to := &net.UDPAddr{IP: dst.AsSlice(), Port: 9000}
		msg := make([]byte, 8)
		for !stop.Load() {
			_ = srcNS.Do(func(ns.NetNS) error {
				c, err := net.ListenUDP("udp4", nil)
				if err != nil {
					return err
				}
				binary.BigEndian.PutUint64(msg, uint64(time.Since(epoch)))
				_, _ = c.WriteTo(msg, to)
				return c.Close()
			})
			time.Sleep(100 * time.Microsecond)
		}
	}()
	defer func() { stop.Store(true); <-done }()
	since := func(t0 time.Duration) (first, last time.Duration, ok bool) {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range arrivals {
			if a[0] < t0 {
				continue
			}
			if !ok || a[1] < first {
				first = a[1]
			}
			last, ok = max(last, a[1]), true
		}
		return
	}
	rule := model.SGRule{Protocol: "udp", FromPort: 9000, ToPort: 9000, CIDR: netip.MustParsePrefix("10.0.0.0/16")}
	for range n {
		t0 := time.Since(epoch)
		added, err := w.r.AuthorizeRules(group, false, []model.SGRule{rule})
		if err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			if first, _, ok := since(t0); ok {
				allow = append(allow, first-t0)
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("an authorized rule never admitted a datagram")
			}
			time.Sleep(200 * time.Microsecond)
		}
		t1 := time.Since(epoch)
		if _, err := w.r.RevokeRules(group, false, nil, []string{added[0].ID}); err != nil {
			b.Fatal(err)
		}
		w.sync(b)
		time.Sleep(20 * time.Millisecond)
		if _, last, ok := since(t1); ok {
			revoke = append(revoke, last-t1)
		} else {
			revoke = append(revoke, 0)
		}
	}
	return allow, revoke
}

// throughput streams TCP from src to dst for half a second; Gbit/s.
func throughput(b *testing.B, srcNS, dstNS ns.NetNS, dst netip.Addr) float64 {
	ln, err := netx.Listen(dstNS, "tcp4", ":5201")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- 0
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	c, err := netx.DialContextIn(srcNS)(b.Context(), "tcp4", net.JoinHostPort(dst.String(), "5201"))
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 256<<10)
	t0 := time.Now()
	for time.Since(t0) < 500*time.Millisecond {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	_ = c.Close()
	n := <-got
	return float64(n) * 8 / time.Since(t0).Seconds() / 1e9
}
