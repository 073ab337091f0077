package ec2query

import (
	"strconv"

	"github.com/vpclab/vpclab/fakeec2/model"
)

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

var describeTrunkAssociations = describe[model.TrunkAssociation]{
	list:    listed(func(s *Server) []model.TrunkAssociation { return s.region.TrunkAssociations() }),
	idParam: "AssociationId", id: func(v *model.TrunkAssociation) string { return v.ID }, kind: model.KindTrunkAssoc,
	notFound: func(id string) *model.APIError {
		return model.Errorf("InvalidAssociationID.NotFound", "The association ID '%s' does not exist", id)
	},
	filters: trunkFilters, set: "interfaceAssociationSet", minMax: 5, maxMax: 255,
	render: renderEach(func(_ *Server, t *model.TrunkAssociation) xTrunkAssoc { return xmlTrunk(t) }),
}
