package ipamd

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestPoolArithmetic pins the VPC CNI's warm-pool decisions (m5.large:
// 9 addresses per ENI, or 9 prefixes of 16 in prefix mode).
func TestPoolArithmetic(t *testing.T) {
	for _, tc := range []struct {
		name          string
		c             Config
		s             Stats
		low, high     bool
		short, over   int
		removeENIGate bool
	}{
		{"defaults, idle primary full", Config{WarmENITarget: 1}, Stats{TotalIPs: 9}, false, false, 0, 0, false},
		{"defaults, one pod", Config{WarmENITarget: 1}, Stats{TotalIPs: 9, AssignedIPs: 1}, true, false, 0, 0, false},
		{"defaults, two ENIs one pod", Config{WarmENITarget: 1}, Stats{TotalIPs: 18, AssignedIPs: 1}, false, false, 0, 0, false},
		{"defaults, three ENIs idle", Config{WarmENITarget: 1}, Stats{TotalIPs: 27}, false, false, 0, 0, true},
		{"WARM_ENI_TARGET=0 empty", Config{WarmENITarget: 0}, Stats{}, true, false, 0, 0, false},
		{"warm 2 min 12 at start", Config{WarmIPTarget: 2, MinimumIPTarget: 12}, Stats{}, true, false, 12, 0, true},
		{"warm 2 min 12 twelve pods", Config{WarmIPTarget: 2, MinimumIPTarget: 12}, Stats{TotalIPs: 12, AssignedIPs: 12}, true, false, 2, 0, true},
		{"warm 2 min 12 surplus", Config{WarmIPTarget: 2, MinimumIPTarget: 12}, Stats{TotalIPs: 18, AssignedIPs: 3}, false, true, 0, 6, true},
		// A cooling address is not warm (the VPC CNI counts it, and its
		// next pod fails until the cooldown ends).
		{"warm 1, the free address cooling", Config{WarmIPTarget: 1, MinimumIPTarget: 1}, Stats{TotalIPs: 1, CooldownIPs: 1}, true, false, 1, 0, true},
		{"warm 2 never below minimum", Config{WarmIPTarget: 2, MinimumIPTarget: 12}, Stats{TotalIPs: 12}, false, false, 0, 0, true},
		{"PD warm prefix 1 at start", Config{EnablePrefixDelegation: true, WarmPrefixTarget: 1}, Stats{}, true, false, 0, 0, false},
		{"PD one prefix free", Config{EnablePrefixDelegation: true, WarmPrefixTarget: 1}, Stats{TotalIPs: 16, TotalPrefixes: 1, FreePrefixes: 1}, false, false, 0, 0, false},
		{"PD one pod", Config{EnablePrefixDelegation: true, WarmPrefixTarget: 1}, Stats{TotalIPs: 16, AssignedIPs: 1, TotalPrefixes: 1}, true, false, 0, 0, false},
		{"PD two spare prefixes", Config{EnablePrefixDelegation: true, WarmPrefixTarget: 1}, Stats{TotalIPs: 48, AssignedIPs: 1, TotalPrefixes: 3, FreePrefixes: 2}, false, true, 0, 0, false},
		{"PD warm IP 5", Config{EnablePrefixDelegation: true, WarmIPTarget: 5}, Stats{TotalIPs: 16, AssignedIPs: 14, TotalPrefixes: 1}, true, false, 1, 0, true},
		// m5.large's max pods (29, from eni-max-pods.txt) caps the pool in
		// prefix mode too: 17 pods on 2 prefixes are not "low".
		{"PD max pods reached", Config{EnablePrefixDelegation: true, WarmPrefixTarget: 1, MaxPods: 29}, Stats{TotalIPs: 32, AssignedIPs: 17, TotalPrefixes: 2}, false, false, 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &Daemon{c: &tc.c, maxIPsPerENI: 9, ds: NewDataStore(tc.c.EnablePrefixDelegation, 0, nil)}
			if tc.c.EnablePrefixDelegation {
				d.maxPrefixesPerENI, d.maxIPsPerENI = 9, 144
			}
			short, over, warmDefined := d.targetState(tc.s)
			if got := d.tooLow(tc.s); got != tc.low {
				t.Errorf("tooLow = %v, want %v", got, tc.low)
			}
			if got := d.tooHigh(tc.s); got != tc.high {
				t.Errorf("tooHigh = %v, want %v", got, tc.high)
			}
			if warmDefined && (short != tc.short || over != tc.over) {
				t.Errorf("short, over = %d, %d; want %d, %d", short, over, tc.short, tc.over)
			}
			if got := d.shouldRemoveENI(tc.s); got != tc.removeENIGate {
				t.Errorf("shouldRemoveENI = %v, want %v", got, tc.removeENIGate)
			}
		})
	}
}

func TestDataStoreAssignment(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var saved Checkpoint
	fail := false
	ds := NewDataStore(false, 30*time.Second, func(ck Checkpoint) error {
		if fail {
			return errors.New("disk full")
		}
		saved = ck
		return nil
	})
	ds.now = func() time.Time { return now }
	if err := ds.AddENI(&ENI{ID: "eni-1", IsPrimary: true}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"10.0.0.10", "10.0.0.11"} {
		_ = ds.AddCIDR("eni-1", netip.MustParsePrefix(a+"/32"), false)
	}
	k1 := IPAMKey{"aws-cni", "c1", "eth0"}
	a1, _, err := ds.AssignPodIP(k1, IPAMMetadata{K8SPodName: "p1"})
	if err != nil || a1.String() != "10.0.0.10" {
		t.Fatalf("first = %v, %v", a1, err)
	}
	if again, _, _ := ds.AssignPodIP(k1, IPAMMetadata{}); again != a1 {
		t.Fatalf("ADD not idempotent: %v then %v", a1, again)
	}
	if len(saved.Allocations) != 1 || saved.Allocations[0].IPv4 != "10.0.0.10" {
		t.Fatalf("checkpoint = %+v", saved)
	}
	if _, _, err := ds.UnassignPodIP(k1); err != nil {
		t.Fatal(err)
	}
	// 10.0.0.10 cools down; the next pod gets .11, the one after none.
	a2, _, _ := ds.AssignPodIP(IPAMKey{"aws-cni", "c2", "eth0"}, IPAMMetadata{})
	if a2.String() != "10.0.0.11" {
		t.Fatalf("second = %v (cooling address reused?)", a2)
	}
	if _, _, err := ds.AssignPodIP(IPAMKey{"aws-cni", "c3", "eth0"}, IPAMMetadata{}); !errors.Is(err, ErrNoAvailableIP) {
		t.Fatalf("want ErrNoAvailableIP, got %v", err)
	}
	if s := ds.GetStats(); s.TotalIPs != 2 || s.AssignedIPs != 1 || s.CooldownIPs != 1 {
		t.Fatalf("stats %+v", s)
	}
	// The cooldown is in the checkpoint: a datastore restored from it (a
	// restart) still keeps 10.0.0.10 away from new pods.
	if len(saved.Cooling) != 1 || saved.Cooling[0].IPv4 != "10.0.0.10" || saved.Cooling[0].Released != now.UnixNano() {
		t.Fatalf("checkpoint cooling = %+v", saved.Cooling)
	}
	restored := NewDataStore(false, 30*time.Second, nil)
	restored.now = func() time.Time { return now.Add(10 * time.Second) }
	_ = restored.AddENI(&ENI{ID: "eni-1", IsPrimary: true})
	for _, a := range []string{"10.0.0.10", "10.0.0.11"} {
		_ = restored.AddCIDR("eni-1", netip.MustParsePrefix(a+"/32"), false)
	}
	if dropped, err := restored.Restore(saved); err != nil || len(dropped) != 0 {
		t.Fatalf("restore: %v %v", dropped, err)
	}
	if a, _, err := restored.AssignPodIP(IPAMKey{"aws-cni", "r1", "eth0"}, IPAMMetadata{}); !errors.Is(err, ErrNoAvailableIP) {
		t.Fatalf("after a restart a cooling address went to a new pod: %v %v", a, err)
	}
	restored.now = func() time.Time { return now.Add(31 * time.Second) }
	if a, _, err := restored.AssignPodIP(IPAMKey{"aws-cni", "r1", "eth0"}, IPAMMetadata{}); err != nil || a.String() != "10.0.0.10" {
		t.Fatalf("after the cooldown = %v, %v", a, err)
	}
	now = now.Add(31 * time.Second)
	a3, _, err := ds.AssignPodIP(IPAMKey{"aws-cni", "c3", "eth0"}, IPAMMetadata{})
	if err != nil || a3.String() != "10.0.0.10" {
		t.Fatalf("after cooldown = %v, %v", a3, err)
	}
	// A failed checkpoint write rolls the assignment back.
	_, _, _ = ds.UnassignPodIP(IPAMKey{"aws-cni", "c3", "eth0"})
	now = now.Add(time.Minute)
	fail = true
	if _, _, err := ds.AssignPodIP(IPAMKey{"aws-cni", "c4", "eth0"}, IPAMMetadata{}); err == nil {
		t.Fatal("assignment survived a failed checkpoint")
	}
	fail = false
	if s := ds.GetStats(); s.AssignedIPs != 1 {
		t.Fatalf("after rollback %+v", s)
	}
	if _, _, err := ds.UnassignPodIP(IPAMKey{"aws-cni", "nope", "eth0"}); !errors.Is(err, ErrUnknownPod) {
		t.Fatalf("want ErrUnknownPod, got %v", err)
	}
	if err := ds.DelENI("eni-1"); !errors.Is(err, ErrENIInUse) {
		t.Fatalf("deleting an ENI in use: %v", err)
	}
}

// TestFreeENIWithPrefixes: with prefix delegation, an ENI without pods is
// freed even when the available addresses are fewer than two ENIs' worth
// (the VPC CNI's CheckFreeableENIexists), unless its free prefixes are the
// ones WARM_PREFIX_TARGET needs.
func TestFreeENIWithPrefixes(t *testing.T) {
	c := Config{EnablePrefixDelegation: true, WarmPrefixTarget: 1}
	d := &Daemon{c: &c, maxPrefixesPerENI: 2, maxIPsPerENI: 32, ds: NewDataStore(true, 0, nil)}
	_ = d.ds.AddENI(&ENI{ID: "eni-1", IsPrimary: true})
	_ = d.ds.AddENI(&ENI{ID: "eni-2", DeviceNumber: 1})
	_ = d.ds.AddCIDR("eni-1", netip.MustParsePrefix("10.0.0.16/28"), true)
	_ = d.ds.AddCIDR("eni-2", netip.MustParsePrefix("10.0.0.32/28"), true)
	if _, _, err := d.ds.AssignPodIP(IPAMKey{"aws-cni", "c1", "eth0"}, IPAMMetadata{}); err != nil {
		t.Fatal(err)
	}
	s := d.ds.GetStats()
	if !d.shouldRemoveENI(s) {
		t.Fatalf("gate closed with an ENI without pods (stats %+v)", s)
	}
	if e := d.ds.removableENI(0, 0, 0, c.WarmPrefixTarget); e != nil {
		t.Fatalf("freed %s: its prefix is the only free one (WARM_PREFIX_TARGET=1)", e.ID)
	}
	_ = d.ds.AddCIDR("eni-1", netip.MustParsePrefix("10.0.0.48/28"), true)
	if e := d.ds.removableENI(0, 0, 0, c.WarmPrefixTarget); e == nil || e.ID != "eni-2" {
		t.Fatalf("removable = %v, want eni-2 (eni-1 has a free prefix now)", e)
	}
}

// TestSubnetUsable pins the VPC CNI's subnet discovery rule.
func TestSubnetUsable(t *testing.T) {
	for _, tc := range []struct {
		tags    map[string]string
		primary bool
		cluster string
		want    bool
	}{
		{nil, true, "", true},
		{nil, false, "", false},
		{map[string]string{TagSubnetCNI: "0"}, true, "", false},
		{map[string]string{TagSubnetCNI: "1"}, false, "", true},
		{map[string]string{TagSubnetCNI: ""}, false, "", false},
		{map[string]string{TagSubnetCNI: "1", "kubernetes.io/cluster/other": "shared"}, false, "mine", false},
		{map[string]string{TagSubnetCNI: "1", "kubernetes.io/cluster/mine": "shared"}, false, "mine", true},
		{map[string]string{TagSubnetCNI: "1", "kubernetes.io/cluster/other": "shared"}, false, "", true},
	} {
		if got := subnetUsable(tc.tags, tc.primary, tc.cluster); got != tc.want {
			t.Errorf("subnetUsable(%v, primary %v, cluster %q) = %v, want %v", tc.tags, tc.primary, tc.cluster, got, tc.want)
		}
	}
}

// TestManagedENI pins the VPC CNI's rule for which attached ENIs ipamd
// manages, with and without MANAGE_UNTAGGED_ENI.
func TestManagedENI(t *testing.T) {
	mine := map[string]string{TagInstanceID: "i-1"}
	for _, tc := range []struct {
		name    string
		id      string
		tags    map[string]string
		on, off bool // managed with MANAGE_UNTAGGED_ENI true, false
	}{
		{"primary, even tagged no_manage", "eni-p", map[string]string{TagNoManage: "true"}, true, true},
		{"no_manage=true", "eni-2", map[string]string{TagNoManage: "true", TagInstanceID: "i-1"}, false, false},
		{"no_manage=false wins over a foreign instance tag", "eni-2", map[string]string{TagNoManage: "false", TagInstanceID: "i-9"}, true, true},
		{"this instance's tag", "eni-2", mine, true, true},
		{"another instance's tag", "eni-2", map[string]string{TagInstanceID: "i-9"}, true, false},
		{"untagged", "eni-2", nil, true, false},
	} {
		for _, manage := range []bool{true, false} {
			d := &Daemon{c: &Config{ManageUntaggedENI: manage}, primaryENI: "eni-p", instanceID: "i-1"}
			want := map[bool]bool{true: tc.on, false: tc.off}[manage]
			if got := d.managedENI(tc.id, tc.tags); got != want {
				t.Errorf("%s, MANAGE_UNTAGGED_ENI=%v: managed %v, want %v", tc.name, manage, got, want)
			}
		}
	}
}

// TestAPIMetricLabels pins the VPC CNI's labels on ipamd's AWS call
// metrics: EC2 calls by action with status "200" or the error code, errors
// counted only with an AWS error code; IMDS reads' latency under
// GetMetadata and their errors under the VPC CNI's name for the read.
func TestAPIMetricLabels(t *testing.T) {
	m := newMetrics("")
	c := &cloud{m: m, lim: newLimiter(1000, 1000)}
	ctx := context.Background()
	throttled := &smithy.GenericAPIError{Code: "RequestLimitExceeded"}
	_ = c.timed(ctx, "AssignPrivateIpAddresses", func() error { return nil })
	_ = c.timed(ctx, "AssignPrivateIpAddresses", func() error { return throttled })
	_ = c.timed(ctx, "CreateNetworkInterface", func() error { return errors.New("connection reset") })
	_ = c.imdsCall(imdsAPIName("network/interfaces/macs/0e:aa/local-ipv4s"), func() error { return &smithy.GenericAPIError{Code: "NotFound"} })
	for _, tc := range []struct {
		what string
		got  float64
		want float64
	}{
		{"errors: AssignPrivateIpAddresses RequestLimitExceeded", testutil.ToFloat64(m.apiErr.WithLabelValues("AssignPrivateIpAddresses", "RequestLimitExceeded")), 1},
		{"errors: IMDS local-ipv4s", testutil.ToFloat64(m.apiErr.WithLabelValues("GetLocalIPv4s", "NotFound")), 1},
		{"error series (none for an error without a code)", float64(testutil.CollectAndCount(m.apiErr)), 2},
		{"latency series: Assign 200, Assign RequestLimitExceeded, Create \"\", GetMetadata NotFound", float64(testutil.CollectAndCount(m.apiLatency)), 4},
		{"EC2 requests", float64(testutil.CollectAndCount(m.ec2Req)), 2},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %v, want %v", tc.what, tc.got, tc.want)
		}
	}
	for path, want := range map[string]string{"mac": "GetMAC", "network/interfaces/macs/": "GetMACs", "network/interfaces/macs/0e:aa/": "GetMACImdsFields",
		"network/interfaces/macs/0e:aa/security-group-ids": "GetSecurityGroupIDs", "placement/availability-zone": "GetAZ", "public-hostname": "GetMetadata"} {
		if got := imdsAPIName(path); got != want {
			t.Errorf("imdsAPIName(%q) = %s, want %s", path, got, want)
		}
	}
}

// TestKnownLimits: ipamd knows the instance types of its table without
// EC2 (the cloud here has no EC2 client: a call would panic), as the VPC
// CNI knows those of its generated table.
func TestKnownLimits(t *testing.T) {
	c := &cloud{}
	for typ, want := range map[string][2]int{"m5.large": {3, 10}, "t3.nano": {2, 2}, "m5.4xlarge": {8, 30}} {
		enis, per, err := c.instanceLimits(context.Background(), typ)
		if err != nil || enis != want[0] || per != want[1] {
			t.Errorf("%s: %d ENIs, %d per ENI, %v; want %v", typ, enis, per, err, want)
		}
	}
	if !trunkingCompatible("m5.large") || trunkingCompatible("t3.nano") || !trunkingCompatible("x9.unknown") {
		t.Error("trunking: m5.large yes, t3.nano no, a type missing from the table yes (as aws-node)")
	}
	if n := len(knownLimits()); n < 1000 {
		t.Errorf("%d types in limits.tsv; the VPC CNI's table has over 1000", n)
	}
}
