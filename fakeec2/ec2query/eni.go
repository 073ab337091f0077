package ec2query

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/vpclab/vpclab/fakeec2/model"
)

func (s *Server) createNetworkInterface(q *qnode) (any, error) {
	in := model.CreateNetworkInterfaceInput{SubnetID: q.str("SubnetId"), Description: q.str("Description"), InterfaceType: q.str("InterfaceType"), ClientToken: q.str("ClientToken")}
	var err error
	if in.SecurityGroups, err = q.strings("SecurityGroupId"); err != nil {
		return nil, err
	}
	if v := q.str("PrivateIpAddress"); v != "" {
		if in.PrivateIP, err = parseAddr("PrivateIpAddress", v, false); err != nil {
			return nil, err
		}
	}
	pips, err := q.items("PrivateIpAddresses")
	if err != nil {
		return nil, err
	}
	for _, p := range pips {
		a, err := parseAddr("PrivateIpAddresses.PrivateIpAddress", p.str("PrivateIpAddress"), false)
		if err != nil {
			return nil, err
		}
		primary, err := p.boolean("Primary")
		if err != nil {
			return nil, err
		}
		if primary != nil && *primary {
			if in.PrivateIP.IsValid() && in.PrivateIP != a {
				return nil, model.ErrCombination("Only one primary private IP address can be specified")
			}
			in.PrivateIP = a
		} else {
			in.SecondaryIPs = append(in.SecondaryIPs, a)
		}
	}
	if in.SecondaryCount, err = q.count("SecondaryPrivateIpAddressCount"); err != nil {
		return nil, err
	}
	if len(pips) > 1 && in.SecondaryCount > 0 {
		return nil, model.ErrCombination("The parameters 'SecondaryPrivateIpAddressCount' and 'PrivateIpAddresses' cannot be used together")
	}
	if in.Prefixes, err = q.prefixItems("Ipv4Prefix"); err != nil {
		return nil, err
	}
	if in.PrefixCount, err = q.count("Ipv4PrefixCount"); err != nil {
		return nil, err
	}
	if in.IPv6Addrs, err = q.ipv6Items("Ipv6Addresses", "Ipv6Address"); err != nil {
		return nil, err
	}
	if in.IPv6Count, err = q.count("Ipv6AddressCount"); err != nil {
		return nil, err
	}
	if in.IPv6Prefixes, err = q.prefixItems("Ipv6Prefix"); err != nil {
		return nil, err
	}
	if in.IPv6PrefixCnt, err = q.count("Ipv6PrefixCount"); err != nil {
		return nil, err
	}
	if in.Tags, err = q.tagSpecs("network-interface"); err != nil {
		return nil, err
	}
	e, err := s.region.CreateNetworkInterface(in)
	if err != nil {
		return nil, err
	}
	return struct {
		ENI         xENI   `xml:"networkInterface"`
		ClientToken string `xml:"clientToken,omitempty"`
	}{s.xmlENI(&e, s.groupNames()), in.ClientToken}, nil
}

func (s *Server) deleteNetworkInterface(q *qnode) (any, error) {
	if err := s.region.DeleteNetworkInterface(q.str("NetworkInterfaceId")); err != nil {
		return nil, err
	}
	return returnTrue{true}, nil
}

var eniFilters = filterSet[*model.NetworkInterface]{
	tags: func(v *model.NetworkInterface) model.Tags { return v.Tags },
	fields: map[string]fieldFunc[*model.NetworkInterface]{
		"network-interface-id": func(v *model.NetworkInterface) []string { return []string{v.ID} },
		"subnet-id":            func(v *model.NetworkInterface) []string { return []string{v.SubnetID} },
		"vpc-id":               func(v *model.NetworkInterface) []string { return []string{v.VPCID} },
		"availability-zone":    func(v *model.NetworkInterface) []string { return []string{v.AZ} },
		"description":          func(v *model.NetworkInterface) []string { return []string{v.Description} },
		"status":               func(v *model.NetworkInterface) []string { return []string{v.Status} },
		"interface-type":       func(v *model.NetworkInterface) []string { return []string{v.InterfaceType} },
		"mac-address":          func(v *model.NetworkInterface) []string { return []string{v.MAC} },
		"requester-managed":    func(v *model.NetworkInterface) []string { return []string{"false"} },
		"source-dest-check":    func(v *model.NetworkInterface) []string { return []string{strconv.FormatBool(v.SourceDestCheck)} },
		"group-id":             func(v *model.NetworkInterface) []string { return v.SecurityGroups },
		"private-ip-address": func(v *model.NetworkInterface) []string {
			return addrStrings(append([]netip.Addr{v.PrivateIP}, v.SecondaryIPs...))
		},
		"addresses.private-ip-address": func(v *model.NetworkInterface) []string {
			return addrStrings(append([]netip.Addr{v.PrivateIP}, v.SecondaryIPs...))
		},
		"ipv6-addresses.ipv6-address":      func(v *model.NetworkInterface) []string { return addrStrings(v.IPv6) },
		"ipv4-prefix":                      func(v *model.NetworkInterface) []string { return prefixStrings(v.Prefixes) },
		"attachment.instance-id":           attachField(func(a *model.Attachment) string { return a.InstanceID }),
		"attachment.attachment-id":         attachField(func(a *model.Attachment) string { return a.ID }),
		"attachment.device-index":          attachField(func(a *model.Attachment) string { return strconv.Itoa(a.DeviceIndex) }),
		"attachment.network-card-index":    attachField(func(a *model.Attachment) string { return strconv.Itoa(a.NetworkCardIndex) }),
		"attachment.status":                attachField(func(a *model.Attachment) string { return a.Status }),
		"attachment.delete-on-termination": attachField(func(a *model.Attachment) string { return strconv.FormatBool(a.DeleteOnTermination) }),
	},
	context: func(s *Server) map[string]fieldFunc[*model.NetworkInterface] {
		account := func(*model.NetworkInterface) []string { return []string{s.region.AccountID()} }
		return map[string]fieldFunc[*model.NetworkInterface]{
			"owner-id": account,
			"attachment.instance-owner-id": func(v *model.NetworkInterface) []string {
				return map[bool][]string{true: account(v)}[v.Attachment != nil]
			},
			"private-dns-name": func(v *model.NetworkInterface) []string { return []string{dnsName(v.PrivateIP, s.region.Name())} },
		}
	},
}

func attachField(f func(*model.Attachment) string) fieldFunc[*model.NetworkInterface] {
	return func(v *model.NetworkInterface) []string {
		if v.Attachment == nil {
			return nil
		}
		return []string{f(v.Attachment)}
	}
}

func (s *Server) attachNetworkInterface(q *qnode) (any, error) {
	in := model.AttachNetworkInterfaceInput{ENIID: q.str("NetworkInterfaceId"), InstanceID: q.str("InstanceId")}
	if in.ENIID == "" {
		return nil, model.ErrMissing("NetworkInterfaceId")
	}
	if in.InstanceID == "" {
		return nil, model.ErrMissing("InstanceId")
	}
	if !q.present("DeviceIndex") {
		return nil, model.ErrMissing("DeviceIndex")
	}
	var err error
	if in.DeviceIndex, err = q.integer("DeviceIndex"); err != nil {
		return nil, err
	}
	if in.CardIndex, err = q.integer("NetworkCardIndex"); err != nil {
		return nil, err
	}
	a, err := s.region.AttachNetworkInterface(in)
	if err != nil {
		return nil, err
	}
	return struct {
		AttachmentID     string `xml:"attachmentId"`
		NetworkCardIndex int    `xml:"networkCardIndex"`
	}{a.ID, a.NetworkCardIndex}, nil
}

func (s *Server) detachNetworkInterface(q *qnode) (any, error) {
	force, err := q.boolean("Force")
	if err != nil {
		return nil, err
	}
	if err := s.region.DetachNetworkInterface(q.str("AttachmentId"), force != nil && *force); err != nil {
		return nil, err
	}
	return returnTrue{true}, nil
}

func (s *Server) modifyNetworkInterfaceAttribute(q *qnode) (any, error) {
	in := model.ModifyNetworkInterfaceInput{ENIID: q.str("NetworkInterfaceId")}
	if q.child("Description") != nil {
		d := q.child("Description").str("Value")
		in.Description = &d
	}
	if q.child("SourceDestCheck") != nil {
		b, err := q.child("SourceDestCheck").boolean("Value")
		if err != nil {
			return nil, err
		}
		if b == nil {
			return nil, model.ErrMissing("SourceDestCheck.Value")
		}
		in.SourceDestCheck = b
	}
	var err error
	if in.SecurityGroups, err = q.strings("SecurityGroupId"); err != nil {
		return nil, err
	}
	if a := q.child("Attachment"); a != nil {
		in.AttachmentID = a.str("AttachmentId")
		if in.DeleteOnTermination, err = a.boolean("DeleteOnTermination"); err != nil {
			return nil, err
		}
		if in.AttachmentID == "" {
			return nil, model.ErrMissing("Attachment.AttachmentId")
		}
	}
	if err := s.region.ModifyNetworkInterfaceAttribute(in); err != nil {
		return nil, err
	}
	return returnTrue{true}, nil
}

func (s *Server) createNetworkInterfacePermission(q *qnode) (any, error) {
	id := q.str("NetworkInterfaceId")
	if _, err := s.region.NetworkInterface(id); err != nil {
		if id == "" {
			return nil, model.ErrMissing("NetworkInterfaceId")
		}
		return nil, err
	}
	perm := q.str("Permission")
	if perm != "INSTANCE-ATTACH" && perm != "EIP-ASSOCIATE" {
		return nil, model.ErrInvalid("Value (%s) for parameter Permission is invalid.", perm)
	}
	type p struct {
		ID    string `xml:"networkInterfacePermissionId"`
		ENIID string `xml:"networkInterfaceId"`
		Perm  string `xml:"permission"`
		Acct  string `xml:"awsAccountId,omitempty"`
		Svc   string `xml:"awsService,omitempty"`
		State struct {
			State string `xml:"state"`
		} `xml:"permissionState"`
	}
	out := struct {
		P p `xml:"interfacePermission"`
	}{p{ID: "eni-perm-" + strings.TrimPrefix(id, "eni-"), ENIID: id, Perm: perm, Acct: q.str("AwsAccountId"), Svc: q.str("AwsService")}}
	out.P.State.State = "GRANTED"
	return out, nil
}

var describeNetworkInterfaces = describe[model.NetworkInterface]{
	// As Describe calls see them: not yet what is younger than the
	// consistency lag.
	list:    listed(func(s *Server) []model.NetworkInterface { return s.region.VisibleENIs(s.now()) }),
	idParam: "NetworkInterfaceId", id: func(v *model.NetworkInterface) string { return v.ID }, kind: model.KindENI, notFound: model.ErrENINotFound,
	noIDsWithPaging: true, filters: eniFilters, set: "networkInterfaceSet", minMax: 5, maxMax: 1000,
	render: func(s *Server, page []*model.NetworkInterface) []any {
		groups := s.groupNames()
		out := make([]any, len(page))
		for i, e := range page {
			out[i] = s.xmlENI(e, groups)
		}
		return out
	},
}
