package fakeec2_test

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/model"
)

var ctx = context.Background()

func TestLimitsM5Large(t *testing.T) {
	e := newEnv(t, model.Options{Seed: 2}, fakeec2.ServerOptions{}, "10.0.0.0/24")
	inst := e.run("m5.large")
	// The primary ENI takes 9 more addresses (10 slots), the 10th fails.
	_, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: inst.NetworkInterfaces[0].NetworkInterfaceId, SecondaryPrivateIpAddressCount: aws.Int32(9)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: inst.NetworkInterfaces[0].NetworkInterfaceId, SecondaryPrivateIpAddressCount: aws.Int32(1)})
	wantCode(t, err, "PrivateIpAddressLimitExceeded")
	for dev := int32(1); dev <= 3; dev++ {
		n := e.eni(nil)
		_, err := e.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: n.NetworkInterfaceId, InstanceId: inst.InstanceId, DeviceIndex: aws.Int32(dev)})
		if dev < 3 && err != nil {
			t.Fatalf("attach device %d: %v", dev, err)
		}
		if dev == 3 {
			wantCode(t, err, "AttachmentLimitExceeded")
			if !strings.Contains(err.Error(), "Interface count 4 exceeds the limit for m5.large") {
				t.Fatalf("message: %v", err)
			}
		}
	}
}

func TestLimitsT3Nano(t *testing.T) {
	e := newEnv(t, model.Options{Seed: 3}, fakeec2.ServerOptions{}, "10.0.0.0/24")
	inst := e.run("t3.nano")
	primary := inst.NetworkInterfaces[0].NetworkInterfaceId
	if _, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: primary, SecondaryPrivateIpAddressCount: aws.Int32(2)}); err == nil {
		t.Fatal("t3.nano took 3 addresses on one ENI")
	} else {
		wantCode(t, err, "PrivateIpAddressLimitExceeded")
	}
	if _, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: primary, SecondaryPrivateIpAddressCount: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	n1, n2 := e.eni(nil), e.eni(nil)
	if _, err := e.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: n1.NetworkInterfaceId, InstanceId: inst.InstanceId, DeviceIndex: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	_, err := e.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: n2.NetworkInterfaceId, InstanceId: inst.InstanceId, DeviceIndex: aws.Int32(2)})
	wantCode(t, err, "AttachmentLimitExceeded")
	// An ENI holding more addresses than the type allows cannot attach.
	big := e.eni(func(in *ec2.CreateNetworkInterfaceInput) { in.SecondaryPrivateIpAddressCount = aws.Int32(5) })
	other := e.run("t3.nano")
	_, err = e.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: big.NetworkInterfaceId, InstanceId: other.InstanceId, DeviceIndex: aws.Int32(1)})
	wantCode(t, err, "InvalidInterface.IpAddressLimitExceeded")
}

func TestSubnetExhaustionSlash28(t *testing.T) {
	e := newEnv(t, model.Options{Seed: 4}, fakeec2.ServerOptions{}, "10.0.1.0/28")
	sn, err := e.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{e.subnet}})
	if err != nil {
		t.Fatal(err)
	}
	if got := *sn.Subnets[0].AvailableIpAddressCount; got != 11 {
		t.Fatalf("fresh /28 has %d free addresses, want 11", got)
	}
	seen := map[string]bool{}
	for i := 0; i < 11; i++ {
		n := e.eni(nil)
		ip := *n.PrivateIpAddress
		a := netip.MustParseAddr(ip)
		last := a.As4()[3]
		if seen[ip] || last < 4 || last == 15 {
			t.Fatalf("handed out duplicate or reserved address %s", ip)
		}
		seen[ip] = true
	}
	_, err = e.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(e.subnet)})
	wantCode(t, err, "InsufficientFreeAddressesInSubnet")
	sn, _ = e.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{e.subnet}})
	if got := *sn.Subnets[0].AvailableIpAddressCount; got != 0 {
		t.Fatalf("exhausted /28 reports %d free", got)
	}
}

func TestPrefixesAlignedAndFragmentation(t *testing.T) {
	// Lowest-free: the arithmetic below needs the instance's address in the
	// first /28 (a random one would poison a middle block).
	e := newEnv(t, model.Options{Seed: 5, Allocation: model.Allocation{Policy: model.AllocLowest}}, fakeec2.ServerOptions{}, "10.0.2.0/26")
	inst := e.run("m5.large") // takes 10.0.2.4, poisoning the first /28 (reserved anyway)
	eni := inst.NetworkInterfaces[0].NetworkInterfaceId
	out, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: eni, Ipv4PrefixCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range out.AssignedIpv4Prefixes {
		pf := netip.MustParsePrefix(*p.Ipv4Prefix)
		if pf.Bits() != 28 || pf.Masked() != pf {
			t.Fatalf("prefix %s not an aligned /28", pf)
		}
	}
	// A /26 has four /28s: the first holds reserved addresses, the last the
	// broadcast address; both are now taken or unusable.
	_, err = e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: eni, Ipv4PrefixCount: aws.Int32(1)})
	wantCode(t, err, "InsufficientCidrBlocks")
	d, _ := e.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{*eni}})
	if len(d.NetworkInterfaces[0].Ipv4Prefixes) != 2 {
		t.Fatalf("describe shows %d prefixes", len(d.NetworkInterfaces[0].Ipv4Prefixes))
	}
	sn, _ := e.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{e.subnet}})
	if got := *sn.Subnets[0].AvailableIpAddressCount; got != 64-5-1-32 {
		t.Fatalf("available %d, want %d", got, 64-5-1-32)
	}
	// Free addresses exist (in the first and last blocks) but no aligned
	// /28: single addresses still work.
	if _, err = e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: eni, SecondaryPrivateIpAddressCount: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	// Releasing a prefix makes it allocatable again; explicit prefixes must
	// be free and aligned.
	p0 := *out.AssignedIpv4Prefixes[0].Ipv4Prefix
	if _, err := e.ec2.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: eni, Ipv4Prefixes: []string{p0}}); err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: eni, Ipv4Prefixes: []string{"10.0.2.8/28"}})
	wantCode(t, err, "InvalidParameterValue")
	if _, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: eni, Ipv4Prefixes: []string{p0}}); err != nil {
		t.Fatal(err)
	}
}

// TestErrorCatalogue drives every error code the issue lists through the SDK.
func TestErrorCatalogue(t *testing.T) {
	e := newEnv(t, model.Options{Seed: 6, DetachLatency: time.Minute}, fakeec2.ServerOptions{}, "10.0.0.0/24")
	inst := e.run("m5.large")
	free := e.eni(nil)
	att := e.eni(nil)
	a, err := e.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: att.NetworkInterfaceId, InstanceId: inst.InstanceId, DeviceIndex: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	primaryAttach := inst.NetworkInterfaces[0].Attachment.AttachmentId
	cases := []struct {
		name string
		call func() error
		code string
		msg  string
	}{
		{"unknown ENI", func() error {
			_, err := e.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{"eni-0123456789abcdef0"}})
			return err
		}, "InvalidNetworkInterfaceID.NotFound", "The networkInterface ID 'eni-0123456789abcdef0' does not exist"},
		{"malformed ENI", func() error {
			_, err := e.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String("eni-xyz")})
			return err
		}, "InvalidNetworkInterfaceId.Malformed", ""},
		{"unknown attachment", func() error {
			_, err := e.ec2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: aws.String("eni-attach-0123456789abcdef0")})
			return err
		}, "InvalidAttachmentID.NotFound", ""},
		{"attach attached ENI", func() error {
			_, err := e.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: att.NetworkInterfaceId, InstanceId: inst.InstanceId, DeviceIndex: aws.Int32(2)})
			return err
		}, "InvalidNetworkInterface.InUse", ""},
		{"delete attached ENI", func() error {
			_, err := e.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: att.NetworkInterfaceId})
			return err
		}, "InvalidParameterValue", "is currently in use"},
		{"detach primary", func() error {
			_, err := e.ec2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: primaryAttach})
			return err
		}, "OperationNotPermitted", ""},
		{"unknown instance", func() error {
			_, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0123456789abcdef0"}})
			return err
		}, "InvalidInstanceID.NotFound", ""},
		{"malformed instance", func() error {
			_, err := e.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: free.NetworkInterfaceId, InstanceId: aws.String("x-1"), DeviceIndex: aws.Int32(2)})
			return err
		}, "InvalidInstanceID.Malformed", ""},
		{"unknown subnet", func() error {
			_, err := e.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String("subnet-0123456789abcdef0")})
			return err
		}, "InvalidSubnetID.NotFound", ""},
		{"duplicate device index", func() error {
			_, err := e.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: free.NetworkInterfaceId, InstanceId: inst.InstanceId, DeviceIndex: aws.Int32(1)})
			return err
		}, "InvalidParameterValue", "already has an interface attached at device index '1'"},
		{"count and list", func() error {
			_, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: free.NetworkInterfaceId, SecondaryPrivateIpAddressCount: aws.Int32(1), PrivateIpAddresses: []string{"10.0.0.200"}})
			return err
		}, "InvalidParameterCombination", ""},
		{"addresses and prefixes", func() error {
			_, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: free.NetworkInterfaceId, SecondaryPrivateIpAddressCount: aws.Int32(1), Ipv4PrefixCount: aws.Int32(1)})
			return err
		}, "InvalidParameterCombination", ""},
		{"nothing to assign", func() error {
			_, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: free.NetworkInterfaceId})
			return err
		}, "MissingParameter", ""},
		{"detach while detaching", func() error {
			_, err := e.ec2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: a.AttachmentId})
			if err != nil {
				return err
			}
			_, err = e.ec2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: a.AttachmentId})
			return err
		}, "IncorrectState", ""},
		{"address outside subnet", func() error {
			_, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: free.NetworkInterfaceId, PrivateIpAddresses: []string{"10.0.9.9"}})
			return err
		}, "InvalidParameterValue", "does not fall within"},
		{"reserved address", func() error {
			_, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: free.NetworkInterfaceId, PrivateIpAddresses: []string{"10.0.0.255"}})
			return err
		}, "InvalidParameterValue", "reserved"},
		{"bad filter", func() error {
			_, err := e.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []types.Filter{{Name: aws.String("bogus"), Values: []string{"x"}}}})
			return err
		}, "InvalidParameterValue", "The filter 'bogus' is invalid"},
		{"ids with MaxResults", func() error {
			_, err := e.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{*free.NetworkInterfaceId}, MaxResults: aws.Int32(5)})
			return err
		}, "InvalidParameterCombination", ""},
		{"unknown instance type", func() error {
			_, err := e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{InstanceType: "q9.huge", SubnetId: aws.String(e.subnet), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
			return err
		}, "InvalidParameterValue", "q9.huge"},
		{"dry run", func() error {
			_, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{DryRun: aws.Bool(true)})
			return err
		}, "DryRunOperation", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			wantCode(t, err, c.code)
			if c.msg != "" && !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("message %q lacks %q", err, c.msg)
			}
		})
	}
}

// TestRawQuery checks wire details the SDK hides: unknown actions, HTTP
// statuses, the error envelope and request ids.
func TestRawQuery(t *testing.T) {
	e := newEnv(t, model.Options{Seed: 7}, fakeec2.ServerOptions{}, "10.0.0.0/24")
	post := func(form url.Values) (int, string, http.Header) {
		resp, err := http.PostForm(e.http.URL, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	st, body, h := post(url.Values{"Action": {"LaunchRockets"}, "Version": {"2016-11-15"}})
	if st != 400 || !strings.Contains(body, "<Code>InvalidAction</Code>") || !strings.Contains(body, "<RequestID>") || h.Get("x-amzn-requestid") == "" {
		t.Fatalf("unknown action: %d %s", st, body)
	}
	st, body, _ = post(url.Values{"Action": {"AssignPrivateIpAddresses"}, "Version": {"2016-11-15"}, "NetworkInterfaceId": {"eni-0123456789abcdef0"}, "SecondaryPrivateIpAddressCount": {"many"}})
	if st != 400 || !strings.Contains(body, "<Code>InvalidParameterValue</Code>") {
		t.Fatalf("bad integer: %d %s", st, body)
	}
	st, body, _ = post(url.Values{"Action": {"DescribeVpcs"}, "Version": {"2016-11-15"}})
	if st != 200 || !strings.Contains(body, `<DescribeVpcsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>`) {
		t.Fatalf("describe vpcs: %d %s", st, body)
	}
	st, body, _ = post(url.Values{"Action": {"CreateNetworkInterface"}, "Version": {"2016-11-15"}})
	if st != 400 || !strings.Contains(body, "<Code>MissingParameter</Code>") || !strings.Contains(body, "SubnetId") {
		t.Fatalf("missing subnet: %d %s", st, body)
	}
	st, body, _ = post(url.Values{"Action": {"DescribeVpcs"}, "Version": {"2012-01-01"}})
	if st != 400 || !strings.Contains(body, "NoSuchVersion") {
		t.Fatalf("old version: %d %s", st, body)
	}
}

func TestThrottlingBurst(t *testing.T) {
	e := newEnv(t, model.Options{Seed: 8}, fakeec2.ServerOptions{API: ec2query.Options{Throttle: ec2query.ThrottleConfig{Enabled: true,
		Overrides: map[string]ec2query.Bucket{"AssignPrivateIpAddresses": {Capacity: 5, Refill: 0.001}}}}}, "10.0.0.0/24")
	n := e.eni(nil)
	var throttled int
	for i := 0; i < 8; i++ {
		_, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: n.NetworkInterfaceId, SecondaryPrivateIpAddressCount: aws.Int32(1)})
		if err != nil {
			wantCode(t, err, "RequestLimitExceeded")
			if !strings.Contains(err.Error(), "StatusCode: 503") {
				t.Fatalf("throttle status: %v", err)
			}
			throttled++
		}
	}
	if throttled != 3 {
		t.Fatalf("throttled %d of 8 calls against a 5-token bucket, want 3", throttled)
	}
	// Other actions have their own buckets.
	if _, err := e.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{}); err != nil {
		t.Fatal(err)
	}
	recs := e.srv.Audit().Events(ec2query.EventFilter{ErrorCode: "RequestLimitExceeded"})
	if len(recs) != 3 || !recs[0].Throttled || recs[0].EventName != "AssignPrivateIpAddresses" {
		t.Fatalf("audit shows %d throttled calls: %+v", len(recs), recs)
	}
	// The SDK's standard retryer retries throttles: with refill the call succeeds.
	e.srv.Throttler().SetConfig(ec2query.ThrottleConfig{Enabled: true, Overrides: map[string]ec2query.Bucket{"AssignPrivateIpAddresses": {Capacity: 1, Refill: 20}}})
	c := newClient(e.http.URL, 5)
	for i := 0; i < 3; i++ {
		if _, err := c.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: n.NetworkInterfaceId, SecondaryPrivateIpAddressCount: aws.Int32(1)}); err != nil {
			t.Fatalf("retrying client: %v", err)
		}
	}
}

func TestTrunking(t *testing.T) {
	e := newEnv(t, model.Options{Seed: 9}, fakeec2.ServerOptions{}, "10.0.0.0/24")
	inst := e.run("m5.large")
	trunk := e.eni(func(in *ec2.CreateNetworkInterfaceInput) { in.InterfaceType = types.NetworkInterfaceCreationTypeTrunk })
	if trunk.InterfaceType != types.NetworkInterfaceTypeTrunk {
		t.Fatalf("interface type %s", trunk.InterfaceType)
	}
	branch := e.eni(nil)
	_, err := e.ec2.AssociateTrunkInterface(ctx, &ec2.AssociateTrunkInterfaceInput{BranchInterfaceId: branch.NetworkInterfaceId, TrunkInterfaceId: trunk.NetworkInterfaceId, VlanId: aws.Int32(5)})
	wantCode(t, err, "IncorrectState") // trunk not attached yet
	if _, err := e.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: trunk.NetworkInterfaceId, InstanceId: inst.InstanceId, DeviceIndex: aws.Int32(2)}); err != nil {
		t.Fatal(err)
	}
	as, err := e.ec2.AssociateTrunkInterface(ctx, &ec2.AssociateTrunkInterfaceInput{BranchInterfaceId: branch.NetworkInterfaceId, TrunkInterfaceId: trunk.NetworkInterfaceId, VlanId: aws.Int32(5)})
	if err != nil {
		t.Fatal(err)
	}
	if *as.InterfaceAssociation.VlanId != 5 || as.InterfaceAssociation.InterfaceProtocol != types.InterfaceProtocolTypeVlan {
		t.Fatalf("association %+v", as.InterfaceAssociation)
	}
	// An associated branch is in-use without an attachment (issue 22: the
	// resource controller's cleaner deletes available ENIs it owns).
	status := func(id *string) types.NetworkInterfaceStatus {
		t.Helper()
		d, err := e.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{*id}})
		if err != nil || len(d.NetworkInterfaces) != 1 {
			t.Fatalf("describe %s: %v", *id, err)
		}
		if d.NetworkInterfaces[0].Attachment != nil {
			t.Fatalf("branch %s has an attachment", *id)
		}
		return d.NetworkInterfaces[0].Status
	}
	if got := status(branch.NetworkInterfaceId); got != types.NetworkInterfaceStatusInUse {
		t.Fatalf("associated branch is %s, want in-use", got)
	}
	avail, err := e.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []types.Filter{{Name: aws.String("status"), Values: []string{"available"}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range avail.NetworkInterfaces {
		if *n.NetworkInterfaceId == *branch.NetworkInterfaceId {
			t.Fatal("status=available lists the associated branch")
		}
	}
	if err := e.region.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	other := e.eni(nil)
	_, err = e.ec2.AssociateTrunkInterface(ctx, &ec2.AssociateTrunkInterfaceInput{BranchInterfaceId: other.NetworkInterfaceId, TrunkInterfaceId: trunk.NetworkInterfaceId, VlanId: aws.Int32(5)})
	wantCode(t, err, "InvalidParameterValue") // VLAN 5 taken
	// m5.large allows 9 branches: 8 more succeed, the 10th fails.
	var last *string
	for v := int32(6); v <= 13; v++ {
		b := e.eni(nil)
		if _, err := e.ec2.AssociateTrunkInterface(ctx, &ec2.AssociateTrunkInterfaceInput{BranchInterfaceId: b.NetworkInterfaceId, TrunkInterfaceId: trunk.NetworkInterfaceId, VlanId: aws.Int32(v)}); err != nil {
			t.Fatalf("branch %d: %v", v, err)
		}
		last = b.NetworkInterfaceId
	}
	_, err = e.ec2.AssociateTrunkInterface(ctx, &ec2.AssociateTrunkInterfaceInput{BranchInterfaceId: other.NetworkInterfaceId, TrunkInterfaceId: trunk.NetworkInterfaceId, VlanId: aws.Int32(99)})
	wantCode(t, err, "AttachmentLimitExceeded")
	d, err := e.ec2.DescribeTrunkInterfaceAssociations(ctx, &ec2.DescribeTrunkInterfaceAssociationsInput{Filters: []types.Filter{{Name: aws.String("trunk-interface-association.trunk-interface-id"), Values: []string{*trunk.NetworkInterfaceId}}}})
	if err != nil || len(d.InterfaceAssociations) != 9 {
		t.Fatalf("describe: %d, %v", len(d.InterfaceAssociations), err)
	}
	// Deleting an associated branch succeeds and takes its association
	// with it: EC2 allows it (the resource controller deleted branches
	// without disassociating before amazon-vpc-resource-controller-k8s#372,
	// and still does when it has no association id), though disassociating
	// first is what EC2 recommends.
	if _, err := e.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: last}); err != nil {
		t.Fatalf("delete an associated branch: %v", err)
	}
	d, err = e.ec2.DescribeTrunkInterfaceAssociations(ctx, &ec2.DescribeTrunkInterfaceAssociationsInput{Filters: []types.Filter{{Name: aws.String("trunk-interface-association.trunk-interface-id"), Values: []string{*trunk.NetworkInterfaceId}}}})
	if err != nil || len(d.InterfaceAssociations) != 8 {
		t.Fatalf("after deleting a branch: %d associations, %v", len(d.InterfaceAssociations), err)
	}
	if _, err := e.ec2.DisassociateTrunkInterface(ctx, &ec2.DisassociateTrunkInterfaceInput{AssociationId: as.InterfaceAssociation.AssociationId}); err != nil {
		t.Fatal(err)
	}
	if got := status(branch.NetworkInterfaceId); got != types.NetworkInterfaceStatusAvailable {
		t.Fatalf("disassociated branch is %s, want available", got)
	}
	_, err = e.ec2.DisassociateTrunkInterface(ctx, &ec2.DisassociateTrunkInterfaceInput{AssociationId: as.InterfaceAssociation.AssociationId})
	wantCode(t, err, "InvalidAssociationID.NotFound")
	// A type without trunking refuses a trunk ENI.
	t3 := e.run("t3.medium")
	tr2 := e.eni(func(in *ec2.CreateNetworkInterfaceInput) { in.InterfaceType = types.NetworkInterfaceCreationTypeTrunk })
	_, err = e.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: tr2.NetworkInterfaceId, InstanceId: t3.InstanceId, DeviceIndex: aws.Int32(1)})
	wantCode(t, err, "UnsupportedOperation")
}

// TestEveryAction drives the remaining actions end to end.
func TestEveryAction(t *testing.T) {
	e := newEnv(t, model.Options{Seed: 10}, fakeec2.ServerOptions{}, "10.0.0.0/24")
	v6vpc, err := e.ec2.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.1.0.0/16"), AmazonProvidedIpv6CidrBlock: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	v6block := *v6vpc.Vpc.Ipv6CidrBlockAssociationSet[0].Ipv6CidrBlock
	p := netip.MustParsePrefix(v6block)
	sub64 := netip.PrefixFrom(p.Addr(), 64).String()
	sn, err := e.ec2.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: v6vpc.Vpc.VpcId, CidrBlock: aws.String("10.1.0.0/24"), Ipv6CidrBlock: aws.String(sub64), AvailabilityZone: aws.String("us-west-2b")})
	if err != nil {
		t.Fatal(err)
	}
	if *sn.Subnet.AvailabilityZoneId != "usw2-az2" {
		t.Fatalf("az id %s", *sn.Subnet.AvailabilityZoneId)
	}
	sg, err := e.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("pods"), Description: aws.String("pods"), VpcId: v6vpc.Vpc.VpcId})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("pods"), Description: aws.String("pods"), VpcId: v6vpc.Vpc.VpcId})
	wantCode(t, err, "InvalidGroup.Duplicate")
	sgs, err := e.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{{Name: aws.String("vpc-id"), Values: []string{*v6vpc.Vpc.VpcId}}}})
	if err != nil || len(sgs.SecurityGroups) != 2 {
		t.Fatalf("security groups: %v %v", sgs, err)
	}
	vpcs, err := e.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{})
	if err != nil || len(vpcs.Vpcs) != 2 {
		t.Fatalf("vpcs: %v", err)
	}
	run, err := e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{InstanceType: "m5.large", SubnetId: sn.Subnet.SubnetId, MinCount: aws.Int32(2), MaxCount: aws.Int32(2), SecurityGroupIds: []string{*sg.GroupId},
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{{Key: aws.String("Name"), Value: aws.String("node")}}}}})
	if err != nil || len(run.Instances) != 2 {
		t.Fatalf("run: %v", err)
	}
	di, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("tag:Name"), Values: []string{"no*"}}}})
	if err != nil || len(di.Reservations) != 2 || di.Reservations[0].Instances[0].InstanceType != "m5.large" {
		t.Fatalf("describe instances: %v", err)
	}
	it, err := e.ec2.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []types.InstanceType{"m5.large", "p4d.24xlarge"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range it.InstanceTypes {
		ni := x.NetworkInfo
		if int(*ni.MaximumNetworkCards) != len(ni.NetworkCards) {
			t.Fatalf("%s: %d cards listed for %d", x.InstanceType, len(ni.NetworkCards), *ni.MaximumNetworkCards)
		}
		if x.InstanceType == "m5.large" && (*ni.MaximumNetworkInterfaces != 3 || *ni.Ipv4AddressesPerInterface != 10) {
			t.Fatalf("m5.large limits %d x %d", *ni.MaximumNetworkInterfaces, *ni.Ipv4AddressesPerInterface)
		}
	}
	pages := ec2.NewDescribeInstanceTypesPaginator(e.ec2, &ec2.DescribeInstanceTypesInput{MaxResults: aws.Int32(100)})
	total := 0
	for pages.HasMorePages() {
		pg, err := pages.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		total += len(pg.InstanceTypes)
	}
	if total < 500 {
		t.Fatalf("catalog has only %d types", total)
	}
	inst := run.Instances[0]
	n, err := e.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: sn.Subnet.SubnetId, Description: aws.String("aws-K8S-" + *inst.InstanceId), Groups: []string{*sg.GroupId},
		SecondaryPrivateIpAddressCount: aws.Int32(2), Ipv6AddressCount: aws.Int32(1),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeNetworkInterface, Tags: []types.Tag{{Key: aws.String("node.k8s.amazonaws.com/instance_id"), Value: inst.InstanceId}}}}})
	if err != nil {
		t.Fatal(err)
	}
	eni := n.NetworkInterface.NetworkInterfaceId
	if len(n.NetworkInterface.Ipv6Addresses) != 1 {
		t.Fatalf("ipv6 %v", n.NetworkInterface.Ipv6Addresses)
	}
	// Idempotency: the SDK filled a ClientToken; replaying it returns the same ENI.
	if n.ClientToken == nil || *n.ClientToken == "" {
		t.Fatal("no client token echoed")
	}
	again, err := e.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: sn.Subnet.SubnetId, Description: aws.String("aws-K8S-" + *inst.InstanceId), Groups: []string{*sg.GroupId},
		SecondaryPrivateIpAddressCount: aws.Int32(2), Ipv6AddressCount: aws.Int32(1), ClientToken: n.ClientToken,
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeNetworkInterface, Tags: []types.Tag{{Key: aws.String("node.k8s.amazonaws.com/instance_id"), Value: inst.InstanceId}}}}})
	if err != nil || *again.NetworkInterface.NetworkInterfaceId != *eni {
		t.Fatalf("idempotent create: %v", err)
	}
	at, err := e.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: eni, InstanceId: inst.InstanceId, DeviceIndex: aws.Int32(1), NetworkCardIndex: aws.Int32(0)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.ec2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: eni, Attachment: &types.NetworkInterfaceAttachmentChanges{AttachmentId: at.AttachmentId, DeleteOnTermination: aws.Bool(true)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ec2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: eni, SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(false)}}); err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: eni, SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(true)}, Description: &types.AttributeValue{Value: aws.String("x")}})
	wantCode(t, err, "InvalidParameterCombination")
	as, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: eni, SecondaryPrivateIpAddressCount: aws.Int32(3)})
	if err != nil || len(as.AssignedPrivateIpAddresses) != 3 {
		t.Fatalf("assign: %v", err)
	}
	explicit := "10.1.0.200"
	if _, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: eni, PrivateIpAddresses: []string{explicit}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ec2.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: eni, PrivateIpAddresses: []string{explicit, *as.AssignedPrivateIpAddresses[0].PrivateIpAddress}}); err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: eni, PrivateIpAddresses: []string{explicit}})
	wantCode(t, err, "InvalidParameterValue")
	a6, err := e.ec2.AssignIpv6Addresses(ctx, &ec2.AssignIpv6AddressesInput{NetworkInterfaceId: eni, Ipv6AddressCount: aws.Int32(2), Ipv6Prefixes: nil})
	if err != nil || len(a6.AssignedIpv6Addresses) != 2 {
		t.Fatalf("assign v6: %v", err)
	}
	u6, err := e.ec2.UnassignIpv6Addresses(ctx, &ec2.UnassignIpv6AddressesInput{NetworkInterfaceId: eni, Ipv6Addresses: a6.AssignedIpv6Addresses[:1]})
	if err != nil || len(u6.UnassignedIpv6Addresses) != 1 {
		t.Fatalf("unassign v6: %v", err)
	}
	p6, err := e.ec2.AssignIpv6Addresses(ctx, &ec2.AssignIpv6AddressesInput{NetworkInterfaceId: eni, Ipv6PrefixCount: aws.Int32(1)})
	if err != nil || len(p6.AssignedIpv6Prefixes) != 1 || !strings.HasSuffix(p6.AssignedIpv6Prefixes[0], "/80") {
		t.Fatalf("assign v6 prefix: %v %v", p6, err)
	}
	if _, err := e.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{*eni, *inst.InstanceId}, Tags: []types.Tag{{Key: aws.String("team"), Value: aws.String("net")}}}); err != nil {
		t.Fatal(err)
	}
	f := func(name string, vals ...string) types.Filter {
		return types.Filter{Name: aws.String(name), Values: vals}
	}
	for _, fs := range [][]types.Filter{
		{f("tag-key", "node.k8s.amazonaws.com/instance_id"), f("status", "available", "in-use")},
		{f("tag:team", "net"), f("vpc-id", *v6vpc.Vpc.VpcId)},
		{f("attachment.instance-id", *inst.InstanceId), f("subnet-id", *sn.Subnet.SubnetId), f("network-interface-id", *eni)},
	} {
		d, err := e.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: fs})
		if err != nil || len(d.NetworkInterfaces) != 1 || *d.NetworkInterfaces[0].NetworkInterfaceId != *eni {
			t.Fatalf("filters %v: %v %v", fs, d, err)
		}
		if d.NetworkInterfaces[0].SourceDestCheck == nil || *d.NetworkInterfaces[0].SourceDestCheck {
			t.Fatal("source/dest check not disabled")
		}
	}
	if _, err := e.ec2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{*eni}, Tags: []types.Tag{{Key: aws.String("team")}}}); err != nil {
		t.Fatal(err)
	}
	d, _ := e.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []types.Filter{f("tag:team", "net")}})
	if len(d.NetworkInterfaces) != 0 {
		t.Fatal("tag not deleted")
	}
	if _, err := e.ec2.CreateNetworkInterfacePermission(ctx, &ec2.CreateNetworkInterfacePermissionInput{NetworkInterfaceId: eni, Permission: types.InterfacePermissionTypeInstanceAttach, AwsAccountId: aws.String("123456789012")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ec2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: at.AttachmentId}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: eni}); err != nil {
		t.Fatal(err)
	}
	// Terminating releases the primary ENI and its address.
	before := e.available(*sn.Subnet.SubnetId)
	term, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{*inst.InstanceId}})
	if err != nil || term.TerminatingInstances[0].CurrentState.Name != types.InstanceStateNameTerminated {
		t.Fatalf("terminate: %v", err)
	}
	if after := e.available(*sn.Subnet.SubnetId); after != before+1 {
		t.Fatalf("terminate freed %d addresses, want 1", after-before)
	}
	// Paginate ENIs 5 at a time.
	for i := 0; i < 12; i++ {
		e.eni(nil)
	}
	pg := ec2.NewDescribeNetworkInterfacesPaginator(e.ec2, &ec2.DescribeNetworkInterfacesInput{MaxResults: aws.Int32(5)})
	var ids []string
	for pg.HasMorePages() {
		out, err := pg.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range out.NetworkInterfaces {
			ids = append(ids, *n.NetworkInterfaceId)
		}
	}
	all := e.region.NetworkInterfaces()
	if len(ids) != len(all) || slices.Compact(slices.Sorted(slices.Values(ids))) == nil {
		t.Fatalf("paginated %d of %d ENIs", len(ids), len(all))
	}
}

func (e *env) available(subnet string) int32 {
	sn, err := e.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{subnet}})
	if err != nil {
		e.t.Fatal(err)
	}
	return *sn.Subnets[0].AvailableIpAddressCount
}

func TestAttachStatesAndConsistencyLag(t *testing.T) {
	e := newEnv(t, model.Options{Seed: 11, AttachLatency: 150 * time.Millisecond, DetachLatency: 150 * time.Millisecond, ConsistencyLag: 200 * time.Millisecond}, fakeec2.ServerOptions{}, "10.0.0.0/24")
	sub := e.region.Subscribe()
	defer sub.Close()
	inst := e.run("m5.large")
	n, err := e.region.CreateNetworkInterface(model.CreateNetworkInterfaceInput{SubnetID: e.subnet})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{n.ID}})
	wantCode(t, err, "InvalidNetworkInterfaceID.NotFound") // not visible yet
	time.Sleep(250 * time.Millisecond)
	at, err := e.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: &n.ID, InstanceId: inst.InstanceId, DeviceIndex: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := e.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{n.ID}})
	if d.NetworkInterfaces[0].Attachment.Status != types.AttachmentStatusAttaching {
		t.Fatalf("status right after attach: %s", d.NetworkInterfaces[0].Attachment.Status)
	}
	_, err = e.ec2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: at.AttachmentId})
	wantCode(t, err, "IncorrectState")
	time.Sleep(200 * time.Millisecond)
	d, _ = e.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{n.ID}})
	if d.NetworkInterfaces[0].Attachment.Status != types.AttachmentStatusAttached || d.NetworkInterfaces[0].Status != types.NetworkInterfaceStatusInUse {
		t.Fatalf("status after latency: %s", d.NetworkInterfaces[0].Attachment.Status)
	}
	as, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: &n.ID, SecondaryPrivateIpAddressCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	d, _ = e.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{n.ID}})
	if len(d.NetworkInterfaces[0].PrivateIpAddresses) != 1 {
		t.Fatal("new secondary address visible before the lag")
	}
	time.Sleep(250 * time.Millisecond)
	d, _ = e.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{n.ID}})
	if len(d.NetworkInterfaces[0].PrivateIpAddresses) != 2 || *d.NetworkInterfaces[0].PrivateIpAddresses[1].PrivateIpAddress != *as.AssignedPrivateIpAddresses[0].PrivateIpAddress {
		t.Fatal("secondary address not visible after the lag")
	}
	if _, err := e.ec2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: at.AttachmentId}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	// The feed reports the whole life cycle in order.
	var states []string
	timeout := time.After(2 * time.Second)
	for len(states) < 4 {
		select {
		case c := <-sub.C:
			if c.Kind == model.ChangeAttachment && c.ENIID == n.ID {
				states = append(states, c.State)
			}
		case <-timeout:
			t.Fatalf("feed states so far: %v", states)
		}
	}
	if strings.Join(states, ",") != "attaching,attached,detaching,detached" {
		t.Fatalf("feed states %v", states)
	}
}

func TestFaultRules(t *testing.T) {
	e := newEnv(t, model.Options{Seed: 12}, fakeec2.ServerOptions{API: ec2query.Options{Seed: 12}}, "10.0.0.0/24")
	n := e.eni(nil)
	if _, err := e.srv.Faults().Add(faults.Rule{Action: "Assign*", Code: "InsufficientFreeAddressesInSubnet", Count: 2},
		faults.Rule{Action: "DescribeSubnets", Latency: model.Duration(100 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		_, err := e.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: n.NetworkInterfaceId, SecondaryPrivateIpAddressCount: aws.Int32(1)})
		if i < 2 {
			wantCode(t, err, "InsufficientFreeAddressesInSubnet")
		} else if err != nil {
			t.Fatalf("third call: %v", err)
		}
	}
	start := time.Now()
	e.available(e.subnet)
	if time.Since(start) < 100*time.Millisecond {
		t.Fatal("latency fault not applied")
	}
	if _, err := e.srv.Faults().Add(faults.Rule{Action: "*", Probability: 2}); err == nil {
		t.Fatal("probability 2 accepted")
	}
	// A window: active after 100ms, for 100ms.
	e.srv.Faults().Clear()
	e.srv.Faults().Add(faults.Rule{Action: "DescribeVpcs", Code: "InternalError", After: model.Duration(100 * time.Millisecond), For: model.Duration(150 * time.Millisecond)})
	c := newClient(e.http.URL, 1)
	if _, err := c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{}); err != nil {
		t.Fatalf("before window: %v", err)
	}
	time.Sleep(120 * time.Millisecond)
	_, err := c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{})
	wantCode(t, err, "InternalError")
	time.Sleep(150 * time.Millisecond)
	if _, err := c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{}); err != nil {
		t.Fatalf("after window: %v", err)
	}
}

// Faults with a probability replay identically under the same seed.
func TestFaultDiceSeeded(t *testing.T) {
	run := func() string {
		f := faults.New(42, nil)
		f.Add(faults.Rule{Action: "*", Code: "InternalError", Probability: 0.5})
		var b strings.Builder
		for i := 0; i < 64; i++ {
			if _, err := f.Evaluate(faults.Call{Action: "X"}); err != nil {
				b.WriteByte('1')
			} else {
				b.WriteByte('0')
			}
		}
		return b.String()
	}
	a, b := run(), run()
	if a != b || !strings.Contains(a, "1") || !strings.Contains(a, "0") {
		t.Fatalf("dice not reproducible: %s vs %s", a, b)
	}
}
