package fakeec2_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

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
