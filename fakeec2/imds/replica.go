package imds

import (
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/vpclab/vpclab/fakeec2/model"
)

// replica is what one instance's metadata service shows: the ENIs it sees
// now, and the changes it will see once their lag has passed.
type replica struct {
	inst       model.Instance
	sgNames    []string
	primaryMAC string
	enis       map[string]eniView   // what the instance currently sees
	queue      []pending            // changes not yet visible, in feed order
	lastAt     map[string]time.Time // per ENI: visibility time of its newest queued change
	lag        *time.Duration       // nil: the service default
	tokens     map[string]time.Time
	terminated bool
	srv        *http.Server
	url        string
}

// eniView is an ENI as one instance sees it, with the subnet, VPC and
// security-group facts IMDS reports alongside it.
type eniView struct {
	model.NetworkInterface
	subnetCIDR netip.Prefix
	subnetV6   netip.Prefix
	vpcCIDRs   []netip.Prefix
	vpcV6      []netip.Prefix
	sgNames    []string
}

// pending replaces (eni != nil) or removes (eni == nil) one ENI at time at.
type pending struct {
	at  time.Time
	id  string
	eni *eniView
}

func (v *replica) lagOr(def time.Duration) time.Duration {
	if v.lag != nil {
		return *v.lag
	}
	return def
}

// catchUp applies every queued change due by now. One ENI's changes are
// due in feed order (each is queued no earlier than the one before it);
// different ENIs' are independent, so one lagging ENI holds back no other.
func (v *replica) catchUp(now time.Time) {
	v.queue = slices.DeleteFunc(v.queue, func(it pending) bool {
		if it.at.After(now) {
			return false
		}
		if it.eni == nil {
			delete(v.enis, it.id)
		} else {
			v.enis[it.id] = *it.eni
		}
		return true
	})
	for id, at := range v.lastAt {
		if !at.After(now) {
			delete(v.lastAt, id)
		}
	}
}

// visibleTo reports whether IMDS lists e for instance id: from the end of
// attaching until the end of detaching; branch ENIs never.
func visibleTo(e *model.NetworkInterface, id string) bool {
	a := e.Attachment
	return a != nil && a.InstanceID == id && (a.Status == "attached" || a.Status == "detaching") && e.InterfaceType != "branch"
}

// world is what IMDS knows of the region besides instances: the facts it
// reports next to each ENI. It is built from the feed alone.
type world struct {
	vpcs    map[string]model.VPC
	subnets map[string]model.Subnet
	groups  map[string]model.SecurityGroup
}

// view copies an ENI with the facts IMDS shows next to it.
func (w *world) view(e *model.NetworkInterface) eniView {
	x := eniView{NetworkInterface: *e}
	if s, ok := w.subnets[e.SubnetID]; ok {
		x.subnetCIDR, x.subnetV6 = s.CIDR, s.IPv6CIDR
	}
	if v, ok := w.vpcs[e.VPCID]; ok {
		x.vpcCIDRs, x.vpcV6 = v.CIDRBlocks, v.IPv6CIDRBlocks
	}
	x.sgNames = w.groupNames(e.SecurityGroups)
	return x
}

func (w *world) groupNames(ids []string) []string {
	var out []string
	for _, g := range ids {
		if sg, ok := w.groups[g]; ok {
			out = append(out, sg.Name)
		}
	}
	return out
}

// follow applies the region's changes, in order, until the subscription
// closes. A request waits (sync) until every change made before it has
// been applied, so a zero lag means "visible at once".
func (m *Service) follow(sub *model.Subscription) {
	for c := range sub.C {
		m.mu.Lock()
		m.apply(c)
		m.processed = c.Seq
		m.cond.Broadcast()
		m.mu.Unlock()
	}
}

// sync waits, with m.mu held, until the changes the region had made when
// it was called are applied.
func (m *Service) sync() {
	target := m.region.FeedSeq()
	for m.processed < target && !m.closed {
		m.cond.Wait()
	}
}

// start builds the views of a snapshot: every running instance sees its
// attached ENIs at once.
func (m *Service) start(snap model.Snapshot) {
	for _, v := range snap.VPCs {
		m.world.vpcs[v.ID] = v
	}
	for _, s := range snap.Subnets {
		m.world.subnets[s.ID] = s
	}
	for _, g := range snap.SecurityGroups {
		m.world.groups[g.ID] = g
	}
	for _, i := range snap.Instances {
		if i.State == "running" {
			m.addInstance(i)
		}
	}
	for i := range snap.NetworkInterfaces {
		e := &snap.NetworkInterfaces[i]
		for id, v := range m.insts {
			if visibleTo(e, id) {
				v.enis[e.ID] = m.world.view(e)
			}
			if e.ID == v.inst.PrimaryENI {
				v.primaryMAC = e.MAC
			}
		}
	}
	m.processed = snap.Seq
}

// addInstance starts an instance's view, empty: its primary ENI arrives
// with the launch's own changes.
func (m *Service) addInstance(i model.Instance) {
	v := &replica{inst: i, enis: map[string]eniView{}, lastAt: map[string]time.Time{}, tokens: map[string]time.Time{}}
	v.sgNames = m.world.groupNames(i.SecurityGroups)
	m.insts[i.ID] = v
	if m.shared != nil {
		v.url = m.sharedURL(i.ID)
	}
}

// apply routes one region change into the views of the instances it
// affects; m.mu is held.
func (m *Service) apply(c model.Change) {
	switch c.Kind {
	case model.ChangeVPCCreated:
		m.world.vpcs[c.VPC.ID] = *c.VPC
		return
	case model.ChangeSubnetCreated:
		m.world.subnets[c.Subnet.ID] = *c.Subnet
		return
	case model.ChangeGroupCreated:
		m.world.groups[c.SecurityGroup.ID] = *c.SecurityGroup
		return
	case model.ChangeInstanceRunning:
		m.addInstance(*c.Instance)
		return
	case model.ChangeInstanceTerminated:
		if v, ok := m.insts[c.InstanceID]; ok {
			v.terminated, v.inst.State, v.queue, v.tokens = true, "terminated", nil, map[string]time.Time{}
			if v.srv != nil {
				go v.srv.Close()
				v.srv = nil
			}
			v.url = ""
		}
		return
	case model.ChangeInstanceMetadata:
		if v, ok := m.insts[c.InstanceID]; ok {
			v.inst.Metadata = c.Instance.Metadata
		}
		return
	}
	if c.ENIID == "" {
		return
	}
	e := c.ENI // nil once deleted
	targets := make([]string, 0, 2)
	if c.InstanceID != "" {
		targets = append(targets, c.InstanceID)
	}
	if e != nil && e.Attachment != nil && e.Attachment.InstanceID != c.InstanceID {
		targets = append(targets, e.Attachment.InstanceID)
	}
	for _, id := range targets {
		v, ok := m.insts[id]
		if !ok || v.terminated {
			continue
		}
		var snap *eniView
		if e != nil && visibleTo(e, id) {
			x := m.world.view(e)
			snap = &x
		}
		if e != nil && e.ID == v.inst.PrimaryENI {
			v.primaryMAC = e.MAC
		}
		lag := v.lagOr(m.lag)
		var rules []string
		if c.Action == "RunInstances" {
			lag = 0 // an instance boots with its primary ENI in place
		} else if m.opts.Faults != nil {
			var extra time.Duration
			extra, rules = m.opts.Faults.IMDSLag(c.Action, c.ENIID+" on "+id)
			lag += extra
		}
		at := c.Time.Add(lag)
		if last := v.lastAt[c.ENIID]; at.Before(last) {
			at = last // in order per ENI: behind an earlier, later-visible change of the same ENI
		}
		v.lastAt[c.ENIID] = at
		if at.After(c.Time) {
			m.recordDelay(Delay{Action: c.Action, ENIID: c.ENIID, AttachmentID: c.AttachmentID, InstanceID: id, Changed: c.Time,
				VisibleAt: at, Lag: model.Duration(at.Sub(c.Time)), Faults: rules})
		}
		v.queue = append(v.queue, pending{at: at, id: c.ENIID, eni: snap})
		v.catchUp(c.Time) // applies what is due (all of it at zero lag), bounding the queue
	}
}
