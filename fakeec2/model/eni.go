package model

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/vpclab/vpclab/fakeec2/catalog"
)

// CreateNetworkInterfaceInput describes a new ENI. At most one of
// SecondaryCount/explicit secondaries and PrefixCount/Prefixes may be used,
// as in EC2.
type CreateNetworkInterfaceInput struct {
	SubnetID       string
	Description    string
	SecurityGroups []string
	InterfaceType  string // "" or interface, trunk, efa, efa-only, branch
	// PrivateIP is the primary address; chosen from the subnet when invalid.
	PrivateIP netip.Addr
	// SecondaryIPs are explicit secondary addresses.
	SecondaryIPs   []netip.Addr
	SecondaryCount int
	Prefixes       []netip.Prefix
	PrefixCount    int
	IPv6Addrs      []netip.Addr
	IPv6Count      int
	IPv6Prefixes   []netip.Prefix
	IPv6PrefixCnt  int
	Tags           Tags
	ClientToken    string
}

var validInterfaceTypes = map[string]string{"": "interface", "interface": "interface", "trunk": "trunk", "efa": "efa", "efa-only": "efa-only", "branch": "branch"}

// CreateNetworkInterface creates an available (unattached) ENI.
func (r *Region) CreateNetworkInterface(in CreateNetworkInterfaceInput) (NetworkInterface, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doing("CreateNetworkInterface")
	if in.SubnetID == "" {
		return NetworkInterface{}, ErrMissing("SubnetId")
	}
	if err := CheckID(KindSubnet, in.SubnetID); err != nil {
		return NetworkInterface{}, err
	}
	if in.ClientToken != "" {
		if rec, ok := r.tokens["eni/"+in.ClientToken]; ok {
			if rec.params != fmt.Sprintf("%+v", in) {
				return NetworkInterface{}, Errorf("IdempotentParameterMismatch", "The client token you have provided is associated with a resource that is already deleted or has different parameters. Please use a different client token.")
			}
			if e, ok := r.enis[rec.id]; ok {
				return e.clone(), nil
			}
		}
	}
	s, ok := r.subnets[in.SubnetID]
	if !ok {
		return NetworkInterface{}, ErrSubnetNotFound(in.SubnetID)
	}
	typ, err := in.check()
	if err != nil {
		return NetworkInterface{}, err
	}
	groups, err := r.resolveGroups(s.VPCID, in.SecurityGroups)
	if err != nil {
		return NetworkInterface{}, err
	}
	tx := r.beginAlloc(s)
	primary, err := tx.eniAddresses(in, typ)
	if err != nil {
		tx.rollback()
		return NetworkInterface{}, err
	}
	v6, v6p, err := r.allocIPv6(s, in.IPv6Addrs, in.IPv6Count, in.IPv6Prefixes, in.IPv6PrefixCnt, nil)
	if err != nil {
		tx.rollback()
		return NetworkInterface{}, err
	}
	e := r.newENI(s, in.Description, typ, groups, primary, in.Tags)
	now := r.opts.Now()
	e.visibleAt = now.Add(r.eniLag())
	for _, a := range tx.addrs {
		if a != primary {
			e.SecondaryIPs = append(e.SecondaryIPs, a)
		}
	}
	e.Prefixes = tx.prefixes
	e.IPv6, e.IPv6Prefixes = v6, v6p
	r.owners.holdENI(&e.NetworkInterface)
	if in.ClientToken != "" {
		r.tokens["eni/"+in.ClientToken] = tokenRecord{params: fmt.Sprintf("%+v", in), id: e.ID}
	}
	r.emit(Change{Kind: ChangeENICreated, ENIID: e.ID, MAC: e.MAC, SubnetID: s.ID, Addrs: []netip.Addr{primary}})
	if len(e.SecondaryIPs) > 0 {
		r.emit(Change{Kind: ChangeIPsAssigned, ENIID: e.ID, MAC: e.MAC, SubnetID: s.ID, Addrs: slices.Clone(e.SecondaryIPs)})
	}
	if len(e.Prefixes) > 0 {
		r.emit(Change{Kind: ChangePrefixesAssigned, ENIID: e.ID, MAC: e.MAC, SubnetID: s.ID, Prefixes: slices.Clone(e.Prefixes)})
	}
	if len(v6) > 0 || len(v6p) > 0 {
		r.emit(Change{Kind: ChangeIPv6Assigned, ENIID: e.ID, MAC: e.MAC, SubnetID: s.ID, Addrs: slices.Clone(v6), Prefixes: slices.Clone(v6p)})
	}
	return e.clone(), nil
}

// check validates the input's interface type, counts and combinations,
// as EC2 does before allocating anything; it returns the interface type.
func (in CreateNetworkInterfaceInput) check() (string, error) {
	typ, ok := validInterfaceTypes[in.InterfaceType]
	if !ok {
		return "", ErrInvalid("Value (%s) for parameter interfaceType is invalid. Allowed values are: efa, efa-only, branch, trunk.", in.InterfaceType)
	}
	if in.SecondaryCount < 0 || in.PrefixCount < 0 || in.IPv6Count < 0 || in.IPv6PrefixCnt < 0 {
		return "", ErrInvalid("Address and prefix counts must not be negative")
	}
	v4addrs := len(in.SecondaryIPs) > 0 || in.SecondaryCount > 0
	v4pfx := len(in.Prefixes) > 0 || in.PrefixCount > 0
	switch {
	case len(in.SecondaryIPs) > 0 && in.SecondaryCount > 0:
		return "", ErrCombination("The parameters 'SecondaryPrivateIpAddressCount' and 'PrivateIpAddresses' cannot be used together")
	case v4addrs && v4pfx:
		return "", ErrCombination("IPv4 prefixes cannot be combined with secondary private IPv4 addresses")
	case len(in.Prefixes) > 0 && in.PrefixCount > 0:
		return "", ErrCombination("The parameters 'Ipv4PrefixCount' and 'Ipv4Prefixes' cannot be used together")
	case len(in.IPv6Addrs) > 0 && in.IPv6Count > 0, len(in.IPv6Prefixes) > 0 && in.IPv6PrefixCnt > 0,
		(len(in.IPv6Addrs) > 0 || in.IPv6Count > 0) && (len(in.IPv6Prefixes) > 0 || in.IPv6PrefixCnt > 0):
		return "", ErrCombination("IPv6 addresses, IPv6 address count and IPv6 prefixes are mutually exclusive")
	}
	if typ == "efa-only" && (v4addrs || v4pfx || in.PrivateIP.IsValid()) {
		return "", ErrInvalid("EFA-only interfaces cannot have IP addresses")
	}
	if 1+len(in.SecondaryIPs)+in.SecondaryCount+len(in.Prefixes)+in.PrefixCount > catalog.MaxIPv4PerENI() {
		return "", Errorf("PrivateIpAddressLimitExceeded", "Number of private addresses will exceed limit.")
	}
	return typ, nil
}

// eniAddresses takes a new ENI's IPv4 addresses and prefixes from the
// subnet and returns its primary address; the caller rolls back on error.
func (t *allocTx) eniAddresses(in CreateNetworkInterfaceInput, typ string) (netip.Addr, error) {
	var primary netip.Addr
	if in.PrivateIP.IsValid() {
		if err := t.addr(in.PrivateIP, false); err != nil {
			return netip.Addr{}, err
		}
		primary = in.PrivateIP
	}
	for _, a := range in.SecondaryIPs {
		if err := t.addr(a, false); err != nil {
			return netip.Addr{}, err
		}
	}
	if !primary.IsValid() && typ != "efa-only" {
		if err := t.count(1); err != nil {
			return netip.Addr{}, err
		}
		primary = t.addrs[len(t.addrs)-1]
	}
	if err := t.count(in.SecondaryCount); err != nil {
		return netip.Addr{}, err
	}
	for _, p := range in.Prefixes {
		if err := t.prefix(p); err != nil {
			return netip.Addr{}, err
		}
	}
	return primary, t.prefixCount(in.PrefixCount)
}

// newENI registers an ENI whose primary address is already taken from s.
func (r *Region) newENI(s *subnetState, desc, typ string, groups []string, primary netip.Addr, tags Tags) *eniState {
	e := &eniState{NetworkInterface: NetworkInterface{
		ID: r.ids.next("eni"), SubnetID: s.ID, VPCID: s.VPCID, AZ: s.AZ, AZID: s.AZID, Description: desc,
		MAC: r.ids.mac(), InterfaceType: typ, Status: "available", PrivateIP: primary,
		SecurityGroups: slices.Clone(groups), SourceDestCheck: true, Tags: tags.clone(), CreatedAt: r.opts.Now(),
	}}
	r.owners.hold(e.ID, []netip.Addr{primary}, nil)
	r.enis[e.ID] = e
	r.order = append(r.order, e.ID)
	return e
}

// resolveGroups checks security group ids against a VPC; none means the
// VPC's default group.
func (r *Region) resolveGroups(vpcID string, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return []string{r.vpcs[vpcID].DefaultGroupID}, nil
	}
	if len(ids) > MaxGroupsPerENI {
		return nil, Errorf("SecurityGroupsPerInterfaceLimitExceeded", "You have exceeded the maximum number of security groups allowed per network interface (%d).", MaxGroupsPerENI)
	}
	var out []string
	for _, id := range ids {
		if err := CheckID(KindGroup, id); err != nil {
			return nil, err
		}
		g, ok := r.groups[id]
		if !ok {
			return nil, ErrGroupNotFound(id)
		}
		if g.VPCID != vpcID {
			return nil, ErrInvalid("Security group %s and subnet belong to different networks.", id)
		}
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out, nil
}

func (r *Region) lookupENI(id string) (*eniState, error) {
	if id == "" {
		return nil, ErrMissing("NetworkInterfaceId")
	}
	if err := CheckID(KindENI, id); err != nil {
		return nil, err
	}
	e, ok := r.enis[id]
	if !ok {
		return nil, ErrENINotFound(id)
	}
	return e, nil
}

// DeleteNetworkInterface deletes a detached ENI and frees its addresses.
func (r *Region) DeleteNetworkInterface(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doing("DeleteNetworkInterface")
	e, err := r.lookupENI(id)
	if err != nil {
		return err
	}
	if e.Attachment != nil {
		return ErrInvalid("Network interface '%s' is currently in use.", id)
	}
	r.deleteENI(e)
	return nil
}

func (r *Region) deleteENI(e *eniState) {
	// Trunk associations of the ENI, as trunk or as branch, go with it.
	for _, t := range r.trunksSorted() {
		if t.TrunkID == e.ID || t.BranchID == e.ID {
			r.disassociate(t)
		}
	}
	s := r.subnets[e.SubnetID]
	now := r.opts.Now()
	if e.PrivateIP.IsValid() {
		s.pool.release(e.PrivateIP, now)
	}
	for _, a := range e.SecondaryIPs {
		s.pool.release(a, now)
	}
	for _, p := range e.Prefixes {
		s.pool.releasePrefix(p, now)
	}
	r.owners.dropENI(&e.NetworkInterface)
	if r.opts.RemovalLag > 0 {
		c := e.clone()
		c.Status, c.Attachment = "available", nil
		r.tombs = append(r.tombs, tomb{eni: c, until: now.Add(r.opts.RemovalLag)})
	}
	delete(r.enis, e.ID)
	r.order = slices.DeleteFunc(r.order, func(x string) bool { return x == e.ID })
	r.emit(Change{Kind: ChangeENIDeleted, ENIID: e.ID, MAC: e.MAC, SubnetID: e.SubnetID})
}

// AttachNetworkInterfaceInput describes an attachment.
type AttachNetworkInterfaceInput struct {
	ENIID       string
	InstanceID  string
	DeviceIndex int
	CardIndex   int
}

// AttachNetworkInterface attaches an available ENI to a running instance,
// enforcing the instance type's per-card and total ENI limits. The
// attachment is "attaching" for the region's attach latency.
func (r *Region) AttachNetworkInterface(in AttachNetworkInterfaceInput) (Attachment, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doing("AttachNetworkInterface")
	e, err := r.lookupENI(in.ENIID)
	if err != nil {
		return Attachment{}, err
	}
	if in.InstanceID == "" {
		return Attachment{}, ErrMissing("InstanceId")
	}
	if err := CheckID(KindInstance, in.InstanceID); err != nil {
		return Attachment{}, err
	}
	inst, ok := r.insts[in.InstanceID]
	if !ok {
		return Attachment{}, ErrInstanceNotFound(in.InstanceID)
	}
	if inst.State != "running" {
		return Attachment{}, Errorf("IncorrectInstanceState", "The instance '%s' is not in a valid state for this operation.", inst.ID)
	}
	if e.Attachment != nil || e.assoc != "" {
		return Attachment{}, Errorf("InvalidNetworkInterface.InUse", "Interface: [%s] in use.", e.ID)
	}
	if e.AZ != inst.AZ {
		return Attachment{}, ErrInvalid("Network interface '%s' is in a different availability zone from instance '%s'.", e.ID, inst.ID)
	}
	if e.VPCID != inst.VPCID {
		return Attachment{}, ErrInvalid("Network interface '%s' and instance '%s' belong to different networks.", e.ID, inst.ID)
	}
	if err := r.canAttach(e, inst, in.DeviceIndex, in.CardIndex); err != nil {
		return Attachment{}, err
	}
	now := r.opts.Now()
	a := &Attachment{ID: r.ids.next("eni-attach"), InstanceID: inst.ID, DeviceIndex: in.DeviceIndex, NetworkCardIndex: in.CardIndex, Status: "attaching", AttachTime: now}
	e.Attachment, e.Status = a, "attaching"
	r.attach[a.ID] = e.ID
	r.emitAttach(e, "attaching")
	if lat := r.opts.AttachLatency; lat > 0 {
		id := a.ID
		time.AfterFunc(lat, func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.doing("AttachNetworkInterface")
			if cur, ok := r.enis[e.ID]; ok && cur.Attachment != nil && cur.Attachment.ID == id && cur.Attachment.Status == "attaching" {
				r.finishAttach(cur)
			}
		})
	} else {
		r.finishAttach(e)
	}
	return *e.Attachment, nil
}

// canAttach checks the instance type's limits for attaching e at device
// dev on network card card: indexes, ENIs per card and in all, one trunk,
// EFA count, and the ENI's addresses against the type's per-ENI budget.
func (r *Region) canAttach(e *eniState, inst *Instance, dev, cardIndex int) error {
	it, _ := r.InstanceType(inst.Type)
	if dev < 0 {
		return ErrInvalid("Invalid value '%d' for deviceIndex.", dev)
	}
	card, ok := it.Card(cardIndex)
	if !ok {
		return ErrInvalid("Invalid value '%d' for networkCardIndex. The instance type %s supports network card indexes 0 to %d.", cardIndex, it.Name, len(it.Cards)-1)
	}
	total, onCard, efa := 0, 0, 0
	for _, o := range r.enis {
		a := o.Attachment
		if a == nil || a.InstanceID != inst.ID {
			continue
		}
		total++
		if a.NetworkCardIndex == cardIndex {
			onCard++
			if a.DeviceIndex == dev {
				return ErrInvalid("Instance '%s' already has an interface attached at device index '%d'.", inst.ID, dev)
			}
		}
		if o.InterfaceType == "efa" || o.InterfaceType == "efa-only" {
			efa++
		}
		if o.InterfaceType == "trunk" && e.InterfaceType == "trunk" {
			return ErrInvalid("Instance '%s' already has a trunk interface attached.", inst.ID)
		}
	}
	if total+1 > it.MaxENIs || onCard+1 > card.MaxENIs {
		return Errorf("AttachmentLimitExceeded", "Interface count %d exceeds the limit for %s", max(total, onCard)+1, it.Name)
	}
	switch e.InterfaceType {
	case "trunk":
		if !it.Trunking {
			return Errorf("UnsupportedOperation", "The instance type %s does not support trunk network interfaces.", it.Name)
		}
	case "efa", "efa-only":
		if efa+1 > it.MaxEFA {
			return Errorf("UnsupportedOperation", "The instance type %s does not support %d EFA interfaces.", it.Name, efa+1)
		}
	}
	if e.Slots() > it.IPv4PerENI {
		return Errorf("InvalidInterface.IpAddressLimitExceeded", "Number of private addresses on interface %s (%d) exceeds the limit for %s (%d).", e.ID, e.Slots(), it.Name, it.IPv4PerENI)
	}
	if len(e.IPv6)+len(e.IPv6Prefixes) > it.IPv6PerENI {
		return Errorf("InvalidInterface.IpAddressLimitExceeded", "Number of IPv6 addresses on interface %s exceeds the limit for %s.", e.ID, it.Name)
	}
	return nil
}

func (r *Region) finishAttach(e *eniState) {
	e.Attachment.Status, e.Status = "attached", "in-use"
	r.emitAttach(e, "attached")
}

func (r *Region) emitAttach(e *eniState, state string) {
	a := e.Attachment
	r.emit(Change{Kind: ChangeAttachment, ENIID: e.ID, MAC: e.MAC, SubnetID: e.SubnetID, InstanceID: a.InstanceID,
		AttachmentID: a.ID, DeviceIndex: a.DeviceIndex, CardIndex: a.NetworkCardIndex, State: state})
}

// DetachNetworkInterface starts detaching an ENI; it stays "detaching" for
// the region's detach latency (unless force is set) and then is available.
func (r *Region) DetachNetworkInterface(attachmentID string, force bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doing("DetachNetworkInterface")
	if attachmentID == "" {
		return ErrMissing("AttachmentId")
	}
	if err := CheckID(KindAttachment, attachmentID); err != nil {
		return err
	}
	eid, ok := r.attach[attachmentID]
	if !ok {
		return ErrAttachmentNotFound(attachmentID)
	}
	e := r.enis[eid]
	a := e.Attachment
	if a.DeviceIndex == 0 && a.NetworkCardIndex == 0 {
		return Errorf("OperationNotPermitted", "The network interface at device index 0 and networkCard index 0 cannot be detached.")
	}
	if a.Status == "detaching" {
		if !force {
			return Errorf("IncorrectState", "The attachment '%s' is already detaching.", a.ID)
		}
		r.finishDetach(e)
		return nil
	}
	if a.Status == "attaching" && !force {
		return Errorf("IncorrectState", "The attachment '%s' is still attaching.", a.ID)
	}
	a.Status, e.Status = "detaching", "detaching"
	r.emitAttach(e, "detaching")
	if lat := r.opts.DetachLatency; lat > 0 && !force {
		time.AfterFunc(lat, func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.doing("DetachNetworkInterface")
			if cur, ok := r.enis[eid]; ok && cur.Attachment != nil && cur.Attachment.ID == attachmentID {
				r.finishDetach(cur)
			}
		})
	} else {
		r.finishDetach(e)
	}
	return nil
}

func (r *Region) finishDetach(e *eniState) {
	e.Attachment.Status = "detached"
	r.emitAttach(e, "detached")
	delete(r.attach, e.Attachment.ID)
	e.Attachment, e.Status = nil, "available"
}

// ModifyNetworkInterfaceInput changes exactly one attribute of an ENI.
type ModifyNetworkInterfaceInput struct {
	ENIID               string
	Description         *string
	SourceDestCheck     *bool
	SecurityGroups      []string
	AttachmentID        string
	DeleteOnTermination *bool
}

// ModifyNetworkInterfaceAttribute changes one attribute of an ENI.
func (r *Region) ModifyNetworkInterfaceAttribute(in ModifyNetworkInterfaceInput) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doing("ModifyNetworkInterfaceAttribute")
	e, err := r.lookupENI(in.ENIID)
	if err != nil {
		return err
	}
	n := 0
	for _, set := range []bool{in.Description != nil, in.SourceDestCheck != nil, len(in.SecurityGroups) > 0, in.AttachmentID != "" || in.DeleteOnTermination != nil} {
		if set {
			n++
		}
	}
	if n == 0 {
		return ErrMissing("Attribute")
	}
	if n > 1 {
		return ErrCombination("Only one attribute can be modified at a time")
	}
	switch {
	case in.Description != nil:
		e.Description = *in.Description
	case in.SourceDestCheck != nil:
		e.SourceDestCheck = *in.SourceDestCheck
	case len(in.SecurityGroups) > 0:
		g, err := r.resolveGroups(e.VPCID, in.SecurityGroups)
		if err != nil {
			return err
		}
		e.SecurityGroups = g
	default:
		if in.AttachmentID == "" {
			return ErrMissing("Attachment.AttachmentId")
		}
		if err := CheckID(KindAttachment, in.AttachmentID); err != nil {
			return err
		}
		if in.DeleteOnTermination == nil {
			return ErrMissing("Attachment.DeleteOnTermination")
		}
		if e.Attachment == nil || e.Attachment.ID != in.AttachmentID {
			return ErrAttachmentNotFound(in.AttachmentID)
		}
		e.Attachment.DeleteOnTermination = *in.DeleteOnTermination
	}
	r.emit(Change{Kind: ChangeENIModified, ENIID: e.ID, MAC: e.MAC, SubnetID: e.SubnetID, SourceDestCheck: e.SourceDestCheck})
	return nil
}

// ipv4Limit is the slot budget of an ENI: its instance type's IPv4 per ENI
// when attached, the largest in the catalog otherwise.
func (r *Region) ipv4Limit(e *eniState) (int, int) {
	if e.Attachment != nil {
		if it, ok := r.InstanceType(r.insts[e.Attachment.InstanceID].Type); ok {
			return it.IPv4PerENI, it.IPv6PerENI
		}
	}
	m := catalog.MaxIPv4PerENI()
	return m, m
}

func (r *Region) trunksSorted() []*TrunkAssociation {
	out := make([]*TrunkAssociation, 0, len(r.trunks))
	for _, t := range r.trunks {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
