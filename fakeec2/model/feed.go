package model

import (
	"net/netip"
	"sort"
	"sync"
	"time"
)

// ChangeKind names one kind of state change in the region.
type ChangeKind string

// The kinds of change the feed reports.
const (
	ChangeInstanceRunning    ChangeKind = "InstanceRunning"
	ChangeInstanceTerminated ChangeKind = "InstanceTerminated"
	ChangeInstanceMetadata   ChangeKind = "InstanceMetadataOptions"
	ChangeENICreated         ChangeKind = "NetworkInterfaceCreated"
	ChangeENIDeleted         ChangeKind = "NetworkInterfaceDeleted"
	ChangeAttachment         ChangeKind = "AttachmentState"
	ChangeIPsAssigned        ChangeKind = "PrivateIpsAssigned"
	ChangeIPsUnassigned      ChangeKind = "PrivateIpsUnassigned"
	ChangePrefixesAssigned   ChangeKind = "Ipv4PrefixesAssigned"
	ChangePrefixesUnassigned ChangeKind = "Ipv4PrefixesUnassigned"
	ChangeIPv6Assigned       ChangeKind = "Ipv6Assigned"
	ChangeIPv6Unassigned     ChangeKind = "Ipv6Unassigned"
	ChangeTrunkAssociated    ChangeKind = "TrunkAssociated"
	ChangeTrunkDisassociated ChangeKind = "TrunkDisassociated"
	ChangeENIModified        ChangeKind = "NetworkInterfaceModified"
	ChangeVPCCreated         ChangeKind = "VpcCreated"
	ChangeSubnetCreated      ChangeKind = "SubnetCreated"
	ChangeGroupCreated       ChangeKind = "SecurityGroupCreated"
	// ChangeGroupRules: a group's rules changed (the change carries the
	// group with all its rules).
	ChangeGroupRules   ChangeKind = "SecurityGroupRulesChanged"
	ChangeGroupDeleted ChangeKind = "SecurityGroupDeleted"
)

// Change is one state change, reported in the order the model applied it.
// Fields that do not apply to a kind are zero. A change carries copies of
// what it touched as they are after it (ENI, Instance, VPC, Subnet,
// SecurityGroup), so a subscriber never reads the region's state to
// interpret it.
type Change struct {
	Seq  uint64
	Time time.Time
	Kind ChangeKind
	// Action is the EC2 API action whose call (or whose timer, for the
	// second half of an attach or detach) caused the change.
	Action     string
	InstanceID string
	ENIID      string
	MAC        string
	SubnetID   string
	// Attachment changes: the attachment and its new state
	// (attaching, attached, detaching, detached).
	AttachmentID string
	DeviceIndex  int
	CardIndex    int
	State        string
	// Address changes: the addresses or prefixes added or removed. For
	// ChangeENICreated, the ENI's primary address.
	Addrs    []netip.Addr
	Prefixes []netip.Prefix
	// Trunk changes.
	AssociationID string
	TrunkID       string
	VlanID        int
	// ENI modifications.
	SourceDestCheck bool

	// ENI is the changed ENI after the change (nil once deleted).
	ENI *NetworkInterface
	// Instance is the changed instance after the change (instance kinds).
	Instance *Instance
	// VPC, Subnet and SecurityGroup are set by their creation changes.
	VPC           *VPC
	Subnet        *Subnet
	SecurityGroup *SecurityGroup
}

// feed fans changes out to subscribers. Publishing never blocks the model:
// each subscriber has an unbounded queue drained by its own goroutine.
type feed struct {
	mu   sync.Mutex
	seq  uint64
	subs map[*Subscription]struct{}
}

// Subscription receives changes on C until Close is called.
type Subscription struct {
	C <-chan Change

	f      *feed
	out    chan Change
	mu     sync.Mutex
	cond   *sync.Cond
	queue  []Change
	closed bool
	done   chan struct{}
}

func (f *feed) publish(c Change) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	c.Seq = f.seq
	for s := range f.subs {
		s.mu.Lock()
		s.queue = append(s.queue, c)
		s.cond.Signal()
		s.mu.Unlock()
	}
}

func (f *feed) subscribe() *Subscription {
	s := &Subscription{f: f, out: make(chan Change), done: make(chan struct{})}
	s.C = s.out
	s.cond = sync.NewCond(&s.mu)
	f.mu.Lock()
	if f.subs == nil {
		f.subs = map[*Subscription]struct{}{}
	}
	f.subs[s] = struct{}{}
	f.mu.Unlock()
	go s.pump()
	return s
}

func (s *Subscription) pump() {
	defer close(s.out)
	for {
		s.mu.Lock()
		for len(s.queue) == 0 && !s.closed {
			s.cond.Wait()
		}
		if s.closed {
			s.mu.Unlock()
			return
		}
		c := s.queue[0]
		s.queue = s.queue[1:]
		s.mu.Unlock()
		select {
		case s.out <- c:
		case <-s.done:
			return
		}
	}
}

// Pending returns how many changes wait behind the next one on C, so a
// subscriber can batch work over a burst.
func (s *Subscription) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// Close stops the subscription; C is closed soon after.
func (s *Subscription) Close() {
	s.f.mu.Lock()
	delete(s.f.subs, s)
	s.f.mu.Unlock()
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
		s.cond.Signal()
	}
	s.mu.Unlock()
}

// Subscribe returns a subscription to every change from now on.
func (r *Region) Subscribe() *Subscription { return r.feed.subscribe() }

// Snapshot is the full state of a region at one instant.
type Snapshot struct {
	Seq               uint64
	VPCs              []VPC
	Subnets           []Subnet
	SecurityGroups    []SecurityGroup
	Instances         []Instance
	NetworkInterfaces []NetworkInterface
	TrunkAssociations []TrunkAssociation
}

// SubscribeWithSnapshot returns the current state and a subscription to
// every change after it, atomically: nothing is missed or seen twice. A
// restarted consumer (the fabric) re-syncs from the snapshot.
func (r *Region) SubscribeWithSnapshot() (Snapshot, *Subscription) {
	// Every change is emitted under r.mu, so nothing can happen between
	// subscribing and copying the state while we hold it.
	r.mu.Lock()
	defer r.mu.Unlock()
	sub := r.feed.subscribe()
	snap := Snapshot{}
	r.feed.mu.Lock()
	snap.Seq = r.feed.seq
	r.feed.mu.Unlock()
	for _, v := range r.vpcs {
		snap.VPCs = append(snap.VPCs, r.vpcCopy(v))
	}
	for _, s := range r.subnets {
		snap.Subnets = append(snap.Subnets, r.subnetCopy(s))
	}
	for _, g := range r.groups {
		c := *g
		c.Tags = g.Tags.clone()
		snap.SecurityGroups = append(snap.SecurityGroups, c)
	}
	for _, i := range r.insts {
		snap.Instances = append(snap.Instances, i.clone())
	}
	for _, id := range r.order {
		snap.NetworkInterfaces = append(snap.NetworkInterfaces, r.enis[id].clone())
	}
	for _, t := range r.trunks {
		c := *t
		c.Tags = t.Tags.clone()
		snap.TrunkAssociations = append(snap.TrunkAssociations, c)
	}
	sort.Slice(snap.VPCs, func(i, j int) bool { return snap.VPCs[i].ID < snap.VPCs[j].ID })
	sort.Slice(snap.Subnets, func(i, j int) bool { return snap.Subnets[i].ID < snap.Subnets[j].ID })
	sort.Slice(snap.SecurityGroups, func(i, j int) bool { return snap.SecurityGroups[i].ID < snap.SecurityGroups[j].ID })
	sort.Slice(snap.Instances, func(i, j int) bool { return snap.Instances[i].ID < snap.Instances[j].ID })
	sort.Slice(snap.TrunkAssociations, func(i, j int) bool { return snap.TrunkAssociations[i].ID < snap.TrunkAssociations[j].ID })
	return snap, sub
}

// emit publishes a change; callers hold r.mu so changes are ordered as
// applied. It attaches copies of the ENI and instance the change names.
func (r *Region) emit(c Change) {
	c.Time = r.opts.Now()
	if c.Action == "" {
		c.Action = r.action
	}
	if e, ok := r.enis[c.ENIID]; ok && c.ENIID != "" {
		x := e.NetworkInterface.clone()
		c.ENI = &x
	}
	if i, ok := r.insts[c.InstanceID]; ok && c.ENIID == "" {
		x := i.clone()
		c.Instance = &x
	}
	r.feed.publish(c)
}

// doing names the API action whose changes are about to be emitted; callers
// hold r.mu.
func (r *Region) doing(action string) { r.action = action }

// FeedSeq returns the sequence number of the newest change; a consumer that
// has processed it is caught up with the region.
func (r *Region) FeedSeq() uint64 {
	r.feed.mu.Lock()
	defer r.feed.mu.Unlock()
	return r.feed.seq
}
