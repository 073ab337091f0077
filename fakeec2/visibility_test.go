package fakeec2_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/fakeec2/control"
	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/model"
)

// TestIMDSDelayVisible: a call whose change an imdsLag fault holds back
// carries vpclab.imdsVisibleAt (with the instance and the rule) in the
// events the control API serves, calls shown at once carry nothing, the
// rule lists what it delayed, and the instance's IMDS view shows the
// addresses only once the lag has passed.
func TestIMDSDelayVisible(t *testing.T) {
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	e := newEnv(t, model.Options{Seed: 4, Now: now}, fakeec2.ServerOptions{API: ec2query.Options{Now: now}}, "10.0.0.0/24")
	inst := e.run("m5.large")
	eni := *inst.NetworkInterfaces[0].NetworkInterfaceId
	added, err := e.srv.Faults().Add(faults.Rule{Action: "AssignPrivateIpAddresses", IMDSLag: model.Duration(3 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	out, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni), SecondaryPrivateIpAddressCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	first := *out.AssignedPrivateIpAddresses[0].PrivateIpAddress
	if _, err := e.ec2.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni), PrivateIpAddresses: []string{first}}); err != nil {
		t.Fatal(err)
	}
	view, err := e.srv.IMDS().View(*inst.InstanceId)
	if err != nil || len(view) != 1 || len(view[0].IPv4) != 1 {
		t.Fatalf("IMDS view during the lag: %+v %v (want the primary address only)", view, err)
	}

	resp, err := http.Get(e.http.URL + "/_fake/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var recs []ec2query.Record
	if err := json.Unmarshal(body, &recs); err != nil {
		t.Fatalf("events: %v %s", err, body)
	}
	noted := map[string]*ec2query.Note{}
	for _, r := range recs {
		noted[r.EventName] = r.VPCLab
	}
	n := noted["AssignPrivateIpAddresses"]
	if n == nil || !n.IMDSVisibleAt.Equal(clock.Add(3*time.Second)) || time.Duration(n.IMDSLag) != 3*time.Second ||
		!slices.Equal(n.IMDSInstances, []string{*inst.InstanceId}) || !slices.Equal(n.IMDSFaults, []string{added[0].ID}) {
		t.Fatalf("delayed call's note: %+v\n%s", n, body)
	}
	// IMDS shows changes in order: the unassign waits behind the assign,
	// late by the same 3 s though no rule hit it.
	if n := noted["UnassignPrivateIpAddresses"]; n == nil || !n.IMDSVisibleAt.Equal(clock.Add(3*time.Second)) || len(n.IMDSFaults) != 0 {
		t.Fatalf("the unassign queued behind it: %+v", n)
	}
	for _, a := range []string{"RunInstances", "CreateVpc", "CreateSubnet"} {
		if noted[a] != nil {
			t.Errorf("%s was not delayed but has a note %+v", a, noted[a])
		}
	}
	if rules := e.srv.Faults().List(); len(rules[0].Delayed) != 1 || rules[0].Delayed[0] != "AssignPrivateIpAddresses "+eni+" on "+*inst.InstanceId {
		t.Fatalf("rule's delayed list %q", rules[0].Delayed)
	}

	clock = clock.Add(3 * time.Second)
	view, _ = e.srv.IMDS().View(*inst.InstanceId)
	if len(view[0].IPv4) != 2 || view[0].ENIID != eni {
		t.Fatalf("IMDS view after the lag: %+v (want the primary and one secondary)", view)
	}
	// Once the lag has passed, a call the rule does not hit is shown at once.
	second := *out.AssignedPrivateIpAddresses[1].PrivateIpAddress
	if _, err := e.ec2.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni), PrivateIpAddresses: []string{second}}); err != nil {
		t.Fatal(err)
	}
	recs = e.srv.Audit().Events(ec2query.EventFilter{Action: "UnassignPrivateIpAddresses"})
	control.Annotate(recs, e.srv.Audit(), e.srv.IMDS())
	if len(recs) != 2 || recs[0].VPCLab == nil || recs[1].VPCLab != nil {
		t.Fatalf("unassigns: first delayed, second at once; notes %+v, %+v", recs[0].VPCLab, recs[len(recs)-1].VPCLab)
	}
}
