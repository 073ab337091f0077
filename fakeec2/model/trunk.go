package model

import "fmt"

// AssociateTrunkInput links a branch ENI to a trunk ENI.
type AssociateTrunkInput struct {
	BranchID    string
	TrunkID     string
	VlanID      int
	GreKey      int
	ClientToken string
}

// AssociateTrunkInterface associates a branch ENI with an attached trunk
// ENI under a VLAN id unique on that trunk, within the instance type's
// branch-interface limit. The branch ENI's type becomes "branch".
func (r *Region) AssociateTrunkInterface(in AssociateTrunkInput) (TrunkAssociation, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doing("AssociateTrunkInterface")
	if in.BranchID == "" {
		return TrunkAssociation{}, ErrMissing("BranchInterfaceId")
	}
	if in.TrunkID == "" {
		return TrunkAssociation{}, ErrMissing("TrunkInterfaceId")
	}
	if in.ClientToken != "" {
		if rec, ok := r.tokens["trunk/"+in.ClientToken]; ok {
			if rec.params != fmt.Sprintf("%+v", in) {
				return TrunkAssociation{}, Errorf("IdempotentParameterMismatch", "The client token you have provided is associated with a resource that is already deleted or has different parameters.")
			}
			if t, ok := r.trunks[rec.id]; ok {
				return *t, nil
			}
		}
	}
	branch, err := r.lookupENI(in.BranchID)
	if err != nil {
		return TrunkAssociation{}, err
	}
	trunk, err := r.lookupENI(in.TrunkID)
	if err != nil {
		return TrunkAssociation{}, err
	}
	if in.GreKey != 0 {
		return TrunkAssociation{}, ErrInvalid("GRE trunk associations are not supported; use VlanId")
	}
	if in.VlanID < 1 || in.VlanID > 4094 {
		return TrunkAssociation{}, ErrInvalid("Value (%d) for parameter VlanId is invalid. Valid values are 1-4094.", in.VlanID)
	}
	if trunk.InterfaceType != "trunk" {
		return TrunkAssociation{}, ErrInvalid("Network interface '%s' is not a trunk interface.", trunk.ID)
	}
	if trunk.Attachment == nil {
		return TrunkAssociation{}, Errorf("IncorrectState", "Trunk interface '%s' is not attached to an instance.", trunk.ID)
	}
	if branch.Attachment != nil || branch.assoc != "" {
		return TrunkAssociation{}, Errorf("InvalidNetworkInterface.InUse", "Interface: [%s] in use.", branch.ID)
	}
	if branch.InterfaceType != "interface" && branch.InterfaceType != "branch" {
		return TrunkAssociation{}, ErrInvalid("Network interface '%s' of type %s cannot be a branch interface.", branch.ID, branch.InterfaceType)
	}
	if branch.VPCID != trunk.VPCID {
		return TrunkAssociation{}, ErrInvalid("Network interfaces '%s' and '%s' belong to different networks.", branch.ID, trunk.ID)
	}
	inst := r.insts[trunk.Attachment.InstanceID]
	it, _ := r.InstanceType(inst.Type)
	n := 0
	for _, t := range r.trunks {
		if t.TrunkID == trunk.ID {
			n++
			if t.VlanID == in.VlanID {
				return TrunkAssociation{}, ErrInvalid("VLAN id %d is already in use on trunk interface '%s'.", in.VlanID, trunk.ID)
			}
		}
	}
	if n+1 > it.BranchENIs {
		return TrunkAssociation{}, Errorf("AttachmentLimitExceeded", "Branch interface count %d exceeds the limit for %s (%d)", n+1, it.Name, it.BranchENIs)
	}
	t := &TrunkAssociation{ID: r.ids.next("trunk-assoc"), TrunkID: trunk.ID, BranchID: branch.ID, Protocol: "VLAN", VlanID: in.VlanID, Tags: Tags{}}
	r.trunks[t.ID] = t
	// An associated branch is in use, as on EC2 (it has no attachment:
	// its association is what holds it).
	branch.assoc, branch.InterfaceType, branch.Status = t.ID, "branch", "in-use"
	if in.ClientToken != "" {
		r.tokens["trunk/"+in.ClientToken] = tokenRecord{params: fmt.Sprintf("%+v", in), id: t.ID}
	}
	r.emit(Change{Kind: ChangeTrunkAssociated, AssociationID: t.ID, TrunkID: trunk.ID, ENIID: branch.ID, MAC: branch.MAC,
		SubnetID: branch.SubnetID, InstanceID: inst.ID, VlanID: t.VlanID})
	return *t, nil
}

// DisassociateTrunkInterface removes a trunk association.
func (r *Region) DisassociateTrunkInterface(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doing("DisassociateTrunkInterface")
	if id == "" {
		return ErrMissing("AssociationId")
	}
	if err := CheckID(KindTrunkAssoc, id); err != nil {
		return err
	}
	t, ok := r.trunks[id]
	if !ok {
		return Errorf("InvalidAssociationID.NotFound", "The association ID '%s' does not exist", id)
	}
	r.disassociate(t)
	return nil
}

func (r *Region) disassociate(t *TrunkAssociation) {
	delete(r.trunks, t.ID)
	c := Change{Kind: ChangeTrunkDisassociated, AssociationID: t.ID, TrunkID: t.TrunkID, ENIID: t.BranchID, VlanID: t.VlanID}
	if b, ok := r.enis[t.BranchID]; ok {
		b.assoc = ""
		if b.Attachment == nil {
			b.Status = "available"
		}
		c.MAC, c.SubnetID = b.MAC, b.SubnetID
	}
	if tr, ok := r.enis[t.TrunkID]; ok && tr.Attachment != nil {
		c.InstanceID = tr.Attachment.InstanceID
	}
	r.emit(c)
}
