package ec2query

import (
	"encoding/base64"
	"github.com/vpclab/vpclab/fakeec2/catalog"
	"github.com/vpclab/vpclab/fakeec2/model"
	"net/netip"
	"strconv"
	"strings"
)

// handler decodes one action's parameters, calls the model and returns the
// response body (its fields become children of <ActionResponse>).
type handler func(s *Server, q *qnode) (any, error)

var handlers map[string]handler

func init() {
	handlers = map[string]handler{
		"CreateVpc":                          (*Server).createVpc,
		"DescribeVpcs":                       (*Server).describeVpcs,
		"CreateSubnet":                       (*Server).createSubnet,
		"DescribeSubnets":                    (*Server).describeSubnets,
		"CreateSecurityGroup":                (*Server).createSecurityGroup,
		"DescribeSecurityGroups":             (*Server).describeSecurityGroups,
		"RunInstances":                       (*Server).runInstances,
		"TerminateInstances":                 (*Server).terminateInstances,
		"DescribeInstances":                  (*Server).describeInstances,
		"DescribeInstanceTypes":              (*Server).describeInstanceTypes,
		"ModifyInstanceMetadataOptions":      (*Server).modifyInstanceMetadataOptions,
		"CreateNetworkInterface":             (*Server).createNetworkInterface,
		"DeleteNetworkInterface":             (*Server).deleteNetworkInterface,
		"DescribeNetworkInterfaces":          (*Server).describeNetworkInterfaces,
		"AttachNetworkInterface":             (*Server).attachNetworkInterface,
		"DetachNetworkInterface":             (*Server).detachNetworkInterface,
		"ModifyNetworkInterfaceAttribute":    (*Server).modifyNetworkInterfaceAttribute,
		"AssignPrivateIpAddresses":           (*Server).assignPrivateIPs,
		"UnassignPrivateIpAddresses":         (*Server).unassignPrivateIPs,
		"AssignIpv6Addresses":                (*Server).assignIPv6,
		"UnassignIpv6Addresses":              (*Server).unassignIPv6,
		"CreateTags":                         (*Server).createTags,
		"DeleteTags":                         (*Server).deleteTags,
		"AssociateTrunkInterface":            (*Server).associateTrunk,
		"DisassociateTrunkInterface":         (*Server).disassociateTrunk,
		"DescribeTrunkInterfaceAssociations": (*Server).describeTrunkAssociations,
		"CreateNetworkInterfacePermission":   (*Server).createNetworkInterfacePermission,
		"DescribeRegions":                    (*Server).describeRegions,
		"DescribeAvailabilityZones":          (*Server).describeAvailabilityZones,
	}
}

// Actions returns the names of every supported EC2 action.
func Actions() []string {
	out := make([]string, 0, len(handlers))
	for a := range handlers {
		out = append(out, a)
	}
	return out
}

type returnTrue struct {
	Return bool `xml:"return"`
}

// paginate applies MaxResults/NextToken to a sorted list.
func paginate[T any](items []T, q *qnode, lo, hi int) ([]T, string, error) {
	if !q.present("MaxResults") && !q.present("NextToken") {
		return items, "", nil
	}
	n := len(items)
	if q.present("MaxResults") {
		v, err := q.integer("MaxResults")
		if err != nil {
			return nil, "", err
		}
		if v < lo || v > hi {
			return nil, "", model.ErrInvalid("Value ( %d ) for parameter maxResults is invalid. Expecting a value between %d and %d.", v, lo, hi)
		}
		n = v
	}
	off := 0
	if tok := q.str("NextToken"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		o, err2 := strconv.Atoi(strings.TrimPrefix(string(b), "offset:"))
		if err != nil || err2 != nil || !strings.HasPrefix(string(b), "offset:") || o < 0 || o > len(items) {
			return nil, "", model.Errorf("InvalidPaginationToken", "The pagination token '%s' is invalid.", tok)
		}
		off = o
	}
	end := min(off+n, len(items))
	next := ""
	if end < len(items) {
		next = base64.RawURLEncoding.EncodeToString([]byte("offset:" + strconv.Itoa(end)))
	}
	return items[off:end], next, nil
}

func noIDsWithPaging(q *qnode, idParam string) error {
	if q.child(idParam) != nil && q.present("MaxResults") {
		return model.ErrCombination("The parameter %s cannot be used with the parameter maxResults", idParam)
	}
	return nil
}

// ---- VPCs, subnets, security groups ----

func (s *Server) createVpc(q *qnode) (any, error) {
	c, err := q.required("CidrBlock")
	if err != nil {
		return nil, err
	}
	p, err := parsePrefix("CidrBlock", c)
	if err != nil {
		return nil, err
	}
	v6, err := q.boolean("AmazonProvidedIpv6CidrBlock")
	if err != nil {
		return nil, err
	}
	tags, err := q.tagSpecs("vpc")
	if err != nil {
		return nil, err
	}
	v, err := s.region.CreateVPC(model.CreateVPCInput{CIDR: p, AmazonProvidedIPv6: v6 != nil && *v6, Tags: tags})
	if err != nil {
		return nil, err
	}
	return struct {
		VPC xVPC `xml:"vpc"`
	}{s.xmlVPC(&v)}, nil
}

var vpcFilters = filterSet[*model.VPC]{
	tags: func(v *model.VPC) model.Tags { return v.Tags },
	fields: map[string]fieldFunc[*model.VPC]{
		"vpc-id":                            func(v *model.VPC) []string { return []string{v.ID} },
		"state":                             func(v *model.VPC) []string { return []string{v.State} },
		"is-default":                        func(v *model.VPC) []string { return []string{"false"} },
		"cidr":                              func(v *model.VPC) []string { return []string{v.CIDRBlocks[0].String()} },
		"cidr-block-association.cidr-block": func(v *model.VPC) []string { return prefixStrings(v.CIDRBlocks) },
		"ipv6-cidr-block-association.ipv6-cidr-block": func(v *model.VPC) []string { return prefixStrings(v.IPv6CIDRBlocks) },
	},
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func addrStrings(as []netip.Addr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

// selectByID keeps the items named in ids (all when ids is empty), failing
// on the first unknown id.
func selectByID[T any](items []T, id func(T) string, ids []string, kind model.IDKind, notFound func(string) *model.APIError) ([]T, error) {
	if len(ids) == 0 {
		return items, nil
	}
	byID := make(map[string]T, len(items))
	for _, it := range items {
		byID[id(it)] = it
	}
	out := make([]T, 0, len(ids))
	seen := map[string]bool{}
	for _, x := range ids {
		if err := model.CheckID(kind, x); err != nil {
			return nil, err
		}
		it, ok := byID[x]
		if !ok {
			return nil, notFound(x)
		}
		if !seen[x] {
			seen[x] = true
			out = append(out, it)
		}
	}
	return out, nil
}

func filterItems[T any](items []T, fs filterSet[T], q *qnode) ([]T, error) {
	filters, err := q.filters()
	if err != nil {
		return nil, err
	}
	pred, err := fs.compile(filters)
	if err != nil {
		return nil, err
	}
	out := items[:0:0]
	for _, it := range items {
		if pred(it) {
			out = append(out, it)
		}
	}
	return out, nil
}

func ptrs[T any](xs []T) []*T {
	out := make([]*T, len(xs))
	for i := range xs {
		out[i] = &xs[i]
	}
	return out
}

func (s *Server) describeVpcs(q *qnode) (any, error) {
	ids, err := q.strings("VpcId")
	if err != nil {
		return nil, err
	}
	items, err := selectByID(ptrs(s.region.VPCs()), func(v *model.VPC) string { return v.ID }, ids, model.KindVPC, model.ErrVPCNotFound)
	if err != nil {
		return nil, err
	}
	if items, err = filterItems(items, vpcFilters, q); err != nil {
		return nil, err
	}
	page, next, err := paginate(items, q, 5, 1000)
	if err != nil {
		return nil, err
	}
	out := struct {
		Set struct {
			Items []xVPC `xml:"item"`
		} `xml:"vpcSet"`
		NextToken string `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, v := range page {
		out.Set.Items = append(out.Set.Items, s.xmlVPC(v))
	}
	return out, nil
}

func (s *Server) createSubnet(q *qnode) (any, error) {
	vpc, err := q.required("VpcId")
	if err != nil {
		return nil, err
	}
	c, err := q.required("CidrBlock")
	if err != nil {
		return nil, err
	}
	p, err := parsePrefix("CidrBlock", c)
	if err != nil {
		return nil, err
	}
	in := model.CreateSubnetInput{VPCID: vpc, CIDR: p, AZ: q.str("AvailabilityZone")}
	if az := q.str("AvailabilityZoneId"); az != "" && in.AZ == "" {
		for _, l := range "abcdef" {
			cand := s.region.Name() + string(l)
			if model.AZID(s.region.Name(), cand) == az {
				in.AZ = cand
			}
		}
		if in.AZ == "" {
			return nil, model.ErrInvalid("Value (%s) for parameter availabilityZoneId is invalid.", az)
		}
	}
	if v := q.str("Ipv6CidrBlock"); v != "" {
		if in.IPv6CIDR, err = parsePrefix("Ipv6CidrBlock", v); err != nil {
			return nil, err
		}
	}
	if in.Tags, err = q.tagSpecs("subnet"); err != nil {
		return nil, err
	}
	sn, err := s.region.CreateSubnet(in)
	if err != nil {
		return nil, err
	}
	return struct {
		Subnet xSubnet `xml:"subnet"`
	}{s.xmlSubnet(&sn)}, nil
}

var subnetFilters = filterSet[*model.Subnet]{
	tags: func(v *model.Subnet) model.Tags { return v.Tags },
	fields: map[string]fieldFunc[*model.Subnet]{
		"subnet-id":                  func(v *model.Subnet) []string { return []string{v.ID} },
		"vpc-id":                     func(v *model.Subnet) []string { return []string{v.VPCID} },
		"availability-zone":          func(v *model.Subnet) []string { return []string{v.AZ} },
		"availabilityZone":           func(v *model.Subnet) []string { return []string{v.AZ} },
		"availability-zone-id":       func(v *model.Subnet) []string { return []string{v.AZID} },
		"cidr-block":                 func(v *model.Subnet) []string { return []string{v.CIDR.String()} },
		"cidr":                       func(v *model.Subnet) []string { return []string{v.CIDR.String()} },
		"cidrBlock":                  func(v *model.Subnet) []string { return []string{v.CIDR.String()} },
		"state":                      func(v *model.Subnet) []string { return []string{"available"} },
		"default-for-az":             func(v *model.Subnet) []string { return []string{"false"} },
		"available-ip-address-count": func(v *model.Subnet) []string { return []string{strconv.Itoa(v.AvailableIPs)} },
		"ipv6-cidr-block-association.ipv6-cidr-block": func(v *model.Subnet) []string {
			if v.IPv6CIDR.IsValid() {
				return []string{v.IPv6CIDR.String()}
			}
			return nil
		},
	},
}

func (s *Server) describeSubnets(q *qnode) (any, error) {
	ids, err := q.strings("SubnetId")
	if err != nil {
		return nil, err
	}
	items, err := selectByID(ptrs(s.region.Subnets()), func(v *model.Subnet) string { return v.ID }, ids, model.KindSubnet, model.ErrSubnetNotFound)
	if err != nil {
		return nil, err
	}
	if items, err = filterItems(items, subnetFilters, q); err != nil {
		return nil, err
	}
	page, next, err := paginate(items, q, 5, 1000)
	if err != nil {
		return nil, err
	}
	out := struct {
		Set struct {
			Items []xSubnet `xml:"item"`
		} `xml:"subnetSet"`
		NextToken string `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, v := range page {
		out.Set.Items = append(out.Set.Items, s.xmlSubnet(v))
	}
	return out, nil
}

func (s *Server) createSecurityGroup(q *qnode) (any, error) {
	tags, err := q.tagSpecs("security-group")
	if err != nil {
		return nil, err
	}
	g, err := s.region.CreateSecurityGroup(model.CreateSecurityGroupInput{VPCID: q.str("VpcId"), Name: q.str("GroupName"), Description: q.str("GroupDescription"), Tags: tags})
	if err != nil {
		return nil, err
	}
	return struct {
		GroupID string   `xml:"groupId"`
		TagSet  *xTagSet `xml:"tagSet"`
	}{g.ID, tagSet(g.Tags)}, nil
}

var groupFilters = filterSet[*model.SecurityGroup]{
	tags: func(v *model.SecurityGroup) model.Tags { return v.Tags },
	fields: map[string]fieldFunc[*model.SecurityGroup]{
		"group-id":    func(v *model.SecurityGroup) []string { return []string{v.ID} },
		"group-name":  func(v *model.SecurityGroup) []string { return []string{v.Name} },
		"vpc-id":      func(v *model.SecurityGroup) []string { return []string{v.VPCID} },
		"description": func(v *model.SecurityGroup) []string { return []string{v.Description} },
		"owner-id":    func(v *model.SecurityGroup) []string { return []string{"123456789012"} },
	},
}

func (s *Server) describeSecurityGroups(q *qnode) (any, error) {
	ids, err := q.strings("GroupId")
	if err != nil {
		return nil, err
	}
	names, err := q.strings("GroupName")
	if err != nil {
		return nil, err
	}
	items, err := selectByID(ptrs(s.region.SecurityGroups()), func(v *model.SecurityGroup) string { return v.ID }, ids, model.KindGroup, model.ErrGroupNotFound)
	if err != nil {
		return nil, err
	}
	if len(names) > 0 {
		var keep []*model.SecurityGroup
		for _, n := range names {
			found := false
			for _, g := range items {
				if g.Name == n {
					keep, found = append(keep, g), true
				}
			}
			if !found {
				return nil, model.ErrGroupNotFound(n)
			}
		}
		items = keep
	}
	if items, err = filterItems(items, groupFilters, q); err != nil {
		return nil, err
	}
	page, next, err := paginate(items, q, 5, 1000)
	if err != nil {
		return nil, err
	}
	out := struct {
		Set struct {
			Items []xSecurityGroup `xml:"item"`
		} `xml:"securityGroupInfo"`
		NextToken string `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, g := range page {
		out.Set.Items = append(out.Set.Items, xSecurityGroup{OwnerID: s.region.AccountID(), GroupID: g.ID, GroupName: g.Name,
			GroupDescription: g.Description, VPCID: g.VPCID, TagSet: tagSet(g.Tags),
			SecurityGroupArn: "arn:aws:ec2:" + s.region.Name() + ":" + s.region.AccountID() + ":security-group/" + g.ID})
	}
	return out, nil
}

func (s *Server) groupNames() map[string]string {
	m := map[string]string{}
	for _, g := range s.region.SecurityGroups() {
		m[g.ID] = g.Name
	}
	return m
}

// ---- instances ----

func (s *Server) runInstances(q *qnode) (any, error) {
	in := model.RunInstancesInput{InstanceType: q.str("InstanceType"), SubnetID: q.str("SubnetId"), ImageID: q.str("ImageId")}
	var err error
	if in.MinCount, err = q.count("MinCount"); err != nil {
		return nil, err
	}
	if in.MaxCount, err = q.count("MaxCount"); err != nil {
		return nil, err
	}
	if v := q.str("PrivateIpAddress"); v != "" {
		if in.PrivateIP, err = parseAddr("PrivateIpAddress", v, false); err != nil {
			return nil, err
		}
	}
	if in.SecurityGroups, err = q.strings("SecurityGroupId"); err != nil {
		return nil, err
	}
	// The CLI's --network-interfaces form: take the subnet and groups of
	// device 0.
	if nis, err := q.items("NetworkInterface"); err != nil {
		return nil, err
	} else if len(nis) > 0 {
		if in.SubnetID == "" {
			in.SubnetID = nis[0].str("SubnetId")
		}
		if g, err := nis[0].strings("SecurityGroupId"); err == nil && len(in.SecurityGroups) == 0 {
			in.SecurityGroups = g
		}
	}
	if in.Tags, err = q.tagSpecs("instance"); err != nil {
		return nil, err
	}
	if in.ENITags, err = q.tagSpecs("network-interface"); err != nil {
		return nil, err
	}
	mo := q.child("MetadataOptions")
	in.Metadata.HTTPTokens, in.Metadata.HTTPEndpoint = mo.str("HttpTokens"), mo.str("HttpEndpoint")
	if in.Metadata.HopLimit, err = mo.integer("HttpPutResponseHopLimit"); err != nil {
		return nil, err
	}
	insts, err := s.region.RunInstances(in)
	if err != nil {
		return nil, err
	}
	return s.reservation(insts), nil
}

func (s *Server) xmlInstance(i *model.Instance, enis []model.NetworkInterface, groups map[string]string) xInstance {
	x := xInstance{InstanceID: i.ID, ImageID: i.ImageID, InstanceType: i.Type, LaunchTime: fmtTime(i.LaunchTime),
		SubnetID: i.SubnetID, VPCID: i.VPCID, SourceDestCheck: true, Architecture: "x86_64", Hypervisor: "xen", // EC2 reports "xen" for Nitro instances too
		RootDeviceType: "ebs", TagSet: tagSet(i.Tags)}
	x.InstanceState.Code, x.InstanceState.Name = model.StateCode(i.State), i.State
	x.Placement.AvailabilityZone, x.Placement.AvailabilityZoneID, x.Placement.Tenancy = i.AZ, i.AZID, "default"
	if i.State != "terminated" {
		x.PrivateIPAddress, x.PrivateDNSName = i.PrivateIP.String(), dnsName(i.PrivateIP, s.region.Name())
	}
	for _, g := range i.SecurityGroups {
		x.GroupSet.Items = append(x.GroupSet.Items, xGroup{g, groups[g]})
	}
	for k := range enis {
		e := &enis[k]
		if e.Attachment != nil && e.Attachment.InstanceID == i.ID {
			x.NetworkIfaces.Items = append(x.NetworkIfaces.Items, s.xmlENI(e, groups))
		}
	}
	x.MetadataOptions.State, x.MetadataOptions.HTTPTokens = "applied", i.Metadata.HTTPTokens
	x.MetadataOptions.HopLimit, x.MetadataOptions.HTTPEndpoint = i.Metadata.HopLimit, i.Metadata.HTTPEndpoint
	return x
}

func (s *Server) reservation(insts []model.Instance) any {
	groups := s.groupNames()
	enis := s.region.NetworkInterfaces()
	r := xReservation{ReservationID: "r-" + strings.TrimPrefix(insts[0].ID, "i-"), OwnerID: s.region.AccountID()}
	for k := range insts {
		r.Instances.Items = append(r.Instances.Items, s.xmlInstance(&insts[k], enis, groups))
	}
	return r
}

var instanceFilters = filterSet[*model.Instance]{
	tags: func(v *model.Instance) model.Tags { return v.Tags },
	fields: map[string]fieldFunc[*model.Instance]{
		"instance-id":                            func(v *model.Instance) []string { return []string{v.ID} },
		"instance-type":                          func(v *model.Instance) []string { return []string{v.Type} },
		"subnet-id":                              func(v *model.Instance) []string { return []string{v.SubnetID} },
		"vpc-id":                                 func(v *model.Instance) []string { return []string{v.VPCID} },
		"image-id":                               func(v *model.Instance) []string { return []string{v.ImageID} },
		"availability-zone":                      func(v *model.Instance) []string { return []string{v.AZ} },
		"instance-state-name":                    func(v *model.Instance) []string { return []string{v.State} },
		"instance-state-code":                    func(v *model.Instance) []string { return []string{strconv.Itoa(model.StateCode(v.State))} },
		"private-ip-address":                     func(v *model.Instance) []string { return []string{v.PrivateIP.String()} },
		"private-dns-name":                       func(v *model.Instance) []string { return []string{dnsName(v.PrivateIP, "")} },
		"network-interface.network-interface-id": func(v *model.Instance) []string { return []string{v.PrimaryENI} },
	},
}

func (s *Server) describeInstances(q *qnode) (any, error) {
	if err := noIDsWithPaging(q, "InstanceId"); err != nil {
		return nil, err
	}
	ids, err := q.strings("InstanceId")
	if err != nil {
		return nil, err
	}
	items, err := selectByID(ptrs(s.region.Instances()), func(v *model.Instance) string { return v.ID }, ids, model.KindInstance, model.ErrInstanceNotFound)
	if err != nil {
		return nil, err
	}
	if items, err = filterItems(items, instanceFilters, q); err != nil {
		return nil, err
	}
	page, next, err := paginate(items, q, 5, 1000)
	if err != nil {
		return nil, err
	}
	out := struct {
		Set struct {
			Items []xReservation `xml:"item"`
		} `xml:"reservationSet"`
		NextToken string `xml:"nextToken,omitempty"`
	}{NextToken: next}
	groups := s.groupNames()
	enis := s.region.NetworkInterfaces()
	for _, i := range page {
		r := xReservation{ReservationID: "r-" + strings.TrimPrefix(i.ID, "i-"), OwnerID: s.region.AccountID()}
		r.Instances.Items = []xInstance{s.xmlInstance(i, enis, groups)}
		out.Set.Items = append(out.Set.Items, r)
	}
	return out, nil
}

func (s *Server) terminateInstances(q *qnode) (any, error) {
	ids, err := q.strings("InstanceId")
	if err != nil {
		return nil, err
	}
	changes, err := s.region.TerminateInstances(ids)
	if err != nil {
		return nil, err
	}
	type state struct {
		Code int    `xml:"code"`
		Name string `xml:"name"`
	}
	type item struct {
		InstanceID string `xml:"instanceId"`
		Current    state  `xml:"currentState"`
		Previous   state  `xml:"previousState"`
	}
	out := struct {
		Set struct {
			Items []item `xml:"item"`
		} `xml:"instancesSet"`
	}{}
	for _, c := range changes {
		out.Set.Items = append(out.Set.Items, item{c.InstanceID, state{model.StateCode(c.Current), c.Current}, state{model.StateCode(c.Previous), c.Previous}})
	}
	return out, nil
}

func (s *Server) modifyInstanceMetadataOptions(q *qnode) (any, error) {
	id, err := q.required("InstanceId")
	if err != nil {
		return nil, err
	}
	m := model.MetadataOptions{HTTPTokens: q.str("HttpTokens"), HTTPEndpoint: q.str("HttpEndpoint")}
	if m.HopLimit, err = q.integer("HttpPutResponseHopLimit"); err != nil {
		return nil, err
	}
	if q.present("HttpPutResponseHopLimit") && m.HopLimit == 0 {
		return nil, model.ErrInvalid("Value (0) for parameter HttpPutResponseHopLimit is invalid.")
	}
	if err := s.region.SetMetadataOptions(id, m); err != nil {
		return nil, err
	}
	i, _ := s.region.Instance(id)
	out := struct {
		InstanceID string `xml:"instanceId"`
		Options    struct {
			State        string `xml:"state"`
			HTTPTokens   string `xml:"httpTokens"`
			HopLimit     int    `xml:"httpPutResponseHopLimit"`
			HTTPEndpoint string `xml:"httpEndpoint"`
		} `xml:"instanceMetadataOptions"`
	}{InstanceID: id}
	out.Options.State, out.Options.HTTPTokens, out.Options.HopLimit, out.Options.HTTPEndpoint = "applied", i.Metadata.HTTPTokens, i.Metadata.HopLimit, i.Metadata.HTTPEndpoint
	return out, nil
}

var instanceTypeFilters = filterSet[*catalog.InstanceType]{
	tags: func(*catalog.InstanceType) model.Tags { return nil },
	fields: map[string]fieldFunc[*catalog.InstanceType]{
		"instance-type":      func(t *catalog.InstanceType) []string { return []string{t.Name} },
		"hypervisor":         func(t *catalog.InstanceType) []string { return []string{t.Hypervisor} },
		"bare-metal":         func(t *catalog.InstanceType) []string { return []string{strconv.FormatBool(t.BareMetal)} },
		"current-generation": func(t *catalog.InstanceType) []string { return []string{"true"} },
		"network-info.maximum-network-interfaces":   func(t *catalog.InstanceType) []string { return []string{strconv.Itoa(t.MaxENIs)} },
		"network-info.ipv4-addresses-per-interface": func(t *catalog.InstanceType) []string { return []string{strconv.Itoa(t.IPv4PerENI)} },
		"network-info.ipv6-addresses-per-interface": func(t *catalog.InstanceType) []string { return []string{strconv.Itoa(t.IPv6PerENI)} },
		"network-info.ipv6-supported":               func(t *catalog.InstanceType) []string { return []string{strconv.FormatBool(t.IPv6Supported)} },
		"network-info.efa-supported":                func(t *catalog.InstanceType) []string { return []string{strconv.FormatBool(t.MaxEFA > 0)} },
		"vcpu-info.default-vcpus":                   func(t *catalog.InstanceType) []string { return []string{strconv.Itoa(t.VCPUs)} },
	},
}

func (s *Server) describeInstanceTypes(q *qnode) (any, error) {
	names, err := q.strings("InstanceType")
	if err != nil {
		return nil, err
	}
	var items []*catalog.InstanceType
	if len(names) > 0 {
		for _, n := range names {
			t, ok := s.region.InstanceType(n)
			if !ok {
				return nil, model.ErrInvalid("The following supplied instance types do not exist: [%s]", n)
			}
			items = append(items, t)
		}
	} else {
		items = s.region.InstanceTypes()
	}
	if items, err = filterItems(items, instanceTypeFilters, q); err != nil {
		return nil, err
	}
	page, next, err := paginate(items, q, 5, 100)
	if err != nil {
		return nil, err
	}
	out := struct {
		Set struct {
			Items []xInstanceType `xml:"item"`
		} `xml:"instanceTypeSet"`
		NextToken string `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, t := range page {
		out.Set.Items = append(out.Set.Items, xmlInstanceType(t))
	}
	return out, nil
}

// ---- network interfaces ----

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
	pfx, err := q.items("Ipv4Prefix")
	if err != nil {
		return nil, err
	}
	for _, p := range pfx {
		v, err := parsePrefix("Ipv4Prefix", p.str("Ipv4Prefix"))
		if err != nil {
			return nil, err
		}
		in.Prefixes = append(in.Prefixes, v)
	}
	if in.PrefixCount, err = q.count("Ipv4PrefixCount"); err != nil {
		return nil, err
	}
	v6, err := q.items("Ipv6Addresses")
	if err != nil {
		return nil, err
	}
	for _, a := range v6 {
		x, err := parseAddr("Ipv6Addresses.Ipv6Address", a.str("Ipv6Address"), true)
		if err != nil {
			return nil, err
		}
		in.IPv6Addrs = append(in.IPv6Addrs, x)
	}
	if in.IPv6Count, err = q.count("Ipv6AddressCount"); err != nil {
		return nil, err
	}
	v6p, err := q.items("Ipv6Prefix")
	if err != nil {
		return nil, err
	}
	for _, p := range v6p {
		x, err := parsePrefix("Ipv6Prefix", p.str("Ipv6Prefix"))
		if err != nil {
			return nil, err
		}
		in.IPv6Prefixes = append(in.IPv6Prefixes, x)
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
		"owner-id":             func(v *model.NetworkInterface) []string { return []string{"123456789012"} },
		"requester-managed":    func(v *model.NetworkInterface) []string { return []string{"false"} },
		"source-dest-check":    func(v *model.NetworkInterface) []string { return []string{strconv.FormatBool(v.SourceDestCheck)} },
		"group-id":             func(v *model.NetworkInterface) []string { return v.SecurityGroups },
		"private-ip-address": func(v *model.NetworkInterface) []string {
			return addrStrings(append([]netip.Addr{v.PrivateIP}, v.SecondaryIPs...))
		},
		"addresses.private-ip-address": func(v *model.NetworkInterface) []string {
			return addrStrings(append([]netip.Addr{v.PrivateIP}, v.SecondaryIPs...))
		},
		"private-dns-name":                 func(v *model.NetworkInterface) []string { return []string{dnsName(v.PrivateIP, "")} },
		"ipv6-addresses.ipv6-address":      func(v *model.NetworkInterface) []string { return addrStrings(v.IPv6) },
		"ipv4-prefix":                      func(v *model.NetworkInterface) []string { return prefixStrings(v.Prefixes) },
		"attachment.instance-id":           attachField(func(a *model.Attachment) string { return a.InstanceID }),
		"attachment.attachment-id":         attachField(func(a *model.Attachment) string { return a.ID }),
		"attachment.device-index":          attachField(func(a *model.Attachment) string { return strconv.Itoa(a.DeviceIndex) }),
		"attachment.network-card-index":    attachField(func(a *model.Attachment) string { return strconv.Itoa(a.NetworkCardIndex) }),
		"attachment.status":                attachField(func(a *model.Attachment) string { return a.Status }),
		"attachment.delete-on-termination": attachField(func(a *model.Attachment) string { return strconv.FormatBool(a.DeleteOnTermination) }),
		"attachment.instance-owner-id":     attachField(func(a *model.Attachment) string { return "123456789012" }),
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

func (s *Server) describeNetworkInterfaces(q *qnode) (any, error) {
	if err := noIDsWithPaging(q, "NetworkInterfaceId"); err != nil {
		return nil, err
	}
	ids, err := q.strings("NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	items, err := selectByID(ptrs(s.region.VisibleENIs(s.now())), func(v *model.NetworkInterface) string { return v.ID }, ids, model.KindENI, model.ErrENINotFound)
	if err != nil {
		return nil, err
	}
	if items, err = filterItems(items, eniFilters, q); err != nil {
		return nil, err
	}
	page, next, err := paginate(items, q, 5, 1000)
	if err != nil {
		return nil, err
	}
	out := struct {
		Set struct {
			Items []xENI `xml:"item"`
		} `xml:"networkInterfaceSet"`
		NextToken string `xml:"nextToken,omitempty"`
	}{NextToken: next}
	groups := s.groupNames()
	out.Set.Items = make([]xENI, 0, len(page))
	for _, e := range page {
		out.Set.Items = append(out.Set.Items, s.xmlENI(e, groups))
	}
	return out, nil
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

func (s *Server) assignPrivateIPs(q *qnode) (any, error) {
	in := model.AssignPrivateIPsInput{ENIID: q.str("NetworkInterfaceId")}
	var err error
	if in.Addrs, err = q.addrList("PrivateIpAddress", false); err != nil {
		return nil, err
	}
	if in.Count, err = q.count("SecondaryPrivateIpAddressCount"); err != nil {
		return nil, err
	}
	if in.Prefixes, err = q.prefixList("Ipv4Prefix"); err != nil {
		return nil, err
	}
	if in.PrefixCount, err = q.count("Ipv4PrefixCount"); err != nil {
		return nil, err
	}
	re, err := q.boolean("AllowReassignment")
	if err != nil {
		return nil, err
	}
	in.AllowReassignment = re != nil && *re
	addrs, pfx, err := s.region.AssignPrivateIPs(in)
	if err != nil {
		return nil, err
	}
	type ip struct {
		PrivateIPAddress string `xml:"privateIpAddress"`
	}
	out := struct {
		ENIID string `xml:"networkInterfaceId"`
		IPs   struct {
			Items []ip `xml:"item"`
		} `xml:"assignedPrivateIpAddressesSet"`
		Prefixes struct {
			Items []xPrefix `xml:"item"`
		} `xml:"assignedIpv4PrefixSet"`
	}{ENIID: in.ENIID}
	for _, a := range addrs {
		out.IPs.Items = append(out.IPs.Items, ip{a.String()})
	}
	for _, p := range pfx {
		out.Prefixes.Items = append(out.Prefixes.Items, xPrefix{p.String()})
	}
	return out, nil
}

func (s *Server) unassignPrivateIPs(q *qnode) (any, error) {
	addrs, err := q.addrList("PrivateIpAddress", false)
	if err != nil {
		return nil, err
	}
	pfx, err := q.prefixList("Ipv4Prefix")
	if err != nil {
		return nil, err
	}
	if err := s.region.UnassignPrivateIPs(q.str("NetworkInterfaceId"), addrs, pfx); err != nil {
		return nil, err
	}
	return returnTrue{true}, nil
}

type xStrings struct {
	Items []string `xml:"item"`
}

func (s *Server) assignIPv6(q *qnode) (any, error) {
	in := model.AssignIPv6Input{ENIID: q.str("NetworkInterfaceId")}
	var err error
	if in.Addrs, err = q.addrList("Ipv6Addresses", true); err != nil {
		return nil, err
	}
	if in.Count, err = q.count("Ipv6AddressCount"); err != nil {
		return nil, err
	}
	if in.Prefixes, err = q.prefixList("Ipv6Prefix"); err != nil {
		return nil, err
	}
	if in.PrefixCount, err = q.count("Ipv6PrefixCount"); err != nil {
		return nil, err
	}
	a, p, err := s.region.AssignIPv6(in)
	if err != nil {
		return nil, err
	}
	return struct {
		ENIID    string   `xml:"networkInterfaceId"`
		Addrs    xStrings `xml:"assignedIpv6Addresses"`
		Prefixes xStrings `xml:"assignedIpv6PrefixSet"`
	}{in.ENIID, xStrings{addrStrings(a)}, xStrings{prefixStrings(p)}}, nil
}

func (s *Server) unassignIPv6(q *qnode) (any, error) {
	addrs, err := q.addrList("Ipv6Addresses", true)
	if err != nil {
		return nil, err
	}
	pfx, err := q.prefixList("Ipv6Prefix")
	if err != nil {
		return nil, err
	}
	id := q.str("NetworkInterfaceId")
	a, p, err := s.region.UnassignIPv6(id, addrs, pfx)
	if err != nil {
		return nil, err
	}
	return struct {
		ENIID    string   `xml:"networkInterfaceId"`
		Addrs    xStrings `xml:"unassignedIpv6Addresses"`
		Prefixes xStrings `xml:"unassignedIpv6PrefixSet"`
	}{id, xStrings{addrStrings(a)}, xStrings{prefixStrings(p)}}, nil
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

// ---- tags ----

func (s *Server) createTags(q *qnode) (any, error) {
	ids, err := q.strings("ResourceId")
	if err != nil {
		return nil, err
	}
	tags, _, err := q.tagList("Tag")
	if err != nil {
		return nil, err
	}
	if err := s.region.CreateTags(ids, tags); err != nil {
		return nil, err
	}
	return returnTrue{true}, nil
}

func (s *Server) deleteTags(q *qnode) (any, error) {
	ids, err := q.strings("ResourceId")
	if err != nil {
		return nil, err
	}
	_, filters, err := q.tagList("Tag")
	if err != nil {
		return nil, err
	}
	if err := s.region.DeleteTags(ids, filters); err != nil {
		return nil, err
	}
	return returnTrue{true}, nil
}

// ---- trunking ----

func (s *Server) associateTrunk(q *qnode) (any, error) {
	in := model.AssociateTrunkInput{BranchID: q.str("BranchInterfaceId"), TrunkID: q.str("TrunkInterfaceId"), ClientToken: q.str("ClientToken")}
	var err error
	if in.VlanID, err = q.integer("VlanId"); err != nil {
		return nil, err
	}
	if in.GreKey, err = q.integer("GreKey"); err != nil {
		return nil, err
	}
	if !q.present("VlanId") && !q.present("GreKey") && in.BranchID != "" && in.TrunkID != "" {
		return nil, model.ErrMissing("VlanId")
	}
	t, err := s.region.AssociateTrunkInterface(in)
	if err != nil {
		return nil, err
	}
	return struct {
		Assoc       xTrunkAssoc `xml:"interfaceAssociation"`
		ClientToken string      `xml:"clientToken,omitempty"`
	}{xmlTrunk(&t), in.ClientToken}, nil
}

func (s *Server) disassociateTrunk(q *qnode) (any, error) {
	if err := s.region.DisassociateTrunkInterface(q.str("AssociationId")); err != nil {
		return nil, err
	}
	return struct {
		Return      bool   `xml:"return"`
		ClientToken string `xml:"clientToken,omitempty"`
	}{true, q.str("ClientToken")}, nil
}

var trunkFilters = filterSet[*model.TrunkAssociation]{
	tags: func(v *model.TrunkAssociation) model.Tags { return v.Tags },
	fields: map[string]fieldFunc[*model.TrunkAssociation]{
		"trunk-interface-association.trunk-interface-id":  func(v *model.TrunkAssociation) []string { return []string{v.TrunkID} },
		"trunk-interface-association.branch-interface-id": func(v *model.TrunkAssociation) []string { return []string{v.BranchID} },
		"trunk-interface-association.association-id":      func(v *model.TrunkAssociation) []string { return []string{v.ID} },
		"interface-protocol":                              func(v *model.TrunkAssociation) []string { return []string{v.Protocol} },
		"vlan-id":                                         func(v *model.TrunkAssociation) []string { return []string{strconv.Itoa(v.VlanID)} },
		"gre-key":                                         func(v *model.TrunkAssociation) []string { return []string{strconv.Itoa(v.GreKey)} },
	},
}

func (s *Server) describeTrunkAssociations(q *qnode) (any, error) {
	ids, err := q.strings("AssociationId")
	if err != nil {
		return nil, err
	}
	items, err := selectByID(ptrs(s.region.TrunkAssociations()), func(v *model.TrunkAssociation) string { return v.ID }, ids, model.KindTrunkAssoc,
		func(id string) *model.APIError {
			return model.Errorf("InvalidAssociationID.NotFound", "The association ID '%s' does not exist", id)
		})
	if err != nil {
		return nil, err
	}
	if items, err = filterItems(items, trunkFilters, q); err != nil {
		return nil, err
	}
	page, next, err := paginate(items, q, 5, 255)
	if err != nil {
		return nil, err
	}
	out := struct {
		Set struct {
			Items []xTrunkAssoc `xml:"item"`
		} `xml:"interfaceAssociationSet"`
		NextToken string `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, t := range page {
		out.Set.Items = append(out.Set.Items, xmlTrunk(t))
	}
	return out, nil
}
