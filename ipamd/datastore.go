package ipamd

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// IPAMKey identifies one pod interface: (network name, container id, ifname).
type IPAMKey struct {
	NetworkName string `json:"networkName"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// IsZero reports whether no part of the key is set.
func (k IPAMKey) IsZero() bool { return k == IPAMKey{} }

func (k IPAMKey) valid() bool { return k.NetworkName != "" && k.ContainerID != "" && k.IfName != "" }

// IPAMMetadata is what the datastore remembers about the pod.
type IPAMMetadata struct {
	K8SPodNamespace string `json:"k8sPodNamespace,omitempty"`
	K8SPodName      string `json:"k8sPodName,omitempty"`
	InterfacesCount int    `json:"interfacesCount,omitempty"`
}

// AddressInfo is one address the datastore tracks.
type AddressInfo struct {
	Address        string
	IPAMKey        IPAMKey
	IPAMMetadata   IPAMMetadata
	AssignedTime   time.Time
	UnassignedTime time.Time
}

func (a *AddressInfo) assigned() bool { return !a.IPAMKey.IsZero() }

// CidrInfo is one /32 secondary address or /28 prefix of an ENI.
type CidrInfo struct {
	Cidr          jsonIPNet
	IPAddresses   map[string]*AddressInfo
	IsPrefix      bool
	AddressFamily string
	prefix        netip.Prefix
}

// jsonIPNet marshals like net.IPNet (IP string, Mask base64), as the VPC
// CNI's introspection shows it.
type jsonIPNet struct {
	IP   string
	Mask []byte
}

func newCidr(p netip.Prefix, isPrefix bool) *CidrInfo {
	n := net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
	return &CidrInfo{Cidr: jsonIPNet{IP: n.IP.String(), Mask: n.Mask}, IPAddresses: map[string]*AddressInfo{}, IsPrefix: isPrefix, prefix: p}
}

func (c *CidrInfo) size() int { return 1 << (32 - c.prefix.Bits()) }

func (c *CidrInfo) assignedCount() int {
	n := 0
	for _, a := range c.IPAddresses {
		if a.assigned() {
			n++
		}
	}
	return n
}

// ENI is one ENI in the datastore, shaped like the VPC CNI's ENI for
// introspection.
type ENI struct {
	ID                  string
	IsPrimary           bool
	IsTrunk             bool
	IsEFA               bool
	DeviceNumber        int
	AvailableIPv4Cidrs  map[string]*CidrInfo
	IPv6Cidrs           map[string]*CidrInfo
	IsExcludedForPodIPs bool
	RouteTableID        int
	SubnetID            string

	createTime time.Time
	mac        string
	primaryIP  netip.Addr
	subnet     netip.Prefix
}

// Errors of the datastore.
var (
	ErrNoAvailableIP = errors.New("datastore: no available IP addresses")
	ErrUnknownPod    = errors.New("datastore: unknown pod")
	ErrENIInUse      = errors.New("datastore: ENI has assigned addresses")
)

// Stats are the datastore's counts in the active mode.
type Stats struct {
	TotalIPs    int
	AssignedIPs int
	CooldownIPs int
	// Prefix-mode counts.
	TotalPrefixes int
	FreePrefixes  int
}

// Available is Total − Assigned (cooling addresses count as available).
func (s Stats) Available() int { return s.TotalIPs - s.AssignedIPs }

// DataStore holds the node's ENIs and which pod holds which address.
type DataStore struct {
	mu       sync.Mutex
	enis     map[string]*ENI
	pd       bool
	cooldown time.Duration
	now      func() time.Time
	persist  func(Checkpoint) error
}

// NewDataStore returns an empty datastore; persist (may be nil) is called
// with every allocation after each change, and a failure rolls it back.
func NewDataStore(prefixMode bool, cooldown time.Duration, persist func(Checkpoint) error) *DataStore {
	return &DataStore{enis: map[string]*ENI{}, pd: prefixMode, cooldown: cooldown, now: time.Now, persist: persist}
}

// AddENI adds an ENI (no addresses yet).
func (d *DataStore) AddENI(e *ENI) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.enis[e.ID]; ok {
		return fmt.Errorf("datastore: ENI %s already present", e.ID)
	}
	if e.AvailableIPv4Cidrs == nil {
		e.AvailableIPv4Cidrs = map[string]*CidrInfo{}
	}
	if e.IPv6Cidrs == nil {
		e.IPv6Cidrs = map[string]*CidrInfo{}
	}
	if e.createTime.IsZero() {
		e.createTime = d.now()
	}
	d.enis[e.ID] = e
	return nil
}

// HasENI reports whether the ENI is in the datastore.
func (d *DataStore) HasENI(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.enis[id]
	return ok
}

// AddCIDR adds a /32 secondary address or a /28 prefix to an ENI.
func (d *DataStore) AddCIDR(eniID string, p netip.Prefix, isPrefix bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.enis[eniID]
	if !ok {
		return fmt.Errorf("datastore: unknown ENI %s", eniID)
	}
	if _, ok := e.AvailableIPv4Cidrs[p.String()]; !ok {
		e.AvailableIPv4Cidrs[p.String()] = newCidr(p, isPrefix)
	}
	return nil
}

// DelCIDR removes an unassigned CIDR from an ENI.
func (d *DataStore) DelCIDR(eniID string, p netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.enis[eniID]
	if !ok {
		return fmt.Errorf("datastore: unknown ENI %s", eniID)
	}
	c, ok := e.AvailableIPv4Cidrs[p.String()]
	if !ok {
		return nil
	}
	if c.assignedCount() > 0 {
		return fmt.Errorf("datastore: %s on %s has assigned addresses", p, eniID)
	}
	delete(e.AvailableIPv4Cidrs, p.String())
	return nil
}

// DelENI removes an ENI without assigned addresses.
func (d *DataStore) DelENI(id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.enis[id]
	if !ok {
		return nil
	}
	for _, c := range e.AvailableIPv4Cidrs {
		if c.assignedCount() > 0 {
			return fmt.Errorf("%w: %s", ErrENIInUse, id)
		}
	}
	delete(d.enis, id)
	return nil
}

// activeCidr reports whether a CIDR counts in the current mode.
func (d *DataStore) activeCidr(c *CidrInfo) bool { return c.IsPrefix == d.pd }

func (d *DataStore) sortedENIs() []*ENI {
	out := make([]*ENI, 0, len(d.enis))
	for _, e := range d.enis {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DeviceNumber < out[j].DeviceNumber })
	return out
}

func sortedCidrs(e *ENI) []*CidrInfo {
	out := make([]*CidrInfo, 0, len(e.AvailableIPv4Cidrs))
	for _, c := range e.AvailableIPv4Cidrs {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].prefix.Addr().Less(out[j].prefix.Addr()) })
	return out
}

// GetStats returns the counts of the active mode.
func (d *DataStore) GetStats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats()
}

func (d *DataStore) stats() Stats {
	var s Stats
	now := d.now()
	for _, e := range d.enis {
		if e.IsExcludedForPodIPs || e.IsTrunk {
			continue
		}
		for _, c := range e.AvailableIPv4Cidrs {
			if !d.activeCidr(c) {
				continue
			}
			s.TotalIPs += c.size()
			n := 0
			for _, a := range c.IPAddresses {
				if a.assigned() {
					n++
				} else if d.isCooling(a, now) {
					s.CooldownIPs++
				}
			}
			s.AssignedIPs += n
			if c.IsPrefix {
				s.TotalPrefixes++
				if n == 0 {
					s.FreePrefixes++
				}
			}
		}
	}
	return s
}

// AssignPodIP gives the pod an address, or returns the one it already has
// (ADD is idempotent). It returns the ENI the address belongs to.
func (d *DataStore) AssignPodIP(key IPAMKey, meta IPAMMetadata) (netip.Addr, ENI, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, _, a := d.find(key); a != nil {
		return netip.MustParseAddr(a.Address), *e, nil
	}
	now := d.now()
	for _, e := range d.sortedENIs() {
		if e.IsExcludedForPodIPs || e.IsTrunk {
			continue
		}
		for _, c := range sortedCidrs(e) {
			if !d.activeCidr(c) {
				continue
			}
			a, fresh := d.pick(c, now)
			if a == nil {
				continue
			}
			prev := *a
			a.IPAMKey, a.IPAMMetadata, a.AssignedTime, a.UnassignedTime = key, meta, now, time.Time{}
			if err := d.save(); err != nil {
				if fresh {
					delete(c.IPAddresses, a.Address)
				} else {
					*a = prev
				}
				return netip.Addr{}, ENI{}, fmt.Errorf("datastore: checkpoint: %w", err)
			}
			return netip.MustParseAddr(a.Address), *e, nil
		}
	}
	return netip.Addr{}, ENI{}, ErrNoAvailableIP
}

// isCooling says whether a was released less than the cooldown before now.
func (d *DataStore) isCooling(a *AddressInfo, now time.Time) bool {
	return !a.UnassignedTime.IsZero() && now.Sub(a.UnassignedTime) < d.cooldown
}

// track returns c's record of ip, creating it (unassigned) when c tracks
// none yet; fresh says it was created.
func (c *CidrInfo) track(ip netip.Addr) (a *AddressInfo, fresh bool) {
	if a, ok := c.IPAddresses[ip.String()]; ok {
		return a, false
	}
	a = &AddressInfo{Address: ip.String()}
	c.IPAddresses[ip.String()] = a
	return a, true
}

// pick returns a free address of c out of cooldown: a tracked one, or the
// lowest one not tracked yet (fresh, now tracked).
func (d *DataStore) pick(c *CidrInfo, now time.Time) (*AddressInfo, bool) {
	var best *AddressInfo
	for _, a := range c.IPAddresses {
		if a.assigned() || d.isCooling(a, now) {
			continue
		}
		if best == nil || netip.MustParseAddr(a.Address).Less(netip.MustParseAddr(best.Address)) {
			best = a
		}
	}
	if best != nil {
		return best, false
	}
	for ip := c.prefix.Masked().Addr(); c.prefix.Contains(ip); ip = ip.Next() {
		if a, fresh := c.track(ip); fresh {
			return a, true
		}
	}
	return nil, false
}

func (d *DataStore) find(key IPAMKey) (*ENI, *CidrInfo, *AddressInfo) {
	for _, e := range d.enis {
		for _, c := range e.AvailableIPv4Cidrs {
			for _, a := range c.IPAddresses {
				if a.IPAMKey == key {
					return e, c, a
				}
			}
		}
	}
	return nil, nil, nil
}

// UnassignPodIP releases the pod's address into cooldown and returns it.
func (d *DataStore) UnassignPodIP(key IPAMKey) (netip.Addr, ENI, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, _, a := d.find(key)
	if a == nil {
		return netip.Addr{}, ENI{}, ErrUnknownPod
	}
	prev := *a
	a.IPAMKey, a.IPAMMetadata, a.UnassignedTime = IPAMKey{}, IPAMMetadata{}, d.now()
	if err := d.save(); err != nil {
		*a = prev
		return netip.Addr{}, ENI{}, fmt.Errorf("datastore: checkpoint: %w", err)
	}
	return netip.MustParseAddr(a.Address), *e, nil
}

// Allocations lists every assigned address, for the checkpoint.
func (d *DataStore) Allocations() []Allocation {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.allocations()
}

func (d *DataStore) allocations() []Allocation {
	var out []Allocation
	for _, e := range d.sortedENIs() {
		for _, c := range sortedCidrs(e) {
			for _, a := range c.IPAddresses {
				if a.assigned() {
					out = append(out, Allocation{IPAMKey: a.IPAMKey, IPv4: a.Address, AllocationTimestamp: a.AssignedTime.UnixNano(), Metadata: a.IPAMMetadata})
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IPv4 < out[j].IPv4 })
	return out
}

func (d *DataStore) save() error {
	if d.persist == nil {
		return nil
	}
	return d.persist(Checkpoint{Allocations: d.allocations(), Cooling: d.cooling()})
}

// cooling lists the released addresses still in cooldown.
func (d *DataStore) cooling() []Cooling {
	var out []Cooling
	now := d.now()
	for _, e := range d.sortedENIs() {
		for _, c := range sortedCidrs(e) {
			for _, a := range c.IPAddresses {
				if !a.assigned() && d.isCooling(a, now) {
					out = append(out, Cooling{IPv4: a.Address, Released: a.UnassignedTime.UnixNano()})
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IPv4 < out[j].IPv4 })
	return out
}

// Restore re-assigns checkpointed allocations to the CIDRs that contain
// them and puts the checkpointed cooling addresses back into cooldown;
// allocations no ENI holds are dropped and returned.
func (d *DataStore) Restore(ck Checkpoint) (dropped []Allocation, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, al := range ck.Allocations {
		a := d.addressFor(al.IPv4)
		if a == nil {
			dropped = append(dropped, al)
			continue
		}
		a.IPAMKey, a.IPAMMetadata, a.AssignedTime = al.IPAMKey, al.Metadata, time.Unix(0, al.AllocationTimestamp)
	}
	for _, c := range ck.Cooling {
		if a := d.addressFor(c.IPv4); a != nil && !a.assigned() {
			a.UnassignedTime = time.Unix(0, c.Released)
		}
	}
	return dropped, d.save()
}

// addressFor is the tracked address ip (tracking it if a CIDR of an ENI
// contains it), or nil when no ENI holds it.
func (d *DataStore) addressFor(s string) *AddressInfo {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return nil
	}
	for _, e := range d.enis {
		for _, c := range e.AvailableIPv4Cidrs {
			if c.prefix.Contains(ip) {
				a, _ := c.track(ip)
				return a
			}
		}
	}
	return nil
}

// CoolAll puts every unassigned address into cooldown from now: what a
// restart without a readable checkpoint must assume, since any of them may
// have been released a moment before.
func (d *DataStore) CoolAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	for _, e := range d.enis {
		for _, c := range e.AvailableIPv4Cidrs {
			for ip := c.prefix.Masked().Addr(); c.prefix.Contains(ip); ip = ip.Next() {
				if a, _ := c.track(ip); !a.assigned() {
					a.UnassignedTime = now
				}
			}
		}
	}
	_ = d.save()
}

// Release unassigns the pods' addresses into cooldown (their pods are gone
// and nobody will send a DEL) and returns the addresses released.
func (d *DataStore) Release(keys []IPAMKey) ([]netip.Addr, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []netip.Addr
	for _, k := range keys {
		if _, _, a := d.find(k); a != nil {
			a.IPAMKey, a.IPAMMetadata, a.UnassignedTime = IPAMKey{}, IPAMMetadata{}, d.now()
			out = append(out, netip.MustParseAddr(a.Address))
		}
	}
	return out, d.save()
}

// ENIs returns copies of the datastore's ENIs, by device number.
func (d *DataStore) ENIs() []ENI {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []ENI
	for _, e := range d.sortedENIs() {
		c := *e
		c.AvailableIPv4Cidrs = map[string]*CidrInfo{}
		for k, v := range e.AvailableIPv4Cidrs {
			cc := *v
			cc.IPAddresses = map[string]*AddressInfo{}
			for ak, av := range v.IPAddresses {
				x := *av
				cc.IPAddresses[ak] = &x
			}
			c.AvailableIPv4Cidrs[k] = &cc
		}
		out = append(out, c)
	}
	return out
}

// freeCidrs returns up to n CIDRs of the active mode with no assigned
// address and none cooling, from the highest device down. The VPC CNI's
// decrease ignores cooldown and may return a cooling address to EC2, where
// another node can get it at once: the cooldown then protects nothing.
func (d *DataStore) freeCidrs(n int) map[string][]netip.Prefix {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string][]netip.Prefix{}
	now := d.now()
	enis := d.sortedENIs()
	for i := len(enis) - 1; i >= 0 && n > 0; i-- {
		e := enis[i]
		if e.IsTrunk || e.IsExcludedForPodIPs {
			continue
		}
		cs := sortedCidrs(e)
		for j := len(cs) - 1; j >= 0 && n > 0; j-- {
			c := cs[j]
			if d.activeCidr(c) && c.assignedCount() == 0 && !d.coolingIn(c, now) {
				out[e.ID] = append(out[e.ID], c.prefix)
				n--
			}
		}
	}
	return out
}

// coolingIn says whether any address of c is in its cooldown.
func (d *DataStore) coolingIn(c *CidrInfo, now time.Time) bool {
	for _, a := range c.IPAddresses {
		if d.isCooling(a, now) {
			return true
		}
	}
	return false
}

// inactiveFree returns the unassigned CIDRs of the other mode (prefixes
// in secondary-IP mode and vice versa), to release at start-up.
func (d *DataStore) inactiveFree() map[string][]netip.Prefix {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string][]netip.Prefix{}
	for _, e := range d.enis {
		for _, c := range e.AvailableIPv4Cidrs {
			if !d.activeCidr(c) && c.assignedCount() == 0 {
				out[e.ID] = append(out[e.ID], c.prefix)
			}
		}
	}
	return out
}

// removableENI returns an ENI that may be freed: not primary, not trunk or
// EFA, old enough, nothing assigned or cooling, and not needed for the
// targets (others' free addresses ≥ warm, others' total ≥ minimum, others'
// free prefixes ≥ warmPrefixes).
func (d *DataStore) removableENI(minLife time.Duration, warm, minimum, warmPrefixes int) *ENI {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	s := d.stats()
	enis := d.sortedENIs()
	for i := len(enis) - 1; i >= 0; i-- {
		e := enis[i]
		if e.IsPrimary || e.IsTrunk || e.IsEFA || now.Sub(e.createTime) < minLife {
			continue
		}
		busy, total, prefixes := false, 0, 0
		for _, c := range e.AvailableIPv4Cidrs {
			if c.assignedCount() > 0 {
				busy = true
			}
			for _, a := range c.IPAddresses {
				if d.isCooling(a, now) {
					busy = true
				}
			}
			if d.activeCidr(c) {
				total += c.size()
				if c.IsPrefix {
					prefixes++
				}
			}
		}
		if busy {
			continue
		}
		if warm > 0 && s.Available()-total < warm {
			continue
		}
		if minimum > 0 && s.TotalIPs-total < minimum {
			continue
		}
		if warmPrefixes > 0 && s.FreePrefixes-prefixes < warmPrefixes {
			continue // the other ENIs' free prefixes would not cover WARM_PREFIX_TARGET
		}
		c := *e
		return &c
	}
	return nil
}

// freeableENIExists says whether some secondary ENI (not a trunk, not
// EFA) has no pod: the VPC CNI's CheckFreeableENIexists.
func (d *DataStore) freeableENIExists() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range d.enis {
		if e.IsPrimary || e.IsTrunk || e.IsEFA {
			continue
		}
		pods := 0
		for _, c := range e.AvailableIPv4Cidrs {
			pods += c.assignedCount()
		}
		if pods == 0 {
			return true
		}
	}
	return false
}

// ENICount is how many ENIs the datastore holds.
func (d *DataStore) ENICount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.enis)
}

// cidrCount counts an ENI's CIDRs of the active mode.
func (d *DataStore) cidrCount(id string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	if e, ok := d.enis[id]; ok {
		for _, c := range e.AvailableIPv4Cidrs {
			if d.activeCidr(c) {
				n++
			}
		}
	}
	return n
}

// forceDelCIDR removes a CIDR even if pods hold addresses in it (EC2 took
// it away); the checkpoint is rewritten.
func (d *DataStore) forceDelCIDR(eniID string, p netip.Prefix) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.enis[eniID]; ok {
		delete(e.AvailableIPv4Cidrs, p.String())
		_ = d.save()
	}
}

// forceDelENI removes an ENI and everything on it; it returns how many
// assigned addresses went with it.
func (d *DataStore) forceDelENI(id string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.enis[id]
	if !ok {
		return 0
	}
	n := 0
	for _, c := range e.AvailableIPv4Cidrs {
		n += c.assignedCount()
	}
	delete(d.enis, id)
	_ = d.save()
	return n
}
