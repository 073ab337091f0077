package fakeec2_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/httpx"
)

// env is a fake region served over loopback HTTP with an SDK client.
type env struct {
	t      *testing.T
	region *model.Region
	srv    *fakeec2.Server
	http   *httptest.Server
	ec2    *ec2.Client
	vpc    string
	subnet string
}

func newEnv(t *testing.T, opts model.Options, sopts fakeec2.ServerOptions, subnetCIDR string) *env {
	t.Helper()
	r := model.NewRegion(opts)
	s := fakeec2.NewServer(r, sopts)
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	t.Cleanup(func() { _ = s.Close() })
	e := &env{t: t, region: r, srv: s, http: hs, ec2: newClient(hs.URL, 1)}
	ctx := context.Background()
	v, err := e.ec2.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16")})
	if err != nil {
		t.Fatalf("CreateVpc: %v", err)
	}
	e.vpc = *v.Vpc.VpcId
	sn, err := e.ec2.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: v.Vpc.VpcId, CidrBlock: aws.String(subnetCIDR), AvailabilityZone: aws.String("us-west-2a")})
	if err != nil {
		t.Fatalf("CreateSubnet: %v", err)
	}
	e.subnet = *sn.Subnet.SubnetId
	t.Cleanup(func() {
		if err := r.CheckInvariants(); err != nil {
			t.Errorf("invariants: %v", err)
		}
	})
	return e
}

func newClient(url string, attempts int) *ec2.Client {
	return ec2.New(ec2.Options{
		Region:       "us-west-2",
		BaseEndpoint: aws.String(url),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
		HTTPClient:   httpx.BodyCopyClient{},
		Retryer:      retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = attempts }),
	})
}

func (e *env) run(typ string) types.Instance {
	e.t.Helper()
	out, err := e.ec2.RunInstances(context.Background(), &ec2.RunInstancesInput{
		InstanceType: types.InstanceType(typ), SubnetId: aws.String(e.subnet), MinCount: aws.Int32(1), MaxCount: aws.Int32(1), ImageId: aws.String("ami-12345678"),
	})
	if err != nil {
		e.t.Fatalf("RunInstances %s: %v", typ, err)
	}
	return out.Instances[0]
}

func (e *env) eni(mod func(*ec2.CreateNetworkInterfaceInput)) types.NetworkInterface {
	e.t.Helper()
	in := &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(e.subnet)}
	if mod != nil {
		mod(in)
	}
	out, err := e.ec2.CreateNetworkInterface(context.Background(), in)
	if err != nil {
		e.t.Fatalf("CreateNetworkInterface: %v", err)
	}
	return *out.NetworkInterface
}

// wantCode asserts that err is an EC2 API error with the given code.
func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want %s, got %v", code, err)
	}
	if ae.ErrorCode() != code {
		t.Fatalf("want %s, got %s: %s", code, ae.ErrorCode(), ae.ErrorMessage())
	}
}

func TestSmoke(t *testing.T) {
	e := newEnv(t, model.Options{Seed: 1}, fakeec2.ServerOptions{}, "10.0.0.0/24")
	ctx := context.Background()
	inst := e.run("m5.large")
	if len(inst.NetworkInterfaces) != 1 {
		t.Fatalf("want 1 ENI, got %d", len(inst.NetworkInterfaces))
	}
	n := e.eni(func(in *ec2.CreateNetworkInterfaceInput) { in.SecondaryPrivateIpAddressCount = aws.Int32(2) })
	if len(n.PrivateIpAddresses) != 3 {
		t.Fatalf("want 3 addresses, got %d", len(n.PrivateIpAddresses))
	}
	att, err := e.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: n.NetworkInterfaceId, InstanceId: inst.InstanceId, DeviceIndex: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{*n.NetworkInterfaceId}})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.NetworkInterfaces[0]; *got.Attachment.AttachmentId != *att.AttachmentId || got.Status != types.NetworkInterfaceStatusInUse {
		t.Fatalf("describe after attach: %+v", got)
	}
}

func httptestServer(h http.Handler) *httptest.Server { return httptest.NewServer(h) }
