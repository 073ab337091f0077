package ec2query

import (
	"github.com/vpclab/vpclab/fakeec2/model"
)

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
	},
	context: func(s *Server) map[string]fieldFunc[*model.SecurityGroup] {
		return map[string]fieldFunc[*model.SecurityGroup]{"owner-id": func(*model.SecurityGroup) []string { return []string{s.region.AccountID()} }}
	},
}

func (s *Server) groupNames() map[string]string {
	m := map[string]string{}
	for _, g := range s.region.SecurityGroups() {
		m[g.ID] = g.Name
	}
	return m
}

var describeSecurityGroups = describe[model.SecurityGroup]{
	list:    listGroups,
	idParam: "GroupId", id: func(v *model.SecurityGroup) string { return v.ID }, kind: model.KindGroup, notFound: model.ErrGroupNotFound,
	filters: groupFilters, set: "securityGroupInfo", minMax: 5, maxMax: 1000,
	render: renderEach(func(s *Server, g *model.SecurityGroup) xSecurityGroup {
		return xSecurityGroup{OwnerID: s.region.AccountID(), GroupID: g.ID, GroupName: g.Name, GroupDescription: g.Description, VPCID: g.VPCID,
			IPPermissions: s.permissions(g.Rules, false), IPPermsEgress: s.permissions(g.Rules, true),
			TagSet: tagSet(g.Tags), SecurityGroupArn: "arn:aws:ec2:" + s.region.Name() + ":" + s.region.AccountID() + ":security-group/" + g.ID}
	}),
}

// listGroups selects by GroupName too (default VPC semantics aside: every
// name must exist).
func listGroups(s *Server, q *qnode) ([]*model.SecurityGroup, error) {
	items := ptrs(s.region.SecurityGroups())
	names, err := q.strings("GroupName")
	if err != nil || len(names) == 0 {
		return items, err
	}
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
	return keep, nil
}
