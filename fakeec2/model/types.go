package model

import (
	"maps"
	"net/netip"
	"slices"
	"time"
)

// Tags are a resource's user tags, key to value.
type Tags map[string]string

// VPC is a snapshot of one VPC.
type VPC struct {
	ID             string         `json:"id,omitempty"`
	CIDRBlocks     []netip.Prefix `json:"cidrBlocks,omitempty"`
	IPv6CIDRBlocks []netip.Prefix `json:"ipv6CidrBlocks,omitempty"`
	State          string         `json:"state,omitempty"`
	DefaultGroupID string         `json:"defaultGroupId,omitempty"`
	Tags           Tags           `json:"tags,omitempty"`
}

// Subnet is a snapshot of one subnet, with its exact free-address count.
type Subnet struct {
	ID           string       `json:"id,omitempty"`
	VPCID        string       `json:"vpcId,omitempty"`
	AZ           string       `json:"az,omitempty"`
	AZID         string       `json:"azId,omitempty"`
	CIDR         netip.Prefix `json:"cidr,omitempty"`
	IPv6CIDR     netip.Prefix `json:"ipv6Cidr,omitempty"` // zero when the subnet has no IPv6 block
	AvailableIPs int          `json:"availableIps"`
	FreePrefixes int          `json:"freePrefixes"` // aligned /28 blocks entirely free
	Tags         Tags         `json:"tags,omitempty"`
}

// SecurityGroup is a snapshot of one security group.
type SecurityGroup struct {
	ID          string `json:"id,omitempty"`
	Name        string `json:"name,omitempty"`
	Description string `json:"description,omitempty"`
	VPCID       string `json:"vpcId,omitempty"`
	Tags        Tags   `json:"tags,omitempty"`
	// Rules are the group's ingress and egress rules, in the order added.
	Rules []SGRule `json:"rules,omitempty"`
}

// MetadataOptions are an instance's IMDS settings.
type MetadataOptions struct {
	HTTPTokens   string `json:"httpTokens,omitempty"`   // optional | required
	HTTPEndpoint string `json:"httpEndpoint,omitempty"` // enabled | disabled
	HopLimit     int    `json:"hopLimit"`               // http-put-response-hop-limit, 1..64
}

// Instance is a snapshot of one instance.
type Instance struct {
	ID             string          `json:"id,omitempty"`
	Type           string          `json:"type,omitempty"`
	ImageID        string          `json:"imageId,omitempty"`
	SubnetID       string          `json:"subnetId,omitempty"`
	VPCID          string          `json:"vpcId,omitempty"`
	AZ             string          `json:"az,omitempty"`
	AZID           string          `json:"azId,omitempty"`
	State          string          `json:"state,omitempty"` // running | terminated
	LaunchTime     time.Time       `json:"launchTime,omitempty"`
	PrivateIP      netip.Addr      `json:"privateIp,omitempty"`
	PrimaryENI     string          `json:"primaryEni,omitempty"`
	SecurityGroups []string        `json:"securityGroups,omitempty"`
	Metadata       MetadataOptions `json:"metadata,omitempty"`
	Tags           Tags            `json:"tags,omitempty"`
}

// Attachment is an ENI's attachment to an instance.
type Attachment struct {
	ID                  string    `json:"id,omitempty"`
	InstanceID          string    `json:"instanceId,omitempty"`
	DeviceIndex         int       `json:"deviceIndex"`
	NetworkCardIndex    int       `json:"networkCardIndex"`
	Status              string    `json:"status,omitempty"` // attaching | attached | detaching
	AttachTime          time.Time `json:"attachTime,omitempty"`
	DeleteOnTermination bool      `json:"deleteOnTermination"`
}

// NetworkInterface is a snapshot of one ENI.
type NetworkInterface struct {
	ID              string         `json:"id,omitempty"`
	SubnetID        string         `json:"subnetId,omitempty"`
	VPCID           string         `json:"vpcId,omitempty"`
	AZ              string         `json:"az,omitempty"`
	AZID            string         `json:"azId,omitempty"`
	Description     string         `json:"description,omitempty"`
	MAC             string         `json:"mac,omitempty"`
	InterfaceType   string         `json:"interfaceType,omitempty"` // interface | trunk | branch | efa
	Status          string         `json:"status,omitempty"`        // available | attaching | in-use | detaching
	PrivateIP       netip.Addr     `json:"privateIp,omitempty"`
	SecondaryIPs    []netip.Addr   `json:"secondaryIps,omitempty"` // in assignment order
	Prefixes        []netip.Prefix `json:"prefixes,omitempty"`
	IPv6            []netip.Addr   `json:"ipv6,omitempty"`
	IPv6Prefixes    []netip.Prefix `json:"ipv6Prefixes,omitempty"`
	SecurityGroups  []string       `json:"securityGroups,omitempty"`
	SourceDestCheck bool           `json:"sourceDestCheck"`
	Attachment      *Attachment    `json:"attachment,omitempty"`
	Tags            Tags           `json:"tags,omitempty"`
	CreatedAt       time.Time      `json:"createdAt,omitempty"`
}

// Slots is how many of the type's IPv4-per-ENI slots the ENI uses: the
// primary address, every secondary address and every /28 prefix.
func (n *NetworkInterface) Slots() int { return 1 + len(n.SecondaryIPs) + len(n.Prefixes) }

// TrunkAssociation links a branch ENI to a trunk ENI with a VLAN id.
type TrunkAssociation struct {
	ID       string `json:"id,omitempty"`
	TrunkID  string `json:"trunkId,omitempty"`
	BranchID string `json:"branchId,omitempty"`
	Protocol string `json:"protocol,omitempty"` // VLAN
	VlanID   int    `json:"vlanId"`
	GreKey   int    `json:"greKey,omitempty"`
	Tags     Tags   `json:"tags,omitempty"`
}

func (t Tags) clone() Tags {
	if len(t) == 0 {
		return Tags{}
	}
	return maps.Clone(t)
}

func (n NetworkInterface) clone() NetworkInterface {
	c := n
	c.SecondaryIPs = slices.Clone(n.SecondaryIPs)
	c.Prefixes = slices.Clone(n.Prefixes)
	c.IPv6 = slices.Clone(n.IPv6)
	c.IPv6Prefixes = slices.Clone(n.IPv6Prefixes)
	c.SecurityGroups = slices.Clone(n.SecurityGroups)
	c.Tags = n.Tags.clone()
	if n.Attachment != nil {
		a := *n.Attachment
		c.Attachment = &a
	}
	return c
}

func (i Instance) clone() Instance {
	c := i
	c.SecurityGroups = slices.Clone(i.SecurityGroups)
	c.Tags = i.Tags.clone()
	return c
}

func (g SecurityGroup) clone() SecurityGroup {
	c := g
	c.Tags = g.Tags.clone()
	c.Rules = cloneRules(g.Rules)
	return c
}
