package ec2query

import (
	"strconv"
	"strings"

	"github.com/vpclab/vpclab/fakeec2/model"
)

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
		"network-interface.network-interface-id": func(v *model.Instance) []string { return []string{v.PrimaryENI} },
	},
	context: func(s *Server) map[string]fieldFunc[*model.Instance] {
		return map[string]fieldFunc[*model.Instance]{"private-dns-name": func(v *model.Instance) []string {
			return []string{dnsName(v.PrivateIP, s.region.Name())}
		}}
	},
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

var describeInstances = describe[model.Instance]{
	list:    listed(func(s *Server) []model.Instance { return s.region.Instances() }),
	idParam: "InstanceId", id: func(v *model.Instance) string { return v.ID }, kind: model.KindInstance, notFound: model.ErrInstanceNotFound,
	noIDsWithPaging: true, filters: instanceFilters, set: "reservationSet", minMax: 5, maxMax: 1000,
	render: func(s *Server, page []*model.Instance) []any {
		groups, enis := s.groupNames(), s.region.NetworkInterfaces()
		out := make([]any, len(page))
		for k, i := range page {
			r := xReservation{ReservationID: "r-" + strings.TrimPrefix(i.ID, "i-"), OwnerID: s.region.AccountID()}
			r.Instances.Items = []xInstance{s.xmlInstance(i, enis, groups)}
			out[k] = r
		}
		return out
	},
}
