package fabric

// Security groups on real packets.
//
// Every VPC router holds one nftables table, "vpclab" (family ip), with a
// base chain on the forward hook:
//
//	iifname vmap @src        # source check: the sender owns the source
//	ct state established,related accept
//	iifname vmap @out        # the sending ENI's egress chain
//	oifname vmap @in         # the receiving ENI's ingress chain
//
// The source/destination check is here too, per packet and before
// conntrack: a packet from an ENI with the check on whose source address
// is not one of the ENI's own (set "own-<link>") is dropped.
//
// Each ENI link in the router (primary, secondary, trunk, and each branch
// ENI's VLAN link) has an "out-<link>" and an "in-<link>" chain: the union
// of its groups' rules, each returning when it matches, then a counted
// drop. A rule naming a group matches the addresses (private IPs and
// delegated prefixes) of the ENIs in that group, kept in an interval set
// "g-<group id>" — EC2 matches a referenced group by its members' private
// addresses, and a set turns a membership change into an element update.
//
// Why nftables, through netlink (google/nftables): the router already sees
// every packet between ENIs with its in- and out-link, so one table there
// enforces both directions without touching the instances; conntrack makes
// it stateful the way EC2 is (replies to an allowed flow pass; removing a
// rule does not cut a tracked flow, because established traffic is
// accepted before any rule is looked at); and a netlink batch is one
// atomic kernel transaction of well under a millisecond, with no nft binary
// and no half-applied state. Traffic the router itself answers (IMDS, the
// EC2 endpoint) takes the input hook and is never filtered, and traffic
// inside an instance never reaches the router — both as on EC2.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpclab/vpclab/fakeec2/model"
)

// FilterTable is the nftables table (family ip) holding a VPC router's
// security groups.
const FilterTable = "vpclab"

// allow is one security group rule as the filter renders it.
type allow struct {
	proto    int          // IP protocol number; -1 any
	from, to int          // port range, or ICMP type and code; -1 any
	cidr     netip.Prefix // the peer, or
	set      string       // a set of peer addresses: a group's members, or an ENI's own
}

func (a allow) String() string {
	return fmt.Sprintf("%d/%d-%d/%v/%s", a.proto, a.from, a.to, a.cidr, a.set)
}

// allowOf translates a rule; ok is false for rules that cannot match on the
// fabric (IPv6 peers or ICMPv6: the fabric carries IPv4 only).
func allowOf(r model.SGRule) (allow, bool) {
	a := allow{proto: -1, from: -1, to: -1}
	if r.RefGroupID != "" {
		a.set = groupSet(r.RefGroupID)
	}
	switch r.Protocol {
	case "-1":
	case "tcp":
		a.proto, a.from, a.to = 6, r.FromPort, r.ToPort
	case "udp":
		a.proto, a.from, a.to = 17, r.FromPort, r.ToPort
	case "icmp":
		a.proto, a.from, a.to = 1, r.FromPort, r.ToPort
	case "icmpv6":
		return a, false
	default:
		if _, err := fmt.Sscan(r.Protocol, &a.proto); err != nil {
			return a, false
		}
	}
	if a.set == "" {
		if !r.CIDR.Addr().Is4() {
			return a, false
		}
		a.cidr = r.CIDR.Masked()
	}
	return a, true
}

// filterPlan is the filter one router should have.
type filterPlan struct {
	chains map[string][]allow  // chain name -> allow rules
	in     map[string]string   // router link -> ingress chain
	out    map[string]string   // router link -> egress chain
	src    map[string]string   // router link -> source check chain
	sets   map[string][]ipSpan // set name -> member addresses
}

// ipSpan is an inclusive range of IPv4 addresses.
type ipSpan struct{ first, last netip.Addr }

func groupSet(id string) string { return "g-" + id }

// ownSet names the set of an ENI's own addresses (source check).
func ownSet(link string) string { return "own-" + link }

// filterMember is one ENI link in a router with what the filter needs.
type filterMember struct {
	link     string
	groups   []string
	addrs    []netip.Addr
	prefixes []netip.Prefix
	sdc      bool // source/destination check on
}

// spans are the member's own IPv4 addresses and prefixes.
func (m filterMember) spans() []ipSpan {
	var s []ipSpan
	for _, a := range m.addrs {
		if a.Is4() {
			s = append(s, ipSpan{a, a})
		}
	}
	for _, x := range m.prefixes {
		if x.Addr().Is4() {
			s = append(s, ipSpan{x.Masked().Addr(), lastAddr(x)})
		}
	}
	return s
}

func (f *Fabric) filterMembers(vpcID string) []filterMember {
	var ms []filterMember
	for _, l := range f.enis {
		if l.vpcID == vpcID {
			ms = append(ms, filterMember{l.routerName, l.groups, l.addrs, l.prefixes, l.sdc == nil || *l.sdc})
		}
	}
	for _, b := range f.branches {
		if t, ok := f.enis[b.trunkID]; ok && t.vpcID == vpcID {
			ms = append(ms, filterMember{b.routerName, b.groups, b.addrs, nil, b.sdc == nil || *b.sdc})
		}
	}
	return ms
}

// planFilter computes a router's filter from the fabric's books; f.mu is
// held.
func (f *Fabric) planFilter(vpcID string) filterPlan {
	p := filterPlan{chains: map[string][]allow{}, in: map[string]string{}, out: map[string]string{}, src: map[string]string{}, sets: map[string][]ipSpan{}}
	ms := f.filterMembers(vpcID)
	refs := map[string]bool{}
	for _, m := range ms {
		for _, egress := range []bool{false, true} {
			chain, dir := "in-"+m.link, p.in
			if egress {
				chain, dir = "out-"+m.link, p.out
			}
			rules := f.allowsOf(m.groups, egress)
			for _, a := range rules {
				if a.set != "" {
					refs[a.set] = true
				}
			}
			p.chains[chain], dir[m.link] = rules, chain
		}
		if m.sdc {
			chain := "src-" + m.link
			p.chains[chain], p.src[m.link] = []allow{{proto: -1, from: -1, to: -1, set: ownSet(m.link)}}, chain
			p.sets[ownSet(m.link)] = mergeSpans(m.spans())
		}
	}
	for name := range refs {
		g := strings.TrimPrefix(name, "g-")
		var spans []ipSpan
		for _, m := range ms {
			if slices.Contains(m.groups, g) {
				spans = append(spans, m.spans()...)
			}
		}
		p.sets[name] = mergeSpans(spans)
	}
	return p
}

// allowsOf is the union of the groups' rules in one direction, in order,
// without repeats.
func (f *Fabric) allowsOf(groups []string, egress bool) []allow {
	var out []allow
	seen := map[allow]bool{}
	for _, id := range groups {
		for _, r := range f.groups[id].Rules {
			if r.Egress != egress {
				continue
			}
			if a, ok := allowOf(r); ok && !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	return out
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(b[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// mergeSpans sorts spans and joins overlapping and adjacent ones, so the
// interval set never holds two touching elements.
func mergeSpans(s []ipSpan) []ipSpan {
	slices.SortFunc(s, func(a, b ipSpan) int { return a.first.Compare(b.first) })
	var out []ipSpan
	for _, x := range s {
		if n := len(out); n > 0 {
			last := &out[n-1]
			if next := last.last.Next(); x.first.Compare(next) <= 0 || !next.IsValid() {
				if x.last.Compare(last.last) > 0 {
					last.last = x.last
				}
				continue
			}
		}
		out = append(out, x)
	}
	return out
}

// filterState is what a router's table holds, as last committed.
type filterState struct {
	table   *nftables.Table
	inMap   *nftables.Set
	outMap  *nftables.Set
	srcMap  *nftables.Set
	chains  map[string]string // chain -> signature of its rules
	in, out map[string]string // link -> chain
	src     map[string]string // link -> source check chain
	sets    map[string]*nftables.Set
	setSig  map[string]string
}

func spansSig(s []ipSpan) string {
	var b strings.Builder
	for _, x := range s {
		fmt.Fprintf(&b, "%s-%s,", x.first, x.last)
	}
	return b.String()
}

func allowsSig(rules []allow) string {
	var b strings.Builder
	for _, a := range rules {
		b.WriteString(a.String())
		b.WriteByte(';')
	}
	return b.String()
}

// syncFilters brings every router's table to its plan; f.mu is held.
func (f *Fabric) syncFilters() error {
	if f.cfg.Unfiltered {
		return nil
	}
	var errs []error
	for _, r := range f.routers {
		if r.h.Handle == nil {
			continue
		}
		if err := f.renderFilter(r, f.planFilter(r.vpcID)); err != nil {
			errs = append(errs, fmt.Errorf("router %s: security groups: %w", r.vpcID, err))
		}
	}
	return errors.Join(errs...)
}

// renderFilter commits the difference between a router's table and plan
// as one nftables transaction. After a failure the table is rebuilt whole
// on the next call.
func (f *Fabric) renderFilter(r *router, p filterPlan) error {
	c, err := r.filterConn()
	if err != nil {
		return err
	}
	st := r.filter
	changed := false
	if st == nil {
		st = newFilterTable(c)
		changed = true
	}
	var oldSets []string
	for name := range st.sets {
		if _, ok := p.sets[name]; !ok {
			oldSets = append(oldSets, name)
		}
	}
	sets, err := st.queueSets(c, p)
	if err != nil {
		return r.dropFilter(err)
	}
	chains := st.queueChains(c, p)
	maps, err := st.queueMaps(c, p)
	if err != nil {
		return r.dropFilter(err)
	}
	// Removals last: no map element or rule may name what goes.
	for name := range st.chains {
		if _, ok := p.chains[name]; !ok {
			ch := &nftables.Chain{Name: name, Table: st.table}
			c.FlushChain(ch)
			c.DelChain(ch)
			delete(st.chains, name)
			changed = true
		}
	}
	for _, name := range oldSets {
		c.DelSet(st.sets[name])
		delete(st.sets, name)
		delete(st.setSig, name)
		changed = true
	}
	if !changed && !sets && !chains && !maps {
		return nil
	}
	if err := c.Flush(); err != nil {
		return r.dropFilter(fmt.Errorf("commit table %s: %w", FilterTable, err))
	}
	r.filter = st
	return nil
}

// filterConn returns the router's lasting nftables socket, opening it.
func (r *router) filterConn() (*nftables.Conn, error) {
	if r.nft == nil {
		// A lasting socket: closing one after a commit that deleted rules
		// waits for the kernel to free them (~14 ms here), reusing it does
		// not (~0.3 ms a commit).
		c, err := nftables.New(nftables.WithNetNSFd(int(r.ns.Fd())), nftables.AsLasting(), nftables.WithSockOptions(bigReadBuffer))
		if err != nil {
			return nil, fmt.Errorf("nftables socket: %w", err)
		}
		r.nft = c
	}
	return r.nft, nil
}

// queueSets queues the sets the plan adds or changes; it reports whether
// it queued anything.
func (st *filterState) queueSets(c *nftables.Conn, p filterPlan) (bool, error) {
	changed := false
	for name, spans := range p.sets {
		sig := spansSig(spans)
		if s, ok := st.sets[name]; ok {
			if st.setSig[name] == sig {
				continue
			}
			c.FlushSet(s)
			if err := c.SetAddElements(s, spanElements(spans)); err != nil {
				return false, err
			}
		} else {
			s := &nftables.Set{Table: st.table, Name: name, KeyType: nftables.TypeIPAddr, Interval: true, ID: newSetID()}
			if err := c.AddSet(s, spanElements(spans)); err != nil {
				return false, err
			}
			st.sets[name] = s
		}
		st.setSig[name], changed = sig, true
	}
	return changed, nil
}

// queueChains queues the chains the plan adds or changes (rules, then the
// counted drop); it reports whether it queued anything.
func (st *filterState) queueChains(c *nftables.Conn, p filterPlan) bool {
	changed := false
	for name, rules := range p.chains {
		sig := allowsSig(rules)
		old, ok := st.chains[name]
		if ok && old == sig {
			continue
		}
		ch := &nftables.Chain{Name: name, Table: st.table}
		if ok {
			c.FlushChain(ch)
		} else {
			c.AddChain(ch)
		}
		egress := strings.HasPrefix(name, "out-") // src- chains match the source, as ingress ones do
		for _, a := range rules {
			c.AddRule(&nftables.Rule{Table: st.table, Chain: ch, Exprs: a.exprs(egress, st.sets)})
		}
		c.AddRule(&nftables.Rule{Table: st.table, Chain: ch, Exprs: []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}})
		st.chains[name], changed = sig, true
	}
	return changed
}

// queueMaps queues the verdict-map elements that send each link to its
// chains; it reports whether it queued anything.
func (st *filterState) queueMaps(c *nftables.Conn, p filterPlan) (bool, error) {
	changed := false
	for _, m := range []struct {
		set        *nftables.Set
		have, want map[string]string
	}{{st.inMap, st.in, p.in}, {st.outMap, st.out, p.out}, {st.srcMap, st.src, p.src}} {
		var del, add []nftables.SetElement
		for link, chain := range m.have {
			if m.want[link] != chain {
				del = append(del, nftables.SetElement{Key: ifname(link)})
				delete(m.have, link)
			}
		}
		for link, chain := range m.want {
			if _, ok := m.have[link]; !ok {
				add = append(add, nftables.SetElement{Key: ifname(link), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: chain}})
				m.have[link] = chain
			}
		}
		if len(del) > 0 {
			if err := c.SetDeleteElements(m.set, del); err != nil {
				return false, err
			}
		}
		if len(add) > 0 {
			if err := c.SetAddElements(m.set, add); err != nil {
				return false, err
			}
		}
		changed = changed || len(del)+len(add) > 0
	}
	return changed, nil
}

// bigReadBuffer lets a socket take the acknowledgements of a large batch
// (one per message: a whole table for a big lab), which overflow the
// default buffer (ENOBUFS).
func bigReadBuffer(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20)
	}); err != nil {
		return err
	}
	return serr
}

// dropFilter forgets the table's state and the socket (with whatever it
// had queued), so the next render rebuilds the table whole.
func (r *router) dropFilter(err error) error {
	r.filter = nil
	if r.nft != nil {
		_ = r.nft.CloseLasting()
		r.nft = nil
	}
	return err
}

// newFilterTable queues a fresh table (replacing any left by an earlier
// fabric) with its base chain and verdict maps.
func newFilterTable(c *nftables.Conn) *filterState {
	t := &nftables.Table{Name: FilterTable, Family: nftables.TableFamilyIPv4}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	st := &filterState{table: t, chains: map[string]string{}, in: map[string]string{}, out: map[string]string{}, src: map[string]string{},
		sets: map[string]*nftables.Set{}, setSig: map[string]string{}}
	st.inMap = &nftables.Set{Table: t, Name: "in", IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict, ID: newSetID()}
	st.outMap = &nftables.Set{Table: t, Name: "out", IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict, ID: newSetID()}
	st.srcMap = &nftables.Set{Table: t, Name: "src", IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict, ID: newSetID()}
	// Errors here are only for anonymous sets.
	_ = c.AddSet(st.inMap, nil)
	_ = c.AddSet(st.outMap, nil)
	_ = c.AddSet(st.srcMap, nil)
	accept := nftables.ChainPolicyAccept
	base := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	zero := []byte{0, 0, 0, 0}
	// The source check first: it is per packet, tracked flow or not.
	c.AddRule(&nftables.Rule{Table: t, Chain: base, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: st.srcMap.Name, SetID: st.srcMap.ID, IsDestRegSet: true, DestRegister: 0},
	}})
	c.AddRule(&nftables.Rule{Table: t, Chain: base, Exprs: []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: zero},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: zero},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	for _, m := range []struct {
		key expr.MetaKey
		set *nftables.Set
	}{{expr.MetaKeyIIFNAME, st.outMap}, {expr.MetaKeyOIFNAME, st.inMap}} {
		c.AddRule(&nftables.Rule{Table: t, Chain: base, Exprs: []expr.Any{
			&expr.Meta{Key: m.key, Register: 1},
			&expr.Lookup{SourceRegister: 1, SetName: m.set.Name, SetID: m.set.ID, IsDestRegSet: true, DestRegister: 0},
		}})
	}
	return st
}

// exprs renders one allow rule: its matches, then return (the packet goes
// on to the other ENI's chain). In an ingress chain the peer is the
// source, in an egress chain the destination.
func (a allow) exprs(egress bool, sets map[string]*nftables.Set) []expr.Any {
	var x []expr.Any
	load := func(base expr.PayloadBase, off, n uint32) {
		x = append(x, &expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: n})
	}
	eq := func(b []byte) { x = append(x, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b}) }
	if a.proto >= 0 {
		x = append(x, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1})
		eq([]byte{byte(a.proto)})
	}
	switch a.proto {
	case 6, 17:
		switch {
		case a.from <= 0 && (a.to < 0 || a.to >= 65535):
		case a.from == a.to:
			load(expr.PayloadBaseTransportHeader, 2, 2)
			eq(binaryutil.BigEndian.PutUint16(uint16(a.from)))
		default:
			load(expr.PayloadBaseTransportHeader, 2, 2)
			x = append(x, &expr.Range{Op: expr.CmpOpEq, Register: 1,
				FromData: binaryutil.BigEndian.PutUint16(uint16(a.from)), ToData: binaryutil.BigEndian.PutUint16(uint16(a.to))})
		}
	case 1:
		if a.from >= 0 {
			load(expr.PayloadBaseTransportHeader, 0, 1)
			eq([]byte{byte(a.from)})
		}
		if a.to >= 0 {
			load(expr.PayloadBaseTransportHeader, 1, 1)
			eq([]byte{byte(a.to)})
		}
	}
	off := uint32(12) // ip saddr
	if egress {
		off = 16 // ip daddr
	}
	switch {
	case a.set != "":
		s := sets[a.set]
		load(expr.PayloadBaseNetworkHeader, off, 4)
		x = append(x, &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID})
	case a.cidr.Bits() > 0:
		load(expr.PayloadBaseNetworkHeader, off, 4)
		if a.cidr.Bits() < 32 {
			x = append(x, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: netmask(a.cidr.Bits()), Xor: []byte{0, 0, 0, 0}})
		}
		eq(a.cidr.Addr().AsSlice())
	}
	return append(x, &expr.Verdict{Kind: expr.VerdictReturn})
}

func netmask(bits int) []byte {
	m := make([]byte, 4)
	binary.BigEndian.PutUint32(m, ^uint32(0)<<(32-bits))
	return m
}

// spanElements are an interval set's elements: each span's first address,
// and the address after its last as an interval end.
func spanElements(s []ipSpan) []nftables.SetElement {
	var out []nftables.SetElement
	for _, x := range s {
		out = append(out, nftables.SetElement{Key: x.first.AsSlice()})
		if end := x.last.Next(); end.IsValid() {
			out = append(out, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// ifname is an interface name as nftables keys it: 16 bytes, NUL padded.
func ifname(n string) []byte {
	b := make([]byte, 16)
	copy(b, n)
	return b
}

// Drops counts the packets an ENI's security groups (and its source
// check) have dropped since its rules last changed (a change re-renders
// its chains, counters included).
type Drops struct {
	// Inbound: no ingress rule of the ENI's groups admitted them.
	Inbound uint64 `json:"inbound"`
	// Outbound: no egress rule admitted them.
	Outbound uint64 `json:"outbound"`
	// Source: their source address is not the ENI's (source/destination
	// check on).
	Source uint64 `json:"source"`
}

// Drops reads every filtered ENI's drop counters, by ENI id (branch ENIs
// included).
func (f *Fabric) Drops() (map[string]Drops, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]Drops{}
	if f.cfg.Unfiltered {
		return out, nil
	}
	links := map[string]string{} // router link -> ENI id
	for id, l := range f.enis {
		links[l.routerName] = id
	}
	for id, b := range f.branches {
		links[b.routerName] = id
	}
	for _, r := range f.routers {
		if r.filter == nil || r.nft == nil {
			continue
		}
		for chain := range r.filter.chains {
			kind, link, _ := strings.Cut(chain, "-")
			id, ok := links[link]
			if !ok {
				continue
			}
			rules, err := r.nft.GetRules(r.filter.table, &nftables.Chain{Name: chain, Table: r.filter.table})
			if err != nil {
				return nil, fmt.Errorf("router %s: chain %s: %w", r.vpcID, chain, err)
			}
			var n uint64
			if len(rules) > 0 {
				for _, e := range rules[len(rules)-1].Exprs {
					if c, ok := e.(*expr.Counter); ok {
						n = c.Packets
					}
				}
			}
			d := out[id]
			switch kind {
			case "in":
				d.Inbound = n
			case "out":
				d.Outbound = n
			case "src":
				d.Source = n
			}
			out[id] = d
		}
	}
	return out, nil
}

// setIDs numbers the sets fabrics add: google/nftables numbers a set
// without an ID from a package counter it increments under the
// connection's lock only, so two fabrics in one process (parallel labs)
// race on it. Ours is atomic; IDs only need to be unique within a batch.
var setIDs atomic.Uint32

func newSetID() uint32 { return setIDs.Add(1) }
