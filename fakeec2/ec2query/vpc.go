package ec2query

import (
	"net/netip"

	"github.com/vpclab/vpclab/fakeec2/model"
)

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

var describeVpcs = describe[model.VPC]{
	list:    listed(func(s *Server) []model.VPC { return s.region.VPCs() }),
	idParam: "VpcId", id: func(v *model.VPC) string { return v.ID }, kind: model.KindVPC, notFound: model.ErrVPCNotFound,
	filters: vpcFilters, set: "vpcSet", minMax: 5, maxMax: 1000,
	render: renderEach((*Server).xmlVPC),
}
