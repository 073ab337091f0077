package model

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// allocLab is a region with a settable clock, one VPC (10.0.0.0/16 with
// IPv6) and one subnet of the given size.
type allocLab struct {
	t      *testing.T
	r      *Region
	now    time.Time
	subnet string
}

func newAllocLab(t *testing.T, seed uint64, a Allocation, cidr string) *allocLab {
	t.Helper()
	l := &allocLab{t: t, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l.r = NewRegion(Options{Seed: seed, Allocation: a, Now: func() time.Time { return l.now }})
	v, err := l.r.CreateVPC(CreateVPCInput{CIDR: netip.MustParsePrefix("10.0.0.0/16"), AmazonProvidedIPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	v6 := netip.PrefixFrom(v.IPv6CIDRBlocks[0].Addr(), 64)
	s, err := l.r.CreateSubnet(CreateSubnetInput{VPCID: v.ID, CIDR: netip.MustParsePrefix(cidr), IPv6CIDR: v6})
	if err != nil {
		t.Fatal(err)
	}
	l.subnet = s.ID
	return l
}

func (l *allocLab) eni() NetworkInterface {
	l.t.Helper()
	e, err := l.r.CreateNetworkInterface(CreateNetworkInterfaceInput{SubnetID: l.subnet})
	if err != nil {
		l.t.Fatal(err)
	}
	return e
}

func (l *allocLab) assign(eni string, n int) []netip.Addr {
	l.t.Helper()
	got, _, err := l.r.AssignPrivateIPs(AssignPrivateIPsInput{ENIID: eni, Count: n})
	if err != nil {
		l.t.Fatal(err)
	}
	return got
}

func (l *allocLab) unassign(eni string, addrs []netip.Addr) {
	l.t.Helper()
	if err := l.r.UnassignPrivateIPs(eni, addrs, nil); err != nil {
		l.t.Fatal(err)
	}
}

func (l *allocLab) invariants() {
	l.t.Helper()
	if err := l.r.CheckInvariants(); err != nil {
		l.t.Fatal(err)
	}
}

// sequence runs a fixed series of calls and lists every address and prefix
// EC2 handed out, in order.
func sequence(t *testing.T, seed uint64, a Allocation) []string {
	l := newAllocLab(t, seed, a, "10.0.0.0/22")
	var out []string
	add := func(xs ...any) {
		for _, x := range xs {
			switch v := x.(type) {
			case []netip.Addr:
				for _, a := range v {
					out = append(out, a.String())
				}
			case []netip.Prefix:
				for _, p := range v {
					out = append(out, p.String())
				}
			}
		}
	}
	inst, err := l.r.RunInstances(RunInstancesInput{InstanceType: "m5.large", SubnetID: l.subnet})
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, inst[0].PrivateIP.String())
	e, err := l.r.CreateNetworkInterface(CreateNetworkInterfaceInput{SubnetID: l.subnet, SecondaryCount: 3, IPv6Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, e.PrivateIP.String())
	add(e.SecondaryIPs, e.IPv6)
	got := l.assign(e.ID, 5)
	add(got)
	l.unassign(e.ID, got[:3])
	add(l.assign(e.ID, 3))
	_, pf, err := l.r.AssignPrivateIPs(AssignPrivateIPsInput{ENIID: e.ID, PrefixCount: 2})
	if err != nil {
		t.Fatal(err)
	}
	add(pf)
	v6, v6p, err := l.r.AssignIPv6(AssignIPv6Input{ENIID: e.ID, Count: 1, PrefixCount: 1})
	if err != nil {
		t.Fatal(err)
	}
	add(v6, v6p)
	l.invariants()
	return out
}

// TestAllocationReproducible: random with one seed gives one sequence, run
// after run; another seed gives another; lowest is today's lowest-free one.
func TestAllocationReproducible(t *testing.T) {
	a, b := sequence(t, 7, Allocation{}), sequence(t, 7, Allocation{})
	if !slices.Equal(a, b) {
		t.Fatalf("same seed, different sequences:\n%v\n%v", a, b)
	}
	if c := sequence(t, 8, Allocation{}); slices.Equal(a, c) {
		t.Fatalf("seeds 7 and 8 gave the same sequence %v", a)
	}
	low := sequence(t, 7, Allocation{Policy: AllocLowest})
	// The lowest-free sequence fakeec2 has always produced: the instance's
	// primary, the ENI's primary and 3 secondaries, 5 more, 3 after
	// unassigning the first 3 of those (the same 3 come back), then the
	// first two free /28 blocks, and IPv6 interface ids from ::10.
	want := []string{"10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8"}
	if !slices.Equal(low[:5], want) {
		t.Fatalf("lowest starts %v, want %v", low[:5], want)
	}
	if !strings.HasSuffix(low[5], "::10") || !strings.HasSuffix(low[6], "::11") {
		t.Fatalf("lowest IPv6 %v, want ::10 and ::11", low[5:7])
	}
	if want := []string{"10.0.0.9", "10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.9", "10.0.0.10", "10.0.0.11", "10.0.0.16/28", "10.0.0.32/28"}; !slices.Equal(low[7:17], want) {
		t.Fatalf("lowest continues %v, want %v", low[7:17], want)
	}
	if !strings.HasSuffix(low[18], ":1::/80") {
		t.Fatalf("lowest /80 %s, want block 1", low[18])
	}
	// Random does not walk up from the bottom of the subnet.
	if slices.Equal(a[:5], want[:5]) {
		t.Fatalf("random policy handed out the lowest addresses %v", a[:5])
	}
	t.Logf("seed 7 random: %v", a)
}

// TestAllocationAvoidsRecent: under random, an address unassigned from an
// ENI is not handed back by the next assignment while others are free;
// once nothing else is free it is (oldest release first), and after the
// window it is an ordinary free address again. Lowest hands it straight back.
func TestAllocationAvoidsRecent(t *testing.T) {
	l := newAllocLab(t, 3, Allocation{}, "10.0.0.0/24")
	e := l.eni()
	held := l.assign(e.ID, 10)
	var released []netip.Addr
	for round := range 20 {
		l.now = l.now.Add(time.Second)
		gone := held[:5]
		l.unassign(e.ID, gone)
		released = append(released, gone...)
		got := l.assign(e.ID, 5)
		for _, a := range got {
			if slices.Contains(released, a) {
				t.Fatalf("round %d: %s came back within the avoid-recent window while never-used addresses were free", round, a)
			}
		}
		held = append(slices.Clone(held[5:]), got...)
		l.invariants()
	}
	// Exhaust the subnet: 251 usable, 1 ENI primary + 10 held, 100 released.
	for range 251 - 1 - 10 - len(released) {
		if a := l.eni().PrivateIP; slices.Contains(released, a) {
			t.Fatalf("%s reused while never-used addresses were free", a)
		}
	}
	// Only recently released addresses are left: the oldest comes first.
	g := l.eni()
	if g.PrivateIP != released[0] {
		t.Fatalf("with only recent releases free, got %s, want the oldest release %s", g.PrivateIP, released[0])
	}
	l.invariants()

	// After the window the released addresses are ordinary free ones.
	l2 := newAllocLab(t, 3, Allocation{}, "10.0.0.0/28") // 11 usable
	e2 := l2.eni()
	got := l2.assign(e2.ID, 5)
	l2.unassign(e2.ID, got)
	l2.now = l2.now.Add(DefaultAvoidRecent)
	pool := l2.r.subnets[l2.subnet].pool
	again := l2.assign(e2.ID, 5)
	if len(pool.recentAt) != 0 {
		t.Fatalf("%d releases still recent after the window", len(pool.recentAt))
	}
	t.Logf("after the window: released %v, assigned %v", got, again)

	// Lowest: the next assignment returns exactly what was unassigned.
	l3 := newAllocLab(t, 3, Allocation{Policy: AllocLowest}, "10.0.0.0/24")
	e3 := l3.eni()
	first := l3.assign(e3.ID, 5)
	l3.unassign(e3.ID, first)
	if back := l3.assign(e3.ID, 5); !slices.Equal(back, first) {
		t.Fatalf("lowest: unassigned %v, next assignment %v", first, back)
	}
}

// TestAllocationAvoidRecentOff: "0s" turns avoid-recent off: with one
// other address free, a released address comes back about half the time.
func TestAllocationAvoidRecentOff(t *testing.T) {
	off := Duration(0)
	l := newAllocLab(t, 5, Allocation{AvoidRecent: &off}, "10.0.0.0/28")
	e := l.eni()              // 1 of 11
	held := l.assign(e.ID, 9) // 10 of 11: one free
	back := 0
	for range 40 {
		gone := held[0]
		l.unassign(e.ID, []netip.Addr{gone})
		got := l.assign(e.ID, 1)[0]
		if got == gone {
			back++
		}
		held = append(held[1:], got)
	}
	if back == 0 || back == 40 {
		t.Fatalf("without avoid-recent, a released address came back %d of 40 times", back)
	}
}

// TestAllocationPrefixes: random /28 prefixes are aligned, inside the
// subnet, clear of addresses, and a released prefix is not the next one.
func TestAllocationPrefixes(t *testing.T) {
	l := newAllocLab(t, 11, Allocation{}, "10.0.0.0/22")
	e := l.eni()
	l.assign(e.ID, 7) // scattered single addresses poison some blocks
	f := l.eni()
	var all []netip.Prefix
	for range 3 {
		_, pf, err := l.r.AssignPrivateIPs(AssignPrivateIPsInput{ENIID: f.ID, PrefixCount: 3})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, pf...)
	}
	subnet := netip.MustParsePrefix("10.0.0.0/22")
	sorted := true
	for k, p := range all {
		if p.Bits() != 28 || p.Masked() != p || !subnet.Contains(p.Addr()) {
			t.Fatalf("prefix %s is not an aligned /28 of %s", p, subnet)
		}
		sorted = sorted && (k == 0 || all[k-1].Addr().Less(p.Addr()))
	}
	if sorted && all[0] == netip.MustParsePrefix("10.0.0.16/28") {
		t.Fatalf("random prefixes came out lowest-first: %v", all)
	}
	l.invariants()
	if err := l.r.UnassignPrivateIPs(f.ID, nil, all[:1]); err != nil {
		t.Fatal(err)
	}
	_, pf, err := l.r.AssignPrivateIPs(AssignPrivateIPsInput{ENIID: f.ID, PrefixCount: 1})
	if err != nil {
		t.Fatal(err)
	}
	if pf[0] == all[0] {
		t.Fatalf("released prefix %s came straight back", all[0])
	}
	l.invariants()
}

// TestAllocationExplicitWins: named addresses and prefixes are honoured
// under random exactly as before.
func TestAllocationExplicitWins(t *testing.T) {
	l := newAllocLab(t, 1, Allocation{}, "10.0.0.0/24")
	want := netip.MustParseAddr("10.0.0.200")
	e, err := l.r.CreateNetworkInterface(CreateNetworkInterfaceInput{SubnetID: l.subnet, PrivateIP: want})
	if err != nil || e.PrivateIP != want {
		t.Fatalf("explicit primary: %v %v", e.PrivateIP, err)
	}
	addrs := []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("10.0.0.6")}
	got, _, err := l.r.AssignPrivateIPs(AssignPrivateIPsInput{ENIID: e.ID, Addrs: addrs})
	if err != nil || !slices.Equal(got, addrs) {
		t.Fatalf("explicit secondaries: %v %v", got, err)
	}
	_, pf, err := l.r.AssignPrivateIPs(AssignPrivateIPsInput{ENIID: e.ID, Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.96/28")}})
	if err != nil || len(pf) != 1 || pf[0] != netip.MustParsePrefix("10.0.0.96/28") {
		t.Fatalf("explicit prefix: %v %v", pf, err)
	}
	l.invariants()
}

// TestAllocationPolicyChecked: a bad policy is refused naming the field,
// and SetAllocation switches policy at run time.
func TestAllocationPolicyChecked(t *testing.T) {
	neg := Duration(-time.Second)
	for _, a := range []Allocation{{Policy: "first-fit"}, {AvoidRecent: &neg}} {
		if err := a.Check(); err == nil || !strings.Contains(err.Error(), "allocation.") {
			t.Errorf("%+v: error %v, want one naming the field", a, err)
		}
	}
	l := newAllocLab(t, 1, Allocation{}, "10.0.0.0/24")
	if got := l.r.Allocation(); got.Policy != AllocRandom || time.Duration(*got.AvoidRecent) != DefaultAvoidRecent {
		t.Fatalf("default allocation %+v", got)
	}
	if err := l.r.SetAllocation(Allocation{Policy: "nope"}); err == nil {
		t.Fatal("SetAllocation took a bad policy")
	}
	if err := l.r.SetAllocation(Allocation{Policy: AllocLowest}); err != nil {
		t.Fatal(err)
	}
	e := l.eni()
	if e.PrivateIP != netip.MustParseAddr("10.0.0.4") {
		t.Fatalf("after switching to lowest, the first ENI got %s", e.PrivateIP)
	}
}
