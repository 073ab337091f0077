package model

import (
	"net/netip"
	"sort"
)

// RunInstancesInput describes instances to launch.
type RunInstancesInput struct {
	InstanceType string
	SubnetID     string
	ImageID      string
	MinCount     int // default 1
	MaxCount     int // default MinCount
	// PrivateIP is the primary address (only with a count of one).
	PrivateIP      netip.Addr
	SecurityGroups []string
	Tags           Tags // instance tags
	ENITags        Tags // tags of the primary network interfaces
	Metadata       MetadataOptions
}

// InstanceStateChange reports a state transition of TerminateInstances.
type InstanceStateChange struct {
	InstanceID string
	Previous   string
	Current    string
}

var instanceStateCode = map[string]int{"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}

// StateCode returns EC2's numeric code for an instance state name.
func StateCode(name string) int { return instanceStateCode[name] }

// RunInstances launches instances, each with a primary ENI at device 0 on
// network card 0 holding one address from the subnet.
func (r *Region) RunInstances(in RunInstancesInput) ([]Instance, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doing("RunInstances")
	if in.InstanceType == "" {
		return nil, ErrMissing("InstanceType")
	}
	it, ok := r.InstanceType(in.InstanceType)
	if !ok {
		return nil, ErrInvalid("Invalid value '%s' for InstanceType.", in.InstanceType)
	}
	if in.SubnetID == "" {
		return nil, ErrMissing("SubnetId")
	}
	if err := CheckID(KindSubnet, in.SubnetID); err != nil {
		return nil, err
	}
	s, ok := r.subnets[in.SubnetID]
	if !ok {
		return nil, ErrSubnetNotFound(in.SubnetID)
	}
	if in.MinCount == 0 {
		in.MinCount = 1
	}
	if in.MaxCount == 0 {
		in.MaxCount = in.MinCount
	}
	if in.MinCount < 1 || in.MaxCount < in.MinCount {
		return nil, ErrInvalid("Invalid count: MinCount %d, MaxCount %d", in.MinCount, in.MaxCount)
	}
	limit := r.opts.MaxInstances
	if limit <= 0 {
		limit = DefaultMaxInstances
	}
	active := 0
	for _, i := range r.insts {
		if i.State != "terminated" {
			active++
		}
	}
	if in.MinCount > limit-active {
		return nil, Errorf("InstanceLimitExceeded", "You have requested more instances (%d) than your current instance limit of %d allows (%d running). Terminate instances or raise maxInstances.", in.MinCount, limit, active)
	}
	in.MaxCount = min(in.MaxCount, limit-active)
	if in.PrivateIP.IsValid() && in.MaxCount > 1 {
		return nil, ErrCombination("Network interfaces and an instance-level private IP address should not be specified on the same request")
	}
	groups, err := r.resolveGroups(s.VPCID, in.SecurityGroups)
	if err != nil {
		return nil, err
	}
	m, err := in.Metadata.withDefaults()
	if err != nil {
		return nil, err
	}
	n := min(in.MaxCount, s.pool.available())
	if in.PrivateIP.IsValid() {
		if err := r.checkExplicitAddr(s, in.PrivateIP, false); err != nil {
			return nil, err
		}
	}
	if n < in.MinCount {
		return nil, Errorf("InsufficientFreeAddressesInSubnet", "The specified subnet does not have enough free addresses to satisfy the request.")
	}
	image := in.ImageID
	if image == "" {
		image = "ami-0fake0000000000001"
	}
	now := r.opts.Now()
	out := make([]Instance, 0, n)
	for k := 0; k < n; k++ {
		inst := &Instance{
			ID: r.ids.next("i"), Type: it.Name, ImageID: image, SubnetID: s.ID, VPCID: s.VPCID, AZ: s.AZ, AZID: s.AZID,
			State: "running", LaunchTime: now, SecurityGroups: groups, Metadata: m, Tags: in.Tags.clone(),
		}
		r.boot(inst, s, in.PrivateIP, in.ENITags)
		out = append(out, inst.clone())
	}
	return out, nil
}

// boot gives a new instance its primary ENI (address privateIP, or the
// subnet's next free one) attached at device 0, and registers it.
func (r *Region) boot(inst *Instance, s *subnetState, privateIP netip.Addr, eniTags Tags) {
	primary := privateIP
	if primary.IsValid() {
		s.pool.takeAddr(primary)
	} else {
		a, _ := s.pool.take(1, r.pick())
		primary = a[0]
	}
	e := r.newENI(s, "", "interface", inst.SecurityGroups, primary, eniTags)
	e.visibleAt = inst.LaunchTime
	att := &Attachment{ID: r.ids.next("eni-attach"), InstanceID: inst.ID, Status: "attached", AttachTime: inst.LaunchTime, DeleteOnTermination: true}
	e.Attachment, e.Status = att, "in-use"
	r.attach[att.ID] = e.ID
	inst.PrimaryENI, inst.PrivateIP = e.ID, primary
	r.insts[inst.ID] = inst
	r.emit(Change{Kind: ChangeInstanceRunning, InstanceID: inst.ID, SubnetID: s.ID})
	r.emit(Change{Kind: ChangeENICreated, ENIID: e.ID, MAC: e.MAC, SubnetID: s.ID, Addrs: []netip.Addr{primary}})
	r.emit(Change{Kind: ChangeAttachment, ENIID: e.ID, MAC: e.MAC, InstanceID: inst.ID, AttachmentID: att.ID, State: "attached", SubnetID: s.ID})
}

// withDefaults fills in EC2's metadata defaults (optional tokens, enabled,
// hop limit 1) and checks the values.
func (m MetadataOptions) withDefaults() (MetadataOptions, error) {
	if m.HTTPTokens == "" {
		m.HTTPTokens = "optional"
	}
	if m.HTTPEndpoint == "" {
		m.HTTPEndpoint = "enabled"
	}
	if m.HopLimit == 0 {
		m.HopLimit = 1
	}
	if m.HTTPTokens != "optional" && m.HTTPTokens != "required" || m.HTTPEndpoint != "enabled" && m.HTTPEndpoint != "disabled" || m.HopLimit < 1 || m.HopLimit > 64 {
		return m, ErrInvalid("Invalid metadata options: HttpTokens %q, HttpEndpoint %q, HttpPutResponseHopLimit %d", m.HTTPTokens, m.HTTPEndpoint, m.HopLimit)
	}
	return m, nil
}

// TerminateInstances terminates instances: every attached ENI is detached,
// and those marked DeleteOnTermination are deleted with their addresses.
func (r *Region) TerminateInstances(ids []string) ([]InstanceStateChange, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doing("TerminateInstances")
	if len(ids) == 0 {
		return nil, ErrMissing("InstanceId")
	}
	for _, id := range ids {
		if err := CheckID(KindInstance, id); err != nil {
			return nil, err
		}
		if _, ok := r.insts[id]; !ok {
			return nil, ErrInstanceNotFound(id)
		}
	}
	var out []InstanceStateChange
	for _, id := range ids {
		inst := r.insts[id]
		prev := inst.State
		if prev != "terminated" {
			r.releaseInstance(inst)
			inst.State = "terminated"
			r.emit(Change{Kind: ChangeInstanceTerminated, InstanceID: id})
		}
		out = append(out, InstanceStateChange{InstanceID: id, Previous: prev, Current: "terminated"})
	}
	return out, nil
}

func (r *Region) releaseInstance(inst *Instance) {
	var attached []*eniState
	for _, e := range r.enis {
		if e.Attachment != nil && e.Attachment.InstanceID == inst.ID {
			attached = append(attached, e)
		}
	}
	// Highest device first, the primary last, like a shutdown.
	sort.Slice(attached, func(i, j int) bool {
		a, b := attached[i].Attachment, attached[j].Attachment
		if a.NetworkCardIndex != b.NetworkCardIndex {
			return a.NetworkCardIndex > b.NetworkCardIndex
		}
		return a.DeviceIndex > b.DeviceIndex
	})
	for _, e := range attached {
		dot := e.Attachment.DeleteOnTermination
		r.finishDetach(e)
		if dot {
			r.deleteENI(e)
		}
	}
}
