package ec2query

import (
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/vpclab/vpclab/fakeec2/catalog"
	"github.com/vpclab/vpclab/fakeec2/model"
)

// XML shapes of EC2 responses (protocol 2016-11-15). Lists are
// <xxxSet><item>…</item></xxxSet>; element names are lowerCamel.

type xTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

type xTagSet struct {
	Items []xTag `xml:"item"`
}

func tagSet(t model.Tags) *xTagSet {
	if len(t) == 0 {
		return nil
	}
	keys := tagKeys(t)
	sort.Strings(keys)
	s := &xTagSet{}
	for _, k := range keys {
		s.Items = append(s.Items, xTag{k, t[k]})
	}
	return s
}

type xGroup struct {
	GroupID   string `xml:"groupId"`
	GroupName string `xml:"groupName"`
}

type xGroupSet struct {
	Items []xGroup `xml:"item"`
}

type xValue struct {
	Value string `xml:",chardata"`
}

type xPrivateIP struct {
	PrivateIPAddress string `xml:"privateIpAddress"`
	PrivateDNSName   string `xml:"privateDnsName"`
	Primary          bool   `xml:"primary"`
}

type xPrefix struct {
	IPv4Prefix string `xml:"ipv4Prefix"`
}

type xIPv6 struct {
	IPv6Address   string `xml:"ipv6Address"`
	IsPrimaryIPv6 bool   `xml:"isPrimaryIpv6"`
}

type xIPv6Prefix struct {
	IPv6Prefix string `xml:"ipv6Prefix"`
}

type xAttachment struct {
	AttachmentID        string `xml:"attachmentId"`
	InstanceID          string `xml:"instanceId"`
	InstanceOwnerID     string `xml:"instanceOwnerId"`
	DeviceIndex         int    `xml:"deviceIndex"`
	NetworkCardIndex    int    `xml:"networkCardIndex"`
	Status              string `xml:"status"`
	AttachTime          string `xml:"attachTime"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
}

type xENI struct {
	NetworkInterfaceID string       `xml:"networkInterfaceId"`
	SubnetID           string       `xml:"subnetId"`
	VPCID              string       `xml:"vpcId"`
	AvailabilityZone   string       `xml:"availabilityZone"`
	AvailabilityZoneID string       `xml:"availabilityZoneId,omitempty"`
	Description        string       `xml:"description"`
	OwnerID            string       `xml:"ownerId"`
	RequesterManaged   bool         `xml:"requesterManaged"`
	Status             string       `xml:"status"`
	MACAddress         string       `xml:"macAddress"`
	PrivateIPAddress   string       `xml:"privateIpAddress,omitempty"`
	PrivateDNSName     string       `xml:"privateDnsName,omitempty"`
	SourceDestCheck    bool         `xml:"sourceDestCheck"`
	InterfaceType      string       `xml:"interfaceType"`
	GroupSet           xGroupSet    `xml:"groupSet"`
	Attachment         *xAttachment `xml:"attachment,omitempty"`
	TagSet             *xTagSet     `xml:"tagSet"`
	PrivateIPs         struct {
		Items []xPrivateIP `xml:"item"`
	} `xml:"privateIpAddressesSet"`
	IPv4Prefixes *struct {
		Items []xPrefix `xml:"item"`
	} `xml:"ipv4PrefixSet,omitempty"`
	IPv6Addresses struct {
		Items []xIPv6 `xml:"item"`
	} `xml:"ipv6AddressesSet"`
	IPv6Prefixes *struct {
		Items []xIPv6Prefix `xml:"item"`
	} `xml:"ipv6PrefixSet,omitempty"`
}

const timeFormat = "2006-01-02T15:04:05.000Z"

func fmtTime(t time.Time) string { return t.UTC().Format(timeFormat) }

func dnsName(a netip.Addr, region string) string { return model.PrivateDNSName(a, region) }

func (s *Server) xmlENI(e *model.NetworkInterface, groups map[string]string) xENI {
	region := s.region.Name()
	x := xENI{
		NetworkInterfaceID: e.ID, SubnetID: e.SubnetID, VPCID: e.VPCID, AvailabilityZone: e.AZ, AvailabilityZoneID: e.AZID,
		Description: e.Description, OwnerID: s.region.AccountID(), Status: e.Status, MACAddress: e.MAC,
		SourceDestCheck: e.SourceDestCheck, InterfaceType: e.InterfaceType, TagSet: tagSet(e.Tags),
	}
	if e.PrivateIP.IsValid() {
		x.PrivateIPAddress, x.PrivateDNSName = e.PrivateIP.String(), dnsName(e.PrivateIP, region)
		x.PrivateIPs.Items = append(x.PrivateIPs.Items, xPrivateIP{e.PrivateIP.String(), dnsName(e.PrivateIP, region), true})
	}
	for _, a := range e.SecondaryIPs {
		x.PrivateIPs.Items = append(x.PrivateIPs.Items, xPrivateIP{a.String(), dnsName(a, region), false})
	}
	if len(e.Prefixes) > 0 {
		x.IPv4Prefixes = &struct {
			Items []xPrefix `xml:"item"`
		}{}
		for _, p := range e.Prefixes {
			x.IPv4Prefixes.Items = append(x.IPv4Prefixes.Items, xPrefix{p.String()})
		}
	}
	for _, a := range e.IPv6 {
		x.IPv6Addresses.Items = append(x.IPv6Addresses.Items, xIPv6{IPv6Address: a.String()})
	}
	if len(e.IPv6Prefixes) > 0 {
		x.IPv6Prefixes = &struct {
			Items []xIPv6Prefix `xml:"item"`
		}{}
		for _, p := range e.IPv6Prefixes {
			x.IPv6Prefixes.Items = append(x.IPv6Prefixes.Items, xIPv6Prefix{p.String()})
		}
	}
	for _, g := range e.SecurityGroups {
		x.GroupSet.Items = append(x.GroupSet.Items, xGroup{g, groups[g]})
	}
	if a := e.Attachment; a != nil {
		x.Attachment = &xAttachment{AttachmentID: a.ID, InstanceID: a.InstanceID, InstanceOwnerID: s.region.AccountID(),
			DeviceIndex: a.DeviceIndex, NetworkCardIndex: a.NetworkCardIndex, Status: a.Status,
			AttachTime: fmtTime(a.AttachTime), DeleteOnTermination: a.DeleteOnTermination}
	}
	return x
}

type xVPC struct {
	VPCID           string `xml:"vpcId"`
	OwnerID         string `xml:"ownerId"`
	State           string `xml:"state"`
	CIDRBlock       string `xml:"cidrBlock"`
	DHCPOptionsID   string `xml:"dhcpOptionsId"`
	InstanceTenancy string `xml:"instanceTenancy"`
	IsDefault       bool   `xml:"isDefault"`
	CIDRSet         struct {
		Items []xCIDRAssoc `xml:"item"`
	} `xml:"cidrBlockAssociationSet"`
	IPv6Set *struct {
		Items []xIPv6CIDRAssoc `xml:"item"`
	} `xml:"ipv6CidrBlockAssociationSet,omitempty"`
	TagSet *xTagSet `xml:"tagSet"`
}

type xCIDRAssoc struct {
	AssociationID string `xml:"associationId"`
	CIDRBlock     string `xml:"cidrBlock"`
	State         struct {
		State string `xml:"state"`
	} `xml:"cidrBlockState"`
}

type xIPv6CIDRAssoc struct {
	AssociationID string `xml:"associationId"`
	IPv6CIDRBlock string `xml:"ipv6CidrBlock"`
	State         struct {
		State string `xml:"state"`
	} `xml:"ipv6CidrBlockState"`
}

func (s *Server) xmlVPC(v *model.VPC) xVPC {
	x := xVPC{VPCID: v.ID, OwnerID: s.region.AccountID(), State: v.State, CIDRBlock: v.CIDRBlocks[0].String(),
		DHCPOptionsID: "dopt-0fake0000000001", InstanceTenancy: "default", TagSet: tagSet(v.Tags)}
	for i, c := range v.CIDRBlocks {
		a := xCIDRAssoc{AssociationID: "vpc-cidr-assoc-" + v.ID[4:] + strconv.Itoa(i), CIDRBlock: c.String()}
		a.State.State = "associated"
		x.CIDRSet.Items = append(x.CIDRSet.Items, a)
	}
	if len(v.IPv6CIDRBlocks) > 0 {
		x.IPv6Set = &struct {
			Items []xIPv6CIDRAssoc `xml:"item"`
		}{}
		for i, c := range v.IPv6CIDRBlocks {
			a := xIPv6CIDRAssoc{AssociationID: "vpc-cidr-assoc-6" + v.ID[4:] + strconv.Itoa(i), IPv6CIDRBlock: c.String()}
			a.State.State = "associated"
			x.IPv6Set.Items = append(x.IPv6Set.Items, a)
		}
	}
	return x
}

type xSubnet struct {
	SubnetID                string `xml:"subnetId"`
	SubnetArn               string `xml:"subnetArn"`
	State                   string `xml:"state"`
	VPCID                   string `xml:"vpcId"`
	OwnerID                 string `xml:"ownerId"`
	CIDRBlock               string `xml:"cidrBlock"`
	AvailableIPAddressCount int    `xml:"availableIpAddressCount"`
	AvailabilityZone        string `xml:"availabilityZone"`
	AvailabilityZoneID      string `xml:"availabilityZoneId"`
	DefaultForAz            bool   `xml:"defaultForAz"`
	MapPublicIPOnLaunch     bool   `xml:"mapPublicIpOnLaunch"`
	AssignIPv6OnCreation    bool   `xml:"assignIpv6AddressOnCreation"`
	IPv6Set                 *struct {
		Items []xIPv6CIDRAssoc `xml:"item"`
	} `xml:"ipv6CidrBlockAssociationSet,omitempty"`
	TagSet *xTagSet `xml:"tagSet"`
}

func (s *Server) xmlSubnet(sn *model.Subnet) xSubnet {
	x := xSubnet{SubnetID: sn.ID, SubnetArn: "arn:aws:ec2:" + s.region.Name() + ":" + s.region.AccountID() + ":subnet/" + sn.ID,
		State: "available", VPCID: sn.VPCID, OwnerID: s.region.AccountID(), CIDRBlock: sn.CIDR.String(),
		AvailableIPAddressCount: sn.AvailableIPs, AvailabilityZone: sn.AZ, AvailabilityZoneID: sn.AZID, TagSet: tagSet(sn.Tags)}
	if sn.IPv6CIDR.IsValid() {
		a := xIPv6CIDRAssoc{AssociationID: "subnet-cidr-assoc-" + sn.ID[7:], IPv6CIDRBlock: sn.IPv6CIDR.String()}
		a.State.State = "associated"
		x.IPv6Set = &struct {
			Items []xIPv6CIDRAssoc `xml:"item"`
		}{Items: []xIPv6CIDRAssoc{a}}
	}
	return x
}

type xSecurityGroup struct {
	OwnerID          string          `xml:"ownerId"`
	GroupID          string          `xml:"groupId"`
	GroupName        string          `xml:"groupName"`
	GroupDescription string          `xml:"groupDescription"`
	VPCID            string          `xml:"vpcId"`
	SecurityGroupArn string          `xml:"securityGroupArn"`
	IPPermissions    []xIPPermission `xml:"ipPermissions>item"`
	IPPermsEgress    []xIPPermission `xml:"ipPermissionsEgress>item"`
	TagSet           *xTagSet        `xml:"tagSet"`
}

type xInstance struct {
	InstanceID    string `xml:"instanceId"`
	ImageID       string `xml:"imageId"`
	InstanceState struct {
		Code int    `xml:"code"`
		Name string `xml:"name"`
	} `xml:"instanceState"`
	PrivateDNSName string `xml:"privateDnsName"`
	DNSName        string `xml:"dnsName"`
	Reason         string `xml:"reason"`
	AmiLaunchIndex int    `xml:"amiLaunchIndex"`
	InstanceType   string `xml:"instanceType"`
	LaunchTime     string `xml:"launchTime"`
	Placement      struct {
		AvailabilityZone   string `xml:"availabilityZone"`
		AvailabilityZoneID string `xml:"availabilityZoneId"`
		Tenancy            string `xml:"tenancy"`
	} `xml:"placement"`
	SubnetID         string    `xml:"subnetId,omitempty"`
	VPCID            string    `xml:"vpcId,omitempty"`
	PrivateIPAddress string    `xml:"privateIpAddress,omitempty"`
	SourceDestCheck  bool      `xml:"sourceDestCheck"`
	Architecture     string    `xml:"architecture"`
	Hypervisor       string    `xml:"hypervisor"`
	RootDeviceType   string    `xml:"rootDeviceType"`
	GroupSet         xGroupSet `xml:"groupSet"`
	TagSet           *xTagSet  `xml:"tagSet"`
	NetworkIfaces    struct {
		Items []xENI `xml:"item"`
	} `xml:"networkInterfaceSet"`
	MetadataOptions struct {
		State        string `xml:"state"`
		HTTPTokens   string `xml:"httpTokens"`
		HopLimit     int    `xml:"httpPutResponseHopLimit"`
		HTTPEndpoint string `xml:"httpEndpoint"`
	} `xml:"metadataOptions"`
}

type xReservation struct {
	ReservationID string    `xml:"reservationId"`
	OwnerID       string    `xml:"ownerId"`
	GroupSet      xGroupSet `xml:"groupSet"`
	Instances     struct {
		Items []xInstance `xml:"item"`
	} `xml:"instancesSet"`
}

type xNetworkCard struct {
	NetworkCardIndex         int    `xml:"networkCardIndex"`
	NetworkPerformance       string `xml:"networkPerformance"`
	MaximumNetworkInterfaces int    `xml:"maximumNetworkInterfaces"`
}

type xInstanceType struct {
	InstanceType      string `xml:"instanceType"`
	CurrentGeneration bool   `xml:"currentGeneration"`
	BareMetal         bool   `xml:"bareMetal"`
	Hypervisor        string `xml:"hypervisor,omitempty"`
	VCPUInfo          struct {
		DefaultVCpus int `xml:"defaultVCpus"`
	} `xml:"vCpuInfo"`
	MemoryInfo struct {
		SizeInMiB int `xml:"sizeInMiB"`
	} `xml:"memoryInfo"`
	NetworkInfo struct {
		NetworkPerformance       string `xml:"networkPerformance"`
		MaximumNetworkInterfaces int    `xml:"maximumNetworkInterfaces"`
		MaximumNetworkCards      int    `xml:"maximumNetworkCards"`
		DefaultNetworkCardIndex  int    `xml:"defaultNetworkCardIndex"`
		NetworkCards             struct {
			Items []xNetworkCard `xml:"item"`
		} `xml:"networkCards"`
		IPv4AddressesPerInterface int    `xml:"ipv4AddressesPerInterface"`
		IPv6AddressesPerInterface int    `xml:"ipv6AddressesPerInterface"`
		IPv6Supported             bool   `xml:"ipv6Supported"`
		EnaSupport                string `xml:"enaSupport"`
		EfaSupported              bool   `xml:"efaSupported"`
		EfaInfo                   *struct {
			MaximumEfaInterfaces int `xml:"maximumEfaInterfaces"`
		} `xml:"efaInfo,omitempty"`
	} `xml:"networkInfo"`
}

func xmlInstanceType(t *catalog.InstanceType) xInstanceType {
	x := xInstanceType{InstanceType: t.Name, CurrentGeneration: true, BareMetal: t.BareMetal, Hypervisor: t.Hypervisor}
	x.VCPUInfo.DefaultVCpus = t.VCPUs
	x.MemoryInfo.SizeInMiB = t.MemoryMiB
	n := &x.NetworkInfo
	n.NetworkPerformance, n.MaximumNetworkInterfaces = t.NetworkPerformance, t.MaxENIs
	n.MaximumNetworkCards, n.DefaultNetworkCardIndex = len(t.Cards), t.DefaultCard
	for _, c := range t.Cards {
		n.NetworkCards.Items = append(n.NetworkCards.Items, xNetworkCard{c.Index, c.Performance, c.MaxENIs})
	}
	n.IPv4AddressesPerInterface, n.IPv6AddressesPerInterface, n.IPv6Supported = t.IPv4PerENI, t.IPv6PerENI, t.IPv6Supported
	n.EnaSupport = "required"
	if t.Hypervisor == "xen" {
		n.EnaSupport = "supported"
	}
	if t.MaxEFA > 0 {
		n.EfaSupported = true
		n.EfaInfo = &struct {
			MaximumEfaInterfaces int `xml:"maximumEfaInterfaces"`
		}{t.MaxEFA}
	}
	return x
}

type xTrunkAssoc struct {
	AssociationID     string   `xml:"associationId"`
	BranchInterfaceID string   `xml:"branchInterfaceId"`
	TrunkInterfaceID  string   `xml:"trunkInterfaceId"`
	InterfaceProtocol string   `xml:"interfaceProtocol"`
	VlanID            int      `xml:"vlanId"`
	GreKey            int      `xml:"greKey,omitempty"`
	TagSet            *xTagSet `xml:"tagSet"`
}

func xmlTrunk(t *model.TrunkAssociation) xTrunkAssoc {
	return xTrunkAssoc{t.ID, t.BranchID, t.TrunkID, t.Protocol, t.VlanID, t.GreKey, tagSet(t.Tags)}
}
