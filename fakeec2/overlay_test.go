package fakeec2_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/imds"
	"github.com/vpclab/vpclab/fakeec2/model"
)

// TestIMDSOverlays pins IMDS faults per path: one path stale while the
// rest moves on, an ENI hidden, a ghost MAC and an overridden field, the
// whole tree frozen, each ending with its window; bad overlays refused.
func TestIMDSOverlays(t *testing.T) {
	e := newIMDSEnv(t)
	ctx := context.Background()
	m := e.srv.IMDS()
	p, _ := e.srv.Region().NetworkInterface(*e.inst.NetworkInterfaces[0].NetworkInterfaceId)
	macs := "network/interfaces/macs/"
	ips := macs + p.MAC + "/local-ipv4s"

	// stale: local-ipv4s keeps its value for 5 s, while an attach shows.
	if _, err := m.AddOverlay(imds.Overlay{Instance: e.id, Kind: "stale", Path: "meta-data/network/interfaces/macs/*/local-ipv4s", For: model.Duration(5 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	out, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: &p.ID, SecondaryPrivateIpAddressCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	a := *out.AssignedPrivateIpAddresses[0].PrivateIpAddress
	eni := e.attach(e.id, 1)
	if got := e.must(ips); got != p.PrivateIP.String() {
		t.Fatalf("stale local-ipv4s shows the assignment: %q", got)
	}
	if got := e.must(macs); !strings.Contains(got, eni.MAC) {
		t.Fatalf("macs/ held back with local-ipv4s: %q", got)
	}
	e.wantNotFound(macs + eni.MAC + "/local-ipv4s") // appeared after the overlay: hidden too
	if got := e.must(macs + eni.MAC + "/device-number"); got != "1" {
		t.Fatalf("the new ENI's other fields: %q", got)
	}
	e.clock.Advance(5 * time.Second)
	if got := e.must(ips); got != lines(p.PrivateIP.String(), a) {
		t.Fatalf("after the window: %q", got)
	}

	// hide the attached ENI, set a wrong device number, add a ghost MAC.
	for _, o := range []imds.Overlay{
		{Instance: e.id, Kind: "hide", Path: "meta-data/" + macs + eni.MAC},
		{Instance: e.id, Kind: "set", Path: "meta-data/" + macs + p.MAC + "/device-number", Value: "7"},
		{Instance: e.id, Kind: "set", Path: "meta-data/" + macs + "02:00:00:00:00:99/interface-id", Value: "eni-0ghost"},
	} {
		if _, err := m.AddOverlay(o); err != nil {
			t.Fatal(err)
		}
	}
	got := e.must(macs)
	if strings.Contains(got, eni.MAC) || !strings.Contains(got, "02:00:00:00:00:99/") {
		t.Fatalf("macs/ with a hidden ENI and a ghost: %q", got)
	}
	if d := e.must(macs + p.MAC + "/device-number"); d != "7" {
		t.Fatalf("overridden device-number %q", d)
	}
	m.ClearOverlays(e.id)
	if got := e.must(macs); !strings.Contains(got, eni.MAC) || strings.Contains(got, "02:00:00:00:00:99") {
		t.Fatalf("after clearing: %q", got)
	}

	// freeze: nothing changes for 3 s, then everything shows.
	if _, err := m.AddOverlay(imds.Overlay{Instance: e.id, Kind: "freeze", For: model.Duration(3 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	third := e.attach(e.id, 2)
	if strings.Contains(e.must(macs), third.MAC) {
		t.Fatal("a frozen tree shows a new attach")
	}
	e.clock.Advance(3 * time.Second)
	if !strings.Contains(e.must(macs), third.MAC) {
		t.Fatal("the attach not shown after the freeze")
	}
	if len(m.Overlays()) != 0 {
		t.Fatalf("expired overlays kept: %+v", m.Overlays())
	}

	for _, bad := range []imds.Overlay{{Instance: e.id, Kind: "lag", Path: "x"}, {Instance: e.id, Kind: "hide"}, {Instance: "i-nope", Kind: "freeze"},
		{Instance: e.id, Kind: "set", Path: "meta-data/[", Value: "x"}} {
		if _, err := m.AddOverlay(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// attach creates an ENI and attaches it to instance id at device dev.
func (e *imdsEnv) attach(id string, dev int32) model.NetworkInterface {
	e.t.Helper()
	n := e.eni(nil)
	if _, err := e.ec2.AttachNetworkInterface(context.Background(), &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: n.NetworkInterfaceId, InstanceId: &id, DeviceIndex: &dev}); err != nil {
		e.t.Fatal(err)
	}
	m, err := e.srv.Region().NetworkInterface(*n.NetworkInterfaceId)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// TestIMDSLagPerENI pins that IMDS keeps order per ENI only: a change held
// back on one ENI does not hold back a later change of another (an
// attach), while a later change of the same ENI waits behind it.
func TestIMDSLagPerENI(t *testing.T) {
	e := newIMDSEnv(t)
	ctx := context.Background()
	p, _ := e.srv.Region().NetworkInterface(*e.inst.NetworkInterfaces[0].NetworkInterfaceId)
	macs := "network/interfaces/macs/"
	if _, err := e.srv.Faults().Add(faults.Rule{Action: "AssignPrivateIpAddresses", IMDSLag: model.Duration(10 * time.Second), Count: 1}); err != nil {
		t.Fatal(err)
	}
	out, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: &p.ID, SecondaryPrivateIpAddressCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	a := *out.AssignedPrivateIpAddresses[0].PrivateIpAddress
	if _, err := e.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{p.ID}, Tags: []types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}}); err != nil {
		t.Fatal(err)
	}
	eni := e.attach(e.id, 1)
	if got := e.must(macs); !strings.Contains(got, eni.MAC) {
		t.Fatalf("the attach waits behind another ENI's lagged assignment: %q", got)
	}
	if got := e.must(macs + p.MAC + "/local-ipv4s"); got != p.PrivateIP.String() {
		t.Fatalf("the lagged assignment shows early: %q", got)
	}
	e.clock.Advance(10 * time.Second)
	if got := e.must(macs + p.MAC + "/local-ipv4s"); got != lines(p.PrivateIP.String(), a) {
		t.Fatalf("after the lag: %q", got)
	}
}

// TestDescribeLagPerKind pins Describe's read-after-write lag per kind: a
// new ENI hidden for ENILag while a new address shows at once
// (AddressLag 0), and removals — an unassigned address, a deleted ENI —
// still listed for RemovalLag.
func TestDescribeLagPerKind(t *testing.T) {
	e := newIMDSEnv(t)
	ctx := context.Background()
	e.srv.Region().SetConsistency(2*time.Second, 0, 3*time.Second)
	primary := *e.inst.NetworkInterfaces[0].NetworkInterfaceId
	describe := func(ids ...string) map[string][]string {
		out, err := e.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: ids})
		got := map[string][]string{}
		if err != nil {
			got["error"] = []string{err.Error()}
			return got
		}
		for _, n := range out.NetworkInterfaces {
			for _, a := range n.PrivateIpAddresses {
				got[*n.NetworkInterfaceId] = append(got[*n.NetworkInterfaceId], *a.PrivateIpAddress)
			}
		}
		return got
	}
	out, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: &primary, SecondaryPrivateIpAddressCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	a := *out.AssignedPrivateIpAddresses[0].PrivateIpAddress
	if got := describe(primary)[primary]; len(got) != 2 {
		t.Fatalf("AddressLag 0: the assignment shows at once: %v", got)
	}
	n := e.eni(nil)
	if got := describe(); got[*n.NetworkInterfaceId] != nil {
		t.Fatalf("a new ENI listed within ENILag: %v", got)
	}
	if _, err := e.ec2.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: &primary, PrivateIpAddresses: []string{a}}); err != nil {
		t.Fatal(err)
	}
	if got := describe(primary)[primary]; len(got) != 2 {
		t.Fatalf("an unassigned address gone within RemovalLag: %v", got)
	}
	e.clock.Advance(2 * time.Second)
	if got := describe(*n.NetworkInterfaceId); got[*n.NetworkInterfaceId] == nil {
		t.Fatalf("the new ENI after ENILag: %v", got)
	}
	if _, err := e.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: n.NetworkInterfaceId}); err != nil {
		t.Fatal(err)
	}
	if got := describe(*n.NetworkInterfaceId); got[*n.NetworkInterfaceId] == nil {
		t.Fatalf("a deleted ENI gone within RemovalLag: %v", got)
	}
	e.clock.Advance(time.Second)
	if got := describe(primary)[primary]; len(got) != 1 {
		t.Fatalf("the unassigned address after RemovalLag: %v", got)
	}
	e.clock.Advance(2 * time.Second)
	if got := describe(*n.NetworkInterfaceId); !strings.Contains(strings.Join(got["error"], ""), "InvalidNetworkInterfaceID.NotFound") {
		t.Fatalf("the deleted ENI after RemovalLag: %v", got)
	}
}
