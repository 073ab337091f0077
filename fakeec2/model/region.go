package model

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vpclab/vpclab/fakeec2/catalog"
)

// Options configure a Region.
type Options struct {
	// Name is the region name (default DefaultRegion).
	Name string
	// AccountID owns every resource (default "123456789012").
	AccountID string
	// Seed makes ids, MACs and fault dice reproducible.
	Seed uint64
	// AttachLatency is how long an attachment stays "attaching" (and the ENI
	// "attaching") before it becomes "attached"/"in-use". Zero is instant.
	AttachLatency time.Duration
	// DetachLatency is how long an attachment stays "detaching".
	DetachLatency time.Duration
	// ConsistencyLag hides a new ENI, or a newly assigned address or prefix,
	// from Describe calls for this long (EC2's eventual consistency).
	ConsistencyLag time.Duration
	// ENILag and AddressLag, when set, replace ConsistencyLag for new ENIs
	// and for newly assigned IPv4 addresses and prefixes. RemovalLag keeps
	// what was removed — unassigned IPv4 addresses and prefixes, deleted
	// ENIs — in Describe answers for this long.
	ENILag, AddressLag, RemovalLag time.Duration
	// MaxInstances caps the region's non-terminated instances (default
	// DefaultMaxInstances), as an account's instance limit does.
	MaxInstances int
	// ExtraInstanceTypes are added to (or override) the embedded catalog,
	// e.g. an invented type that forces clients to call DescribeInstanceTypes.
	ExtraInstanceTypes []catalog.InstanceType
	// Allocation is how addresses and prefixes a caller did not name are
	// picked (default: AllocRandom, avoiding what was released in the last
	// DefaultAvoidRecent). NewRegion panics on a policy Check refuses.
	Allocation Allocation
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// DefaultRegion is the region fakeec2 and labs serve unless told otherwise.
const DefaultRegion = "us-west-2"

// DefaultMaxInstances is a region's instance limit unless Options say.
const DefaultMaxInstances = 1000

// Region is the in-memory model of one EC2 region: the source of truth that
// the Query API, IMDS and the fabric share. All methods are safe for
// concurrent use; every failure is an *APIError.
type Region struct {
	mu   sync.Mutex
	opts Options
	ids  *idGen

	vpcs    map[string]*VPC
	subnets map[string]*subnetState
	groups  map[string]*SecurityGroup
	insts   map[string]*Instance
	enis    map[string]*eniState
	attach  map[string]string // attachment id -> ENI id
	trunks  map[string]*TrunkAssociation
	owners  owners // every private address and prefix in use -> ENI id
	tokens  map[string]tokenRecord
	types   map[string]*catalog.InstanceType
	order   []string // ENI ids in creation order, for stable listings
	tombs   []tomb   // deleted ENIs Describe still shows (RemovalLag)

	feed   feed
	action string // the action being applied, stamped on emitted changes
}

type subnetState struct {
	Subnet
	pool   *addrPool
	v6Next uint64
}

type eniState struct {
	NetworkInterface
	visibleAt time.Time
	seen      map[any]time.Time // address or prefix -> when Describe may show it
	gone      map[any]time.Time // removed address or prefix -> until when Describe still shows it
	assoc     string            // trunk association id when this is a branch
}

// tomb is a deleted ENI as Describe shows it until until.
type tomb struct {
	eni   NetworkInterface
	until time.Time
}

type tokenRecord struct {
	params string
	id     string
}

// NewRegion returns an empty region.
func NewRegion(opts Options) *Region {
	if opts.Name == "" {
		opts.Name = DefaultRegion
	}
	if opts.AccountID == "" {
		opts.AccountID = "123456789012"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := opts.Allocation.Check(); err != nil {
		panic("model.NewRegion: " + err.Error())
	}
	opts.Allocation = opts.Allocation.withDefaults()
	r := &Region{
		opts: opts, ids: newIDGen(opts.Seed),
		vpcs: map[string]*VPC{}, subnets: map[string]*subnetState{}, groups: map[string]*SecurityGroup{},
		insts: map[string]*Instance{}, enis: map[string]*eniState{}, attach: map[string]string{},
		trunks: map[string]*TrunkAssociation{}, owners: newOwners(), tokens: map[string]tokenRecord{},
		types: map[string]*catalog.InstanceType{},
	}
	for i := range opts.ExtraInstanceTypes {
		t := opts.ExtraInstanceTypes[i]
		r.types[t.Name] = &t
	}
	return r
}

// Name returns the region name.
func (r *Region) Name() string { return r.opts.Name }

// AccountID returns the owning account.
func (r *Region) AccountID() string { return r.opts.AccountID }

// eniLag and addressLag are the Describe lags of new ENIs and of new
// addresses (r.mu held).
func (r *Region) eniLag() time.Duration     { return cmp.Or(r.opts.ENILag, r.opts.ConsistencyLag) }
func (r *Region) addressLag() time.Duration { return cmp.Or(r.opts.AddressLag, r.opts.ConsistencyLag) }

// SetConsistency changes the per-kind Describe lags (ENILag, AddressLag,
// RemovalLag) at run time.
func (r *Region) SetConsistency(eni, address, removal time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opts.ENILag, r.opts.AddressLag, r.opts.RemovalLag = eni, address, removal
}

// Consistency returns the per-kind Describe lags.
func (r *Region) Consistency() (eni, address, removal time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opts.ENILag, r.opts.AddressLag, r.opts.RemovalLag
}

// SetTiming changes attach/detach latency and the consistency lag at run time.
func (r *Region) SetTiming(attach, detach, lag time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opts.AttachLatency, r.opts.DetachLatency, r.opts.ConsistencyLag = attach, detach, lag
}

// Timing returns attach latency, detach latency and consistency lag.
func (r *Region) Timing() (attach, detach, lag time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opts.AttachLatency, r.opts.DetachLatency, r.opts.ConsistencyLag
}

// InstanceType returns the limits of a type known to this region.
func (r *Region) InstanceType(name string) (*catalog.InstanceType, bool) {
	if t, ok := r.types[name]; ok {
		return t, true
	}
	return catalog.Lookup(name)
}

// InstanceTypes returns every type known to this region, sorted by name.
func (r *Region) InstanceTypes() []*catalog.InstanceType {
	names := catalog.Names()
	for n := range r.types {
		if _, ok := catalog.Lookup(n); !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	out := make([]*catalog.InstanceType, 0, len(names))
	for _, n := range names {
		t, _ := r.InstanceType(n)
		out = append(out, t)
	}
	return out
}

// AZID maps "us-west-2b" to "usw2-az2".
func AZID(region, az string) string {
	parts := strings.Split(region, "-")
	if len(parts) < 3 || len(az) <= len(region) {
		return az
	}
	short := parts[0]
	for _, p := range parts[1 : len(parts)-1] {
		short += p[:1]
	}
	short += parts[len(parts)-1]
	letter := az[len(region)]
	return fmt.Sprintf("%s-az%d", short, int(letter-'a')+1)
}

// CreateVPCInput describes a new VPC.
type CreateVPCInput struct {
	CIDR netip.Prefix
	// AmazonProvidedIPv6 gives the VPC an IPv6 /56.
	AmazonProvidedIPv6 bool
	// ExtraCIDRs are secondary IPv4 blocks.
	ExtraCIDRs []netip.Prefix
	Tags       Tags
}

// CreateVPC creates a VPC and its default security group.
func (r *Region) CreateVPC(in CreateVPCInput) (VPC, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cidrs := append([]netip.Prefix{in.CIDR}, in.ExtraCIDRs...)
	for _, c := range cidrs {
		if !c.IsValid() || !c.Addr().Is4() {
			return VPC{}, ErrInvalid("Value (%s) for parameter cidrBlock is invalid. This is not a valid CIDR block.", c)
		}
		if c.Bits() < 16 || c.Bits() > 28 {
			return VPC{}, Errorf("InvalidVpc.Range", "The CIDR '%s' is invalid.", c)
		}
	}
	for i, a := range cidrs {
		for _, b := range cidrs[i+1:] {
			if a.Overlaps(b) {
				return VPC{}, Errorf("InvalidVpc.Range", "The CIDR '%s' overlaps with '%s'.", b, a)
			}
		}
	}
	v := &VPC{ID: r.ids.next("vpc"), State: "available", Tags: in.Tags.clone()}
	for _, c := range cidrs {
		v.CIDRBlocks = append(v.CIDRBlocks, c.Masked())
	}
	if in.AmazonProvidedIPv6 {
		n := len(r.vpcs) + 1
		v.IPv6CIDRBlocks = []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("2600:1f14:%x:%x00::/56", 0x100+n/256, n%256))}
	}
	sg := &SecurityGroup{ID: r.ids.next("sg"), Name: "default", Description: "default VPC security group", VPCID: v.ID, Tags: Tags{}}
	v.DefaultGroupID = sg.ID
	r.vpcs[v.ID] = v
	r.groups[sg.ID] = sg
	r.defaultRules(sg, true)
	r.doing("CreateVpc")
	vc, gc := r.vpcCopy(v), sg.clone()
	r.emit(Change{Kind: ChangeVPCCreated, VPC: &vc})
	r.emit(Change{Kind: ChangeGroupCreated, SecurityGroup: &gc})
	return r.vpcCopy(v), nil
}

func (r *Region) vpcCopy(v *VPC) VPC {
	c := *v
	c.CIDRBlocks = slices.Clone(v.CIDRBlocks)
	c.IPv6CIDRBlocks = slices.Clone(v.IPv6CIDRBlocks)
	c.Tags = v.Tags.clone()
	return c
}

// CreateSubnetInput describes a new subnet.
type CreateSubnetInput struct {
	VPCID    string
	CIDR     netip.Prefix
	AZ       string       // default: the region's "a" zone
	IPv6CIDR netip.Prefix // optional /64 inside the VPC's IPv6 block
	Tags     Tags
}

// CreateSubnet creates a subnet inside one of the VPC's CIDR blocks.
func (r *Region) CreateSubnet(in CreateSubnetInput) (Subnet, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := CheckID(KindVPC, in.VPCID); err != nil {
		return Subnet{}, err
	}
	v, ok := r.vpcs[in.VPCID]
	if !ok {
		return Subnet{}, ErrVPCNotFound(in.VPCID)
	}
	c := in.CIDR
	if !c.IsValid() || !c.Addr().Is4() {
		return Subnet{}, ErrInvalid("Value (%s) for parameter cidrBlock is invalid. This is not a valid CIDR block.", c)
	}
	if c != c.Masked() {
		return Subnet{}, Errorf("InvalidSubnet.Range", "The CIDR '%s' is invalid: its host bits are set (the block is %s).", c, c.Masked())
	}
	inside := false
	for _, vc := range v.CIDRBlocks {
		if vc.Contains(c.Addr()) && c.Bits() >= vc.Bits() {
			inside = true
		}
	}
	if !inside || c.Bits() < 16 || c.Bits() > 28 {
		return Subnet{}, Errorf("InvalidSubnet.Range", "The CIDR '%s' is invalid.", c)
	}
	for _, s := range r.subnets {
		if s.CIDR.Overlaps(c) {
			return Subnet{}, Errorf("InvalidSubnet.Conflict", "The CIDR '%s' conflicts with another subnet", c)
		}
	}
	az := in.AZ
	if az == "" {
		az = r.opts.Name + "a"
	}
	if !r.validAZ(az) {
		return Subnet{}, ErrInvalid("Value (%s) for parameter availabilityZone is invalid. Subnets can currently only be created in the following availability zones: %sa, %sb, %sc.", az, r.opts.Name, r.opts.Name, r.opts.Name)
	}
	s := &subnetState{Subnet: Subnet{ID: r.ids.next("subnet"), VPCID: v.ID, AZ: az, AZID: AZID(r.opts.Name, az), CIDR: c, Tags: in.Tags.clone()}}
	s.pool = newAddrPool(c, r.opts.Seed, s.ID)
	if in.IPv6CIDR.IsValid() {
		ok := false
		for _, b := range v.IPv6CIDRBlocks {
			ok = ok || (b.Contains(in.IPv6CIDR.Addr()) && in.IPv6CIDR.Bits() == 64)
		}
		if !ok {
			return Subnet{}, Errorf("InvalidSubnet.Range", "The IPv6 CIDR '%s' is invalid.", in.IPv6CIDR)
		}
		s.IPv6CIDR = in.IPv6CIDR.Masked()
		s.v6Next = 0x10
	}
	r.subnets[s.ID] = s
	r.doing("CreateSubnet")
	sc := r.subnetCopy(s)
	r.emit(Change{Kind: ChangeSubnetCreated, SubnetID: s.ID, Subnet: &sc})
	return r.subnetCopy(s), nil
}

func (r *Region) subnetCopy(s *subnetState) Subnet {
	c := s.Subnet
	c.AvailableIPs = s.pool.available()
	c.FreePrefixes = s.pool.freePrefixes()
	c.Tags = s.Tags.clone()
	return c
}

// CreateSecurityGroupInput describes a new security group.
type CreateSecurityGroupInput struct {
	VPCID       string
	Name        string
	Description string
	Tags        Tags
}

// CreateSecurityGroup creates a security group in a VPC.
func (r *Region) CreateSecurityGroup(in CreateSecurityGroupInput) (SecurityGroup, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if in.Name == "" {
		return SecurityGroup{}, ErrMissing("GroupName")
	}
	if in.Description == "" {
		return SecurityGroup{}, ErrMissing("GroupDescription")
	}
	if err := CheckID(KindVPC, in.VPCID); err != nil {
		return SecurityGroup{}, err
	}
	if in.VPCID == "" {
		return SecurityGroup{}, ErrMissing("VpcId")
	}
	if _, ok := r.vpcs[in.VPCID]; !ok {
		return SecurityGroup{}, ErrVPCNotFound(in.VPCID)
	}
	if strings.EqualFold(in.Name, "default") || strings.HasPrefix(strings.ToLower(in.Name), "sg-") {
		return SecurityGroup{}, ErrInvalid("Group names may not be in the format sg-* or be 'default'.")
	}
	for _, g := range r.groups {
		if g.VPCID == in.VPCID && g.Name == in.Name {
			return SecurityGroup{}, Errorf("InvalidGroup.Duplicate", "The security group '%s' already exists for VPC '%s'", in.Name, in.VPCID)
		}
	}
	g := &SecurityGroup{ID: r.ids.next("sg"), Name: in.Name, Description: in.Description, VPCID: in.VPCID, Tags: in.Tags.clone()}
	r.groups[g.ID] = g
	r.defaultRules(g, false)
	r.doing("CreateSecurityGroup")
	gc := g.clone()
	r.emit(Change{Kind: ChangeGroupCreated, SecurityGroup: &gc})
	return g.clone(), nil
}

// VPCs returns every VPC, sorted by id.
func (r *Region) VPCs() []VPC {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]VPC, 0, len(r.vpcs))
	for _, v := range r.vpcs {
		out = append(out, r.vpcCopy(v))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Subnets returns every subnet, sorted by id.
func (r *Region) Subnets() []Subnet {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Subnet, 0, len(r.subnets))
	for _, s := range r.subnets {
		out = append(out, r.subnetCopy(s))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// SecurityGroups returns every security group, sorted by id.
func (r *Region) SecurityGroups() []SecurityGroup {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]SecurityGroup, 0, len(r.groups))
	for _, g := range r.groups {
		c := *g
		c.Tags = g.Tags.clone()
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Instances returns every instance (terminated ones included), sorted by
// launch order.
func (r *Region) Instances() []Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Instance, 0, len(r.insts))
	for _, i := range r.insts {
		out = append(out, i.clone())
	}
	sort.Slice(out, func(a, b int) bool {
		if !out[a].LaunchTime.Equal(out[b].LaunchTime) {
			return out[a].LaunchTime.Before(out[b].LaunchTime)
		}
		return out[a].ID < out[b].ID
	})
	return out
}

// Instance returns one instance.
func (r *Region) Instance(id string) (Instance, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := CheckID(KindInstance, id); err != nil {
		return Instance{}, err
	}
	i, ok := r.insts[id]
	if !ok {
		return Instance{}, ErrInstanceNotFound(id)
	}
	return i.clone(), nil
}

// SetMetadataOptions changes an instance's IMDS settings (ModifyInstanceMetadataOptions).
func (r *Region) SetMetadataOptions(id string, m MetadataOptions) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doing("ModifyInstanceMetadataOptions")
	i, ok := r.insts[id]
	if !ok {
		return ErrInstanceNotFound(id)
	}
	if m.HTTPTokens != "" && m.HTTPTokens != "optional" && m.HTTPTokens != "required" {
		return ErrInvalid("Value (%s) for parameter HttpTokens is invalid.", m.HTTPTokens)
	}
	if m.HTTPEndpoint != "" && m.HTTPEndpoint != "enabled" && m.HTTPEndpoint != "disabled" {
		return ErrInvalid("Value (%s) for parameter HttpEndpoint is invalid.", m.HTTPEndpoint)
	}
	if m.HopLimit != 0 && (m.HopLimit < 1 || m.HopLimit > 64) {
		return ErrInvalid("Value (%d) for parameter HttpPutResponseHopLimit is invalid.", m.HopLimit)
	}
	if m.HTTPTokens != "" {
		i.Metadata.HTTPTokens = m.HTTPTokens
	}
	if m.HTTPEndpoint != "" {
		i.Metadata.HTTPEndpoint = m.HTTPEndpoint
	}
	if m.HopLimit != 0 {
		i.Metadata.HopLimit = m.HopLimit
	}
	r.emit(Change{Kind: ChangeInstanceMetadata, InstanceID: id})
	return nil
}

// NetworkInterfaces returns every ENI in creation order, including ones the
// consistency lag still hides from Describe calls.
func (r *Region) NetworkInterfaces() []NetworkInterface {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]NetworkInterface, 0, len(r.enis))
	for _, id := range r.order {
		out = append(out, r.enis[id].clone())
	}
	return out
}

// NetworkInterface returns one ENI as the model holds it (no lag applied).
func (r *Region) NetworkInterface(id string) (NetworkInterface, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := CheckID(KindENI, id); err != nil {
		return NetworkInterface{}, err
	}
	e, ok := r.enis[id]
	if !ok {
		return NetworkInterface{}, ErrENINotFound(id)
	}
	return e.clone(), nil
}

// VisibleENIs returns ENIs as Describe calls see them at now: ENIs younger
// than their lag are missing, and so are addresses and prefixes assigned
// more recently than theirs; addresses, prefixes and ENIs removed less
// than RemovalLag ago are still there.
func (r *Region) VisibleENIs(now time.Time) []NetworkInterface {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]NetworkInterface, 0, len(r.enis)+len(r.tombs))
	for _, id := range r.order {
		e := r.enis[id]
		if now.Before(e.visibleAt) {
			continue
		}
		c := e.clone()
		if len(e.seen) > 0 {
			c.SecondaryIPs = slices.DeleteFunc(c.SecondaryIPs, func(a netip.Addr) bool { return now.Before(e.seen[a]) })
			c.Prefixes = slices.DeleteFunc(c.Prefixes, func(p netip.Prefix) bool { return now.Before(e.seen[p]) })
		}
		for k, until := range e.gone {
			switch x := k.(type) {
			case netip.Addr:
				if now.Before(until) && !slices.Contains(c.SecondaryIPs, x) {
					c.SecondaryIPs = append(c.SecondaryIPs, x)
				}
			case netip.Prefix:
				if now.Before(until) && !slices.Contains(c.Prefixes, x) {
					c.Prefixes = append(c.Prefixes, x)
				}
			}
		}
		out = append(out, c)
	}
	r.tombs = slices.DeleteFunc(r.tombs, func(t tomb) bool { return !now.Before(t.until) })
	for _, t := range r.tombs {
		out = append(out, t.eni.clone())
	}
	return out
}

// TrunkAssociations returns every trunk association, sorted by id.
func (r *Region) TrunkAssociations() []TrunkAssociation {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]TrunkAssociation, 0, len(r.trunks))
	for _, t := range r.trunks {
		c := *t
		c.Tags = t.Tags.clone()
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Now is the region's clock.
func (r *Region) Now() time.Time { return r.opts.Now() }
