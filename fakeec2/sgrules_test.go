package fakeec2_test

import (
	"context"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/fakeec2/model"
)

// TestSecurityGroupRules drives the rule API through aws-sdk-go-v2:
// default rules, authorize (CIDR, IPv6, group reference, ICMP) with rule
// ids, duplicates, describe in both shapes, modify, revoke by properties
// and by id, the per-direction quota, 5 groups per ENI, and deletion
// refused while a group is in use or referenced.
func TestSecurityGroupRules(t *testing.T) {
	e := newEnv(t, model.Options{Seed: 8}, fakeec2.ServerOptions{}, "10.0.0.0/24")
	ctx := context.Background()
	newGroup := func(name string) string {
		out, err := e.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{VpcId: aws.String(e.vpc), GroupName: aws.String(name), Description: aws.String(name)})
		if err != nil {
			t.Fatal(err)
		}
		return *out.GroupId
	}
	a, b := newGroup("a"), newGroup("b")
	rules := func(group string) []types.SecurityGroupRule {
		out, err := e.ec2.DescribeSecurityGroupRules(ctx, &ec2.DescribeSecurityGroupRulesInput{Filters: []types.Filter{{Name: aws.String("group-id"), Values: []string{group}}}})
		if err != nil {
			t.Fatal(err)
		}
		return out.SecurityGroupRules
	}
	// A new group allows all egress and no ingress; the VPC's default
	// group also allows all ingress from itself.
	if r := rules(a); len(r) != 1 || !*r[0].IsEgress || *r[0].IpProtocol != "-1" || *r[0].CidrIpv4 != "0.0.0.0/0" {
		t.Fatalf("new group's rules: %+v", r)
	}
	groups, _ := e.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{{Name: aws.String("group-name"), Values: []string{"default"}}}})
	def := groups.SecurityGroups[0]
	if len(def.IpPermissions) != 1 || *def.IpPermissions[0].UserIdGroupPairs[0].GroupId != *def.GroupId || *def.IpPermissionsEgress[0].IpRanges[0].CidrIp != "0.0.0.0/0" {
		t.Fatalf("default group: %+v", def)
	}

	out, err := e.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(b), IpPermissions: []types.IpPermission{
		{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(8080), ToPort: aws.Int32(8081), IpRanges: []types.IpRange{{CidrIp: aws.String("10.0.0.0/24"), Description: aws.String("web")}},
			UserIdGroupPairs: []types.UserIdGroupPair{{GroupId: aws.String(a)}}},
		{IpProtocol: aws.String("icmp"), FromPort: aws.Int32(8), ToPort: aws.Int32(-1), IpRanges: []types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !*out.Return || len(out.SecurityGroupRules) != 3 {
		t.Fatalf("authorize: %+v", out)
	}
	web := out.SecurityGroupRules[0]
	if *web.IpProtocol != "tcp" || *web.FromPort != 8080 || *web.ToPort != 8081 || *web.CidrIpv4 != "10.0.0.0/24" || *web.Description != "web" || (*web.SecurityGroupRuleId)[:4] != "sgr-" {
		t.Fatalf("rule: %+v", web)
	}
	if ref := out.SecurityGroupRules[1]; ref.ReferencedGroupInfo == nil || *ref.ReferencedGroupInfo.GroupId != a {
		t.Fatalf("group-reference rule: %+v", ref)
	}
	// The same rule again (another description) is a duplicate; nothing is added.
	_, err = e.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(b), IpPermissions: []types.IpPermission{
		{IpProtocol: aws.String("6"), FromPort: aws.Int32(8080), ToPort: aws.Int32(8081), IpRanges: []types.IpRange{{CidrIp: aws.String("10.0.0.0/24"), Description: aws.String("again")}}}}})
	wantCode(t, err, "InvalidPermission.Duplicate")
	for _, bad := range []types.IpPermission{
		{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(90), ToPort: aws.Int32(80), IpRanges: []types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}},
		{IpProtocol: aws.String("bogus"), IpRanges: []types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}},
	} {
		_, err = e.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(b), IpPermissions: []types.IpPermission{bad}})
		wantCode(t, err, "InvalidParameterValue")
	}
	_, err = e.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(b), IpPermissions: []types.IpPermission{
		{IpProtocol: aws.String("-1"), UserIdGroupPairs: []types.UserIdGroupPair{{GroupId: aws.String("sg-0123456789abcdef0")}}}}})
	wantCode(t, err, "InvalidGroup.NotFound")
	if n := len(rules(b)); n != 4 {
		t.Fatalf("group b has %d rules after refusals, want 4 (3 ingress + default egress)", n)
	}

	// DescribeSecurityGroups groups rules by protocol and ports.
	groups, _ = e.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{b}})
	perms := groups.SecurityGroups[0].IpPermissions
	if len(perms) != 2 || len(perms[0].IpRanges) != 1 || len(perms[0].UserIdGroupPairs) != 1 || *perms[1].IpProtocol != "icmp" || *perms[1].FromPort != 8 {
		t.Fatalf("ipPermissions: %+v", perms)
	}

	// Modify keeps the id and direction.
	_, err = e.ec2.ModifySecurityGroupRules(ctx, &ec2.ModifySecurityGroupRulesInput{GroupId: aws.String(b), SecurityGroupRules: []types.SecurityGroupRuleUpdate{{
		SecurityGroupRuleId: web.SecurityGroupRuleId,
		SecurityGroupRule:   &types.SecurityGroupRuleRequest{IpProtocol: aws.String("udp"), FromPort: aws.Int32(53), ToPort: aws.Int32(53), CidrIpv4: aws.String("10.0.0.0/16")}}}})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := e.ec2.DescribeSecurityGroupRules(ctx, &ec2.DescribeSecurityGroupRulesInput{SecurityGroupRuleIds: []string{*web.SecurityGroupRuleId}})
	if r := got.SecurityGroupRules[0]; *r.IpProtocol != "udp" || *r.FromPort != 53 || *r.CidrIpv4 != "10.0.0.0/16" || *r.IsEgress {
		t.Fatalf("modified rule: %+v", r)
	}

	// Revoke: a rule that does not exist changes nothing; by id and by properties.
	_, err = e.ec2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(b), IpPermissions: []types.IpPermission{
		{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22), IpRanges: []types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}}})
	wantCode(t, err, "InvalidPermission.NotFound")
	rv, err := e.ec2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(b), SecurityGroupRuleIds: []string{*web.SecurityGroupRuleId}})
	if err != nil || len(rv.RevokedSecurityGroupRules) != 1 {
		t.Fatalf("revoke by id: %+v %v", rv, err)
	}
	if _, err := e.ec2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(b), IpPermissions: []types.IpPermission{
		{IpProtocol: aws.String("icmp"), FromPort: aws.Int32(8), ToPort: aws.Int32(-1), IpRanges: []types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}}}); err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.RevokeSecurityGroupEgress(ctx, &ec2.RevokeSecurityGroupEgressInput{GroupId: aws.String(b), SecurityGroupRuleIds: []string{*web.SecurityGroupRuleId}})
	wantCode(t, err, "InvalidSecurityGroupRuleId.NotFound")

	// 60 ingress rules per group, then RulesPerSecurityGroupLimitExceeded.
	var many []types.IpPermission
	for p := int32(1); p <= 60; p++ {
		many = append(many, types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(p), ToPort: aws.Int32(p), IpRanges: []types.IpRange{{CidrIp: aws.String("10.9.0.0/16")}}})
	}
	_, err = e.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(a), IpPermissions: many})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(a), IpPermissions: []types.IpPermission{
		{IpProtocol: aws.String("udp"), FromPort: aws.Int32(1), ToPort: aws.Int32(1), IpRanges: []types.IpRange{{CidrIp: aws.String("10.9.0.0/16")}}}}})
	wantCode(t, err, "RulesPerSecurityGroupLimitExceeded")

	// Up to 5 groups per ENI.
	six := []string{a, b, newGroup("c"), newGroup("d"), newGroup("e"), newGroup("f")}
	eni := e.eni(func(in *ec2.CreateNetworkInterfaceInput) { in.Groups = six[:5] })
	_, err = e.ec2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: eni.NetworkInterfaceId, Groups: six})
	wantCode(t, err, "SecurityGroupsPerInterfaceLimitExceeded")

	// Deleting a group: refused while an ENI uses it or a rule references it.
	_, err = e.ec2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(six[4])})
	wantCode(t, err, "DependencyViolation")
	_, err = e.ec2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(a)})
	wantCode(t, err, "DependencyViolation") // b's rule references a; an ENI uses it too
	_, err = e.ec2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: def.GroupId})
	wantCode(t, err, "CannotDelete")
	if _, err := e.ec2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(six[5])}); err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{six[5]}})
	wantCode(t, err, "InvalidGroup.NotFound")

	// Egress has no legacy top-level form, and name-based forms are refused.
	_, err = e.ec2.AuthorizeSecurityGroupEgress(ctx, &ec2.AuthorizeSecurityGroupEgressInput{GroupId: aws.String(b), IpProtocol: aws.String("tcp"), CidrIp: aws.String("0.0.0.0/0")})
	wantCode(t, err, "InvalidParameterValue")
	_, err = e.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(b), SourceSecurityGroupName: aws.String("a")})
	wantCode(t, err, "InvalidParameterValue")
	// The legacy ingress form works.
	leg, err := e.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(b), IpProtocol: aws.String("tcp"), FromPort: aws.Int32(443), ToPort: aws.Int32(443), CidrIp: aws.String("0.0.0.0/0")})
	if err != nil || len(leg.SecurityGroupRules) != 1 || *leg.SecurityGroupRules[0].FromPort != 443 {
		t.Fatalf("legacy ingress: %+v %v", leg, err)
	}
	ids := []string{}
	for _, r := range rules(b) {
		ids = append(ids, *r.SecurityGroupRuleId)
	}
	if slices.Contains(ids, *web.SecurityGroupRuleId) {
		t.Fatal("revoked rule still listed")
	}
}
