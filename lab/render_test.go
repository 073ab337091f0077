package lab

import (
	"bytes"
	"context"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/model"
)

// TestEventDetailSecurityGroups checks that `vpclab events` tables name the
// group and the rules of security group calls made by a real SDK client.
func TestEventDetailSecurityGroups(t *testing.T) {
	r := model.NewRegion(model.Options{Seed: 1})
	v, err := r.CreateVPC(model.CreateVPCInput{CIDR: netip.MustParsePrefix("10.0.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	sn, err := r.CreateSubnet(model.CreateSubnetInput{VPCID: v.ID, CIDR: netip.MustParsePrefix("10.0.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	eni, err := r.CreateNetworkInterface(model.CreateNetworkInterfaceInput{SubnetID: sn.ID})
	if err != nil {
		t.Fatal(err)
	}
	srv := fakeec2.NewServer(r, fakeec2.ServerOptions{})
	defer srv.Close()
	hs := httptest.NewServer(srv)
	defer hs.Close()
	c := ec2.New(ec2.Options{Region: r.Name(), BaseEndpoint: aws.String(hs.URL), Credentials: credentials.NewStaticCredentialsProvider("a", "b", "")})
	ctx := context.Background()
	g, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("web"), Description: aws.String("web"), VpcId: &v.ID})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: g.GroupId, IpPermissions: []types.IpPermission{
		{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(81), IpRanges: []types.IpRange{{CidrIp: aws.String("10.0.0.0/16")}},
			UserIdGroupPairs: []types.UserIdGroupPair{{GroupId: &v.DefaultGroupID}}}}})
	if err != nil {
		t.Fatal(err)
	}
	rule := *auth.SecurityGroupRules[0].SecurityGroupRuleId
	if _, err := c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: g.GroupId, SecurityGroupRuleIds: []string{rule}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: &eni.ID, Groups: []string{*g.GroupId}}); err != nil {
		t.Fatal(err)
	}
	for action, want := range map[string]string{
		"AuthorizeSecurityGroupIngress":   *g.GroupId + "; tcp 80-81 10.0.0.0/16," + v.DefaultGroupID,
		"RevokeSecurityGroupIngress":      *g.GroupId + "; " + rule,
		"ModifyNetworkInterfaceAttribute": eni.ID + " groups " + *g.GroupId,
		"CreateSecurityGroup":             "web",
	} {
		recs := srv.Audit().Events(ec2query.EventFilter{Action: action})
		if len(recs) != 1 {
			t.Fatalf("%s: %d records", action, len(recs))
		}
		var b bytes.Buffer
		WriteEvent(&b, recs[0])
		if !strings.Contains(b.String(), "  "+want) {
			t.Errorf("%s: want %q in %q", action, want, b.String())
		}
	}
}
