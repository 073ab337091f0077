package ipamd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Tag keys the VPC CNI puts on the ENIs it creates.
const (
	TagInstanceID = "node.k8s.amazonaws.com/instance_id"
	TagCreatedAt  = "node.k8s.amazonaws.com/createdAt"
	TagCluster    = "cluster.k8s.amazonaws.com/name"
	TagNoManage   = "node.k8s.amazonaws.com/no_manage"
	TagOwner      = "eks:eni:owner"
	// DescriptionPrefix starts the description of every ENI ipamd creates.
	DescriptionPrefix = "aws-K8S-"
)

// imdsENI is an attached ENI as ipamd learns it: from IMDS, or, for one
// ipamd has just created, from EC2's answer.
type imdsENI struct {
	ID         string
	MAC        string
	Device     int
	Card       int
	IPv4s      []netip.Addr // primary first
	Prefixes   []netip.Prefix
	SubnetID   string
	SubnetCIDR netip.Prefix
}

// imdsENIs lists the attached ENIs from IMDS.
func (c *cloud) imdsENIs(ctx context.Context) ([]imdsENI, error) {
	macs, err := c.metadataList(ctx, "network/interfaces/macs")
	if err != nil {
		return nil, err
	}
	var out []imdsENI
	for _, m := range macs {
		e, err := c.imdsENI(ctx, strings.TrimSuffix(m, "/"))
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func (c *cloud) imdsENI(ctx context.Context, mac string) (imdsENI, error) {
	base := "network/interfaces/macs/" + mac + "/"
	e := imdsENI{MAC: mac}
	var err error
	if e.ID, err = c.metadata(ctx, base+"interface-id"); err != nil {
		return e, err
	}
	dev, err := c.metadata(ctx, base+"device-number")
	if err != nil {
		return e, err
	}
	if e.Device, err = strconv.Atoi(dev); err != nil {
		return e, fmt.Errorf("imds device-number %q of %s: %w", dev, mac, err)
	}
	if card, err := c.metadata(ctx, base+"network-card"); err == nil {
		e.Card, _ = strconv.Atoi(card)
	}
	ips, err := c.metadataList(ctx, base+"local-ipv4s")
	if err != nil {
		return e, err
	}
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil {
			e.IPv4s = append(e.IPv4s, a)
		}
	}
	pfx, err := c.metadataList(ctx, base+"ipv4-prefix")
	if err != nil {
		return e, err
	}
	for _, s := range pfx {
		if p, err := netip.ParsePrefix(s); err == nil {
			e.Prefixes = append(e.Prefixes, p)
		}
	}
	if e.SubnetID, err = c.metadata(ctx, base+"subnet-id"); err != nil {
		return e, err
	}
	cidr, err := c.metadata(ctx, base+"subnet-ipv4-cidr-block")
	if err != nil {
		return e, err
	}
	if e.SubnetCIDR, err = netip.ParsePrefix(cidr); err != nil {
		return e, fmt.Errorf("imds subnet-ipv4-cidr-block %q: %w", cidr, err)
	}
	return e, nil
}

// instanceLimits returns the type's ENI limit (default card) and IPv4
// addresses per ENI: from the table ipamd carries (limits.tsv, as the VPC
// CNI carries its own), or from DescribeInstanceTypes for a type missing
// there.
func (c *cloud) instanceLimits(ctx context.Context, typ string) (maxENI, ipv4PerENI int, err error) {
	if l, ok := knownLimits()[typ]; ok {
		return l.enis, l.perENI, nil
	}
	var out *ec2.DescribeInstanceTypesOutput
	err = c.timed(ctx, "DescribeInstanceTypes", func() (err error) {
		out, err = c.ec2.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []types.InstanceType{types.InstanceType(typ)}})
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("describe instance type %s: %w", typ, err)
	}
	if len(out.InstanceTypes) == 0 || out.InstanceTypes[0].NetworkInfo == nil {
		return 0, 0, fmt.Errorf("describe instance type %s: no network info", typ)
	}
	ni := out.InstanceTypes[0].NetworkInfo
	maxENI = int(aws.ToInt32(ni.MaximumNetworkInterfaces))
	def := aws.ToInt32(ni.DefaultNetworkCardIndex)
	for _, card := range ni.NetworkCards {
		if aws.ToInt32(card.NetworkCardIndex) == def && card.MaximumNetworkInterfaces != nil {
			maxENI = int(*card.MaximumNetworkInterfaces)
		}
	}
	return maxENI, int(aws.ToInt32(ni.Ipv4AddressesPerInterface)), nil
}

// describeENIs returns the ENIs by id, from one DescribeNetworkInterfaces.
func (c *cloud) describeENIs(ctx context.Context, ids []string) (map[string]types.NetworkInterface, error) {
	out := map[string]types.NetworkInterface{}
	if len(ids) == 0 {
		return out, nil
	}
	var resp *ec2.DescribeNetworkInterfacesOutput
	err := c.timed(ctx, "DescribeNetworkInterfaces", func() (err error) {
		resp, err = c.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: ids})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("describe ENIs %v: %w", ids, err)
	}
	for _, n := range resp.NetworkInterfaces {
		out[aws.ToString(n.NetworkInterfaceId)] = n
	}
	return out, nil
}

// ec2ENIs is EC2's view of the ENIs attached to an instance, by id.
type ec2ENIs map[string]types.NetworkInterface

// held is what EC2 has on an ENI: its secondary IPv4 addresses (as /32)
// and prefixes.
func held(n types.NetworkInterface) map[netip.Prefix]bool {
	out := map[netip.Prefix]bool{}
	for _, a := range n.PrivateIpAddresses {
		if addr, err := netip.ParseAddr(aws.ToString(a.PrivateIpAddress)); err == nil && !aws.ToBool(a.Primary) {
			out[netip.PrefixFrom(addr, 32)] = true
		}
	}
	for _, x := range n.Ipv4Prefixes {
		if pf, err := netip.ParsePrefix(aws.ToString(x.Ipv4Prefix)); err == nil {
			out[pf] = true
		}
	}
	return out
}

// attachedENIs asks EC2 (DescribeNetworkInterfaces by attachment) which
// ENIs are attached to instanceID and what they hold: the witness when
// IMDS and the datastore disagree.
func (c *cloud) attachedENIs(ctx context.Context, instanceID string) (ec2ENIs, error) {
	in := &ec2.DescribeNetworkInterfacesInput{Filters: []types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{instanceID}}}}
	out := ec2ENIs{}
	err := c.describePages(ctx, in, func(n types.NetworkInterface) { out[aws.ToString(n.NetworkInterfaceId)] = n })
	if err != nil {
		return nil, fmt.Errorf("describe the ENIs attached to %s: %w", instanceID, err)
	}
	return out, nil
}

// describePages runs a DescribeNetworkInterfaces page by page, each page
// timed and counted, handing every ENI to each.
func (c *cloud) describePages(ctx context.Context, in *ec2.DescribeNetworkInterfacesInput, each func(types.NetworkInterface)) error {
	p := ec2.NewDescribeNetworkInterfacesPaginator(c.ec2, in)
	for p.HasMorePages() {
		var page *ec2.DescribeNetworkInterfacesOutput
		err := c.timed(ctx, "DescribeNetworkInterfaces", func() (err error) {
			page, err = p.NextPage(ctx)
			return err
		})
		if err != nil {
			return err
		}
		for _, n := range page.NetworkInterfaces {
			each(n)
		}
	}
	return nil
}

func tagMap(tags []types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

// newENISpec is what allocENI needs to know about the node.
type newENISpec struct {
	instanceID string
	subnetID   string
	groups     []string
	cluster    string
	extraTags  map[string]string
	device     int
	ips        int // secondary addresses to request (SIP mode)
	prefixes   int // prefixes to request (PD mode)
}

// freeDeviceIndex is the lowest device index that neither EC2 (one
// DescribeInstances, as the VPC CNI asks before each attach) nor used
// says is taken: IMDS may not show an ENI attached a moment ago. It also
// returns how many ENIs EC2 has attached to the instance on network card 0.
func (c *cloud) freeDeviceIndex(ctx context.Context, instanceID string, used map[int]bool) (dev, attached int, err error) {
	var out *ec2.DescribeInstancesOutput
	err = c.timed(ctx, "DescribeInstances", func() (err error) {
		out, err = c.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{instanceID}})
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("describe instance %s for a free device index: %w", instanceID, err)
	}
	taken := map[int]bool{0: true}
	for k, v := range used {
		taken[k] = v
	}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			for _, n := range in.NetworkInterfaces {
				a := n.Attachment
				if a == nil || a.DeviceIndex == nil {
					continue
				}
				taken[int(*a.DeviceIndex)] = true
				if aws.ToInt32(a.NetworkCardIndex) == 0 {
					attached++
				}
			}
		}
	}
	for i := 1; ; i++ {
		if !taken[i] {
			return i, attached, nil
		}
	}
}

// Manages applies the VPC CNI's rule for which attached ENIs its ipamd
// manages, from their EC2 tags: the primary ENI always; an ENI tagged
// no_manage is left alone iff the value is "true"; one tagged with this
// instance's id is managed; any other only with MANAGE_UNTAGGED_ENI
// (manageUntagged). The lab's invariants apply the same rule.
func Manages(primary bool, tags map[string]string, instanceID string, manageUntagged bool) bool {
	if primary {
		return true
	}
	if v, ok := tags[TagNoManage]; ok {
		return v != "true"
	}
	return tags[TagInstanceID] == instanceID || manageUntagged
}

// ENITags are the tags the VPC CNI puts on the ENIs it manages (createdAt
// aside): the instance's id, the cluster's name and owner with
// CLUSTER_NAME, and ADDITIONAL_ENI_TAGS (extra).
func ENITags(instanceID, cluster string, extra map[string]string) map[string]string {
	tags := map[string]string{TagInstanceID: instanceID}
	if cluster != "" {
		tags[TagCluster], tags[TagOwner] = cluster, "amazon-vpc-cni"
	}
	maps.Copy(tags, extra)
	return tags
}

// sdkTags are m's tags sorted by key, as the VPC CNI sends them.
func sdkTags(m map[string]string) []types.Tag {
	var out []types.Tag
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, types.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return out
}

// tagMissing gives a managed ENI the tags of ENITags it lacks (or has with
// another value), in one CreateTags, as the VPC CNI does for every managed
// ENI it finds at start-up or adopts in reconciliation; none missing, no
// call.
func (c *cloud) tagMissing(ctx context.Context, id string, have, want map[string]string) error {
	missing := map[string]string{}
	for k, v := range want {
		if cur, ok := have[k]; !ok || cur != v {
			missing[k] = v
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return c.createTags(ctx, id, missing)
}

// createTags tags an ENI in one CreateTags call.
func (c *cloud) createTags(ctx context.Context, id string, tags map[string]string) error {
	return c.timed(ctx, "CreateTags", func() error {
		_, err := c.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: sdkTags(tags)})
		return err
	})
}

// allocENI creates an ENI as the VPC CNI does (description, tags,
// addresses), attaches it with DeleteOnTermination and returns it as EC2
// answered (id, MAC, addresses or prefixes). A failed attach deletes the
// new ENI.
func (c *cloud) allocENI(ctx context.Context, s newENISpec) (imdsENI, error) {
	want := ENITags(s.instanceID, s.cluster, s.extraTags)
	want[TagCreatedAt] = time.Now().UTC().Format(time.RFC3339)
	tags := sdkTags(want)
	in := &ec2.CreateNetworkInterfaceInput{
		SubnetId: aws.String(s.subnetID), Description: aws.String(DescriptionPrefix + s.instanceID), Groups: s.groups,
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeNetworkInterface, Tags: tags}},
	}
	if s.prefixes > 0 {
		in.Ipv4PrefixCount = aws.Int32(int32(s.prefixes))
	} else if s.ips > 0 {
		in.SecondaryPrivateIpAddressCount = aws.Int32(int32(s.ips))
	}
	create := func() (out *ec2.CreateNetworkInterfaceOutput, err error) {
		err = c.timed(ctx, "CreateNetworkInterface", func() (err error) {
			out, err = c.ec2.CreateNetworkInterface(ctx, in)
			return err
		})
		return out, err
	}
	created, err := create()
	if err != nil && in.SecondaryPrivateIpAddressCount != nil && errorCode(err) == "InsufficientFreeAddressesInSubnet" {
		// The subnet has fewer addresses than a full ENI: create it with
		// its own address only; the pool then assigns what is left one by
		// one, so the subnet's last addresses serve pods (the VPC CNI asks
		// again with the same count and leaves them unused).
		in.SecondaryPrivateIpAddressCount = nil
		created, err = create()
	}
	if err != nil {
		return imdsENI{}, fmt.Errorf("create ENI in %s: %w", s.subnetID, err)
	}
	id := aws.ToString(created.NetworkInterface.NetworkInterfaceId)
	var att *ec2.AttachNetworkInterfaceOutput
	err = c.timed(ctx, "AttachNetworkInterface", func() (err error) {
		att, err = c.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: aws.String(id), InstanceId: aws.String(s.instanceID),
			DeviceIndex: aws.Int32(int32(s.device)), NetworkCardIndex: aws.Int32(0)})
		return err
	})
	if err != nil {
		if derr := c.deleteENI(ctx, id); derr != nil {
			c.utilsErr("AllocENIDeleteErr", derr)
		}
		return imdsENI{}, fmt.Errorf("attach %s to %s at device %d: %w", id, s.instanceID, s.device, err)
	}
	err = c.timed(ctx, "ModifyNetworkInterfaceAttribute", func() error {
		_, err := c.ec2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String(id),
			Attachment: &types.NetworkInterfaceAttachmentChanges{AttachmentId: att.AttachmentId, DeleteOnTermination: aws.Bool(true)}})
		return err
	})
	if err != nil {
		if ferr := c.freeENI(ctx, id, time.Minute); ferr != nil {
			c.utilsErr("ENICleanupUponModifyNetworkErr", ferr)
		}
		return imdsENI{}, fmt.Errorf("set DeleteOnTermination on %s: %w", id, err)
	}
	return createdENI(created.NetworkInterface, s.device), nil
}

// createdENI is what EC2's CreateNetworkInterface answer says about a new
// ENI attached at device dev.
func createdENI(n *types.NetworkInterface, dev int) imdsENI {
	e := imdsENI{ID: aws.ToString(n.NetworkInterfaceId), MAC: aws.ToString(n.MacAddress), Device: dev, SubnetID: aws.ToString(n.SubnetId)}
	if ip, err := netip.ParseAddr(aws.ToString(n.PrivateIpAddress)); err == nil {
		e.IPv4s = append(e.IPv4s, ip)
	}
	for _, a := range n.PrivateIpAddresses {
		if ip, err := netip.ParseAddr(aws.ToString(a.PrivateIpAddress)); err == nil && !aws.ToBool(a.Primary) {
			e.IPv4s = append(e.IPv4s, ip)
		}
	}
	for _, p := range n.Ipv4Prefixes {
		if pf, err := netip.ParsePrefix(aws.ToString(p.Ipv4Prefix)); err == nil {
			e.Prefixes = append(e.Prefixes, pf)
		}
	}
	return e
}

// assign adds n secondary addresses (or n prefixes) to an ENI and returns
// what EC2 assigned.
func (c *cloud) assign(ctx context.Context, eni string, n int, prefixes bool) ([]netip.Prefix, error) {
	in := &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni)}
	if prefixes {
		in.Ipv4PrefixCount = aws.Int32(int32(n))
	} else {
		in.SecondaryPrivateIpAddressCount = aws.Int32(int32(n))
	}
	var out *ec2.AssignPrivateIpAddressesOutput
	err := c.timed(ctx, "AssignPrivateIpAddresses", func() (err error) {
		out, err = c.ec2.AssignPrivateIpAddresses(ctx, in)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("assign %d %s to %s: %w", n, map[bool]string{true: "prefixes", false: "addresses"}[prefixes], eni, err)
	}
	var got []netip.Prefix
	for _, a := range out.AssignedPrivateIpAddresses {
		if ip, err := netip.ParseAddr(aws.ToString(a.PrivateIpAddress)); err == nil {
			got = append(got, netip.PrefixFrom(ip, 32))
		}
	}
	for _, p := range out.AssignedIpv4Prefixes {
		if pf, err := netip.ParsePrefix(aws.ToString(p.Ipv4Prefix)); err == nil {
			got = append(got, pf)
		}
	}
	return got, nil
}

// unassign returns addresses (/32) and prefixes (/28) to EC2.
func (c *cloud) unassign(ctx context.Context, eni string, cidrs []netip.Prefix) error {
	in := &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni)}
	for _, p := range cidrs {
		if p.Bits() == 32 {
			in.PrivateIpAddresses = append(in.PrivateIpAddresses, p.Addr().String())
		} else {
			in.Ipv4Prefixes = append(in.Ipv4Prefixes, p.String())
		}
	}
	return c.timed(ctx, "UnassignPrivateIpAddresses", func() error {
		_, err := c.ec2.UnassignPrivateIpAddresses(ctx, in)
		if err != nil {
			return fmt.Errorf("unassign %v from %s: %w", cidrs, eni, err)
		}
		return nil
	})
}

// freeENI detaches an ENI, waits until it is available and deletes it.
func (c *cloud) freeENI(ctx context.Context, id string, wait time.Duration) error {
	d, err := c.describeENIs(ctx, []string{id})
	if err != nil {
		if errorCode(errors.Unwrap(err)) == "InvalidNetworkInterfaceID.NotFound" || strings.Contains(err.Error(), "InvalidNetworkInterfaceID.NotFound") {
			return nil // already freed
		}
		return err
	}
	if n, ok := d[id]; ok && n.Attachment != nil && n.Attachment.AttachmentId != nil {
		err := c.timed(ctx, "DetachNetworkInterface", func() error {
			_, err := c.ec2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: n.Attachment.AttachmentId})
			return err
		})
		if err != nil {
			return fmt.Errorf("detach %s: %w", id, err)
		}
	}
	deadline := time.Now().Add(wait)
	backoff := 200 * time.Millisecond
	for {
		err := c.deleteENI(ctx, id)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			c.utilsErr("FreeENIDeleteErr", err)
			return err
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// utilsErr counts an error the EC2 layer could not handle, under the VPC
// CNI's awscni_aws_utils_error_count labels (fn, error text).
func (c *cloud) utilsErr(fn string, err error) {
	c.m.awsUtilsErr.WithLabelValues(fn, err.Error()).Inc()
}

func (c *cloud) deleteENI(ctx context.Context, id string) error {
	return c.timed(ctx, "DeleteNetworkInterface", func() error {
		_, err := c.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(id)})
		if err != nil && errorCode(err) != "InvalidNetworkInterfaceID.NotFound" {
			return fmt.Errorf("delete %s: %w", id, err)
		}
		return nil
	})
}

// leakedENIs returns the available ENIs in the VPC (and the cluster, when
// CLUSTER_NAME is set) that some node's ipamd created: tagged with an
// instance id, described "aws-K8S-…". As the VPC CNI, any node sweeps them,
// not only their own node (whose instance may be gone).
func (c *cloud) leakedENIs(ctx context.Context, vpcID, cluster string) ([]types.NetworkInterface, error) {
	filters := []types.Filter{
		{Name: aws.String("tag-key"), Values: []string{TagInstanceID}},
		{Name: aws.String("status"), Values: []string{"available"}},
		{Name: aws.String("vpc-id"), Values: []string{vpcID}},
	}
	if cluster != "" {
		filters = append(filters, types.Filter{Name: aws.String("tag:" + TagCluster), Values: []string{cluster}})
	}
	var out []types.NetworkInterface
	err := c.describePages(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: filters, MaxResults: aws.Int32(1000)}, func(n types.NetworkInterface) {
		if strings.HasPrefix(aws.ToString(n.Description), DescriptionPrefix) {
			out = append(out, n)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list leaked ENIs: %w", err)
	}
	return out, nil
}

// tagCreatedAt tags a leaked ENI that lacks a parseable createdAt.
func (c *cloud) tagCreatedAt(ctx context.Context, id string) error {
	return c.createTags(ctx, id, map[string]string{TagCreatedAt: time.Now().UTC().Format(time.RFC3339)})
}

// Subnet discovery tags, as the VPC CNI reads them.
const (
	// TagSubnetCNI opts a secondary subnet in ("1", any value but "0") or
	// any subnet out ("0") of new ENIs.
	TagSubnetCNI = "kubernetes.io/role/cni"
	// tagClusterPrefix starts a subnet's cluster tags.
	tagClusterPrefix = "kubernetes.io/cluster/"
)

// subnetChoice is a subnet a new ENI may be created in.
type subnetChoice struct {
	id   string
	cidr netip.Prefix
	free int
}

// eniSubnets returns the subnets to try for a new ENI, in order, with one
// DescribeSubnets, as the VPC CNI: with discovery, the subnets of the
// instance's zone in the VPC, most free addresses first, the primary one
// unless tagged kubernetes.io/role/cni=0, others only when tagged with
// another value (and, with CLUSTER_NAME, not tagged for another cluster);
// without, the primary subnet unless tagged 0.
func (c *cloud) eniSubnets(ctx context.Context, discovery bool, vpcID, az, primary, cluster string) ([]subnetChoice, error) {
	in := &ec2.DescribeSubnetsInput{SubnetIds: []string{primary}}
	if discovery {
		in = zoneSubnets(vpcID, az)
	}
	subnets, err := c.describeSubnets(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("subnets for a new ENI: %w", err)
	}
	slices.SortStableFunc(subnets, func(a, b types.Subnet) int {
		return int(aws.ToInt32(b.AvailableIpAddressCount)) - int(aws.ToInt32(a.AvailableIpAddressCount))
	})
	var choices []subnetChoice
	for _, s := range subnets {
		id := aws.ToString(s.SubnetId)
		if !subnetUsable(tagMap(s.Tags), id == primary, cluster) {
			continue
		}
		p, err := netip.ParsePrefix(aws.ToString(s.CidrBlock))
		if err != nil {
			continue
		}
		choices = append(choices, subnetChoice{id: id, cidr: p, free: int(aws.ToInt32(s.AvailableIpAddressCount))})
	}
	if len(choices) == 0 {
		return nil, fmt.Errorf("no subnet for a new ENI: the primary subnet %s is tagged %s=0 and no other is tagged for it", primary, TagSubnetCNI)
	}
	return choices, nil
}

// subnetUsable is the VPC CNI's rule for a subnet's tags.
func subnetUsable(tags map[string]string, primary bool, cluster string) bool {
	v, tagged := tags[TagSubnetCNI]
	switch {
	case v == "0" && tagged:
		return false
	case !tagged || v == "":
		return primary
	case cluster == "":
		return true
	}
	other := false
	for k := range tags {
		if strings.HasPrefix(k, tagClusterPrefix) {
			if k == tagClusterPrefix+cluster {
				return true
			}
			other = true
		}
	}
	return !other
}

// subnetExcluded says whether pods must not get addresses from an ENI in
// subnet id (one DescribeSubnets of the zone, as the VPC CNI's
// IsSubnetExcluded): tagged kubernetes.io/role/cni=0, or tagged with
// another value but for another cluster. Untagged or unknown: not
// excluded.
func (c *cloud) subnetExcluded(ctx context.Context, vpcID, az, id, cluster string) (bool, error) {
	subnets, err := c.describeSubnets(ctx, zoneSubnets(vpcID, az))
	if err != nil {
		return false, err
	}
	for _, s := range subnets {
		if aws.ToString(s.SubnetId) != id {
			continue
		}
		tags := tagMap(s.Tags)
		if v := tags[TagSubnetCNI]; v == "" {
			return false, nil
		}
		return !subnetUsable(tags, false, cluster), nil
	}
	return false, nil
}

// zoneSubnets asks for the VPC's subnets in one availability zone.
func zoneSubnets(vpcID, az string) *ec2.DescribeSubnetsInput {
	return &ec2.DescribeSubnetsInput{Filters: []types.Filter{{Name: aws.String("vpc-id"), Values: []string{vpcID}}, {Name: aws.String("availability-zone"), Values: []string{az}}}}
}

// describeSubnets makes one DescribeSubnets call, timed and counted.
func (c *cloud) describeSubnets(ctx context.Context, in *ec2.DescribeSubnetsInput) ([]types.Subnet, error) {
	var out *ec2.DescribeSubnetsOutput
	err := c.timed(ctx, "DescribeSubnets", func() (err error) {
		out, err = c.ec2.DescribeSubnets(ctx, in)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("describe subnets: %w", err)
	}
	return out.Subnets, nil
}
