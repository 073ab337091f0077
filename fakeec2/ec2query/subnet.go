package ec2query

import (
	"strconv"

	"github.com/vpclab/vpclab/fakeec2/model"
)

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

var describeSubnets = describe[model.Subnet]{
	list:    listed(func(s *Server) []model.Subnet { return s.region.Subnets() }),
	idParam: "SubnetId", id: func(v *model.Subnet) string { return v.ID }, kind: model.KindSubnet, notFound: model.ErrSubnetNotFound,
	filters: subnetFilters, set: "subnetSet", minMax: 5, maxMax: 1000,
	render: renderEach((*Server).xmlSubnet),
}
