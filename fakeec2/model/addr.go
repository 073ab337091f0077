package model

import (
	"fmt"
	"hash/fnv"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"time"
)

// addrPool tracks which IPv4 addresses of one subnet are in use. AWS
// reserves the first four addresses and the last one of every subnet; they
// are marked used from the start and never handed out or freed.
//
// It also remembers what was released recently, so the random policy can
// avoid handing a just-released address straight back (EC2 does not reuse
// a freed address preferentially; a fake that does hides reuse bugs).
type addrPool struct {
	base  netip.Addr
	size  int // number of addresses in the CIDR
	words []uint64
	free  int

	rng      *rand.Rand        // the subnet's own source: one subnet's picks depend only on its own calls
	recent   []uint64          // free addresses released within the avoid-recent window
	recentAt map[int]time.Time // index -> when it was released (entries mirror the recent bits)
	recentQ  []recentMark      // releases in time order; stale entries are skipped
}

type recentMark struct {
	i  int
	at time.Time
}

// pick says how one allocation chooses among free addresses.
type pick struct {
	random bool          // random among the free ones; otherwise lowest first
	now    time.Time     // the allocation's time, for the avoid-recent window
	avoid  time.Duration // under random: released less than this long ago only as a last resort
}

const reservedPerSubnet = 5

// newAddrPool returns the pool of cidr; seed and id seed its random source.
func newAddrPool(cidr netip.Prefix, seed uint64, id string) *addrPool {
	size := 1 << (32 - cidr.Bits())
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	p := &addrPool{base: cidr.Masked().Addr(), size: size, words: make([]uint64, (size+63)/64), free: size,
		rng: rand.New(rand.NewPCG(seed, h.Sum64())), recent: make([]uint64, (size+63)/64), recentAt: map[int]time.Time{}}
	for _, i := range []int{0, 1, 2, 3, size - 1} {
		p.set(i)
	}
	return p
}

func (p *addrPool) isSet(i int) bool { return p.words[i/64]&(1<<(i%64)) != 0 }
func (p *addrPool) set(i int) {
	p.words[i/64] |= 1 << (i % 64)
	p.free--
	p.forget(i)
}
func (p *addrPool) clear(i int) { p.words[i/64] &^= 1 << (i % 64); p.free++ }

func (p *addrPool) index(a netip.Addr) (int, bool) {
	if !a.Is4() {
		return 0, false
	}
	b, x := p.base.As4(), a.As4()
	d := int(uint32(x[0])<<24|uint32(x[1])<<16|uint32(x[2])<<8|uint32(x[3])) -
		int(uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8|uint32(b[3]))
	return d, d >= 0 && d < p.size
}

func (p *addrPool) addr(i int) netip.Addr {
	b := p.base.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) + uint32(i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// reserved reports whether i is one of the five addresses AWS keeps.
func (p *addrPool) reserved(i int) bool { return i < 4 || i == p.size-1 }

// valid masks the bits of word w that are inside the subnet (a subnet
// smaller than /26 leaves the top of its only word unused).
func (p *addrPool) valid(w int) uint64 {
	if rest := p.size - w*64; rest < 64 {
		return 1<<rest - 1
	}
	return ^uint64(0)
}

// remember marks i released at at; forget drops the mark (i was taken).
func (p *addrPool) remember(i int, at time.Time) {
	p.recent[i/64] |= 1 << (i % 64)
	p.recentAt[i] = at
	p.recentQ = append(p.recentQ, recentMark{i, at})
}

func (p *addrPool) forget(i int) {
	if _, ok := p.recentAt[i]; ok {
		delete(p.recentAt, i)
		p.recent[i/64] &^= 1 << (i % 64)
	}
}

// expire forgets releases older than the window ending at now.
func (p *addrPool) expire(now time.Time, avoid time.Duration) {
	k := 0
	for ; k < len(p.recentQ); k++ {
		m := p.recentQ[k]
		if avoid > 0 && now.Sub(m.at) < avoid {
			break
		}
		if at, ok := p.recentAt[m.i]; ok && at.Equal(m.at) {
			p.forget(m.i)
		}
	}
	p.recentQ = p.recentQ[k:]
	if len(p.recentQ) == 0 {
		p.recentQ = nil // let the backing array go after a burst
	}
}

// take allocates n addresses the way how says, or none if fewer are free.
func (p *addrPool) take(n int, how pick) ([]netip.Addr, bool) {
	if n > p.free {
		return nil, false
	}
	if !how.random {
		return p.takeLowest(n), true
	}
	p.expire(how.now, how.avoid)
	out := make([]netip.Addr, 0, n)
	for len(out) < n {
		i, ok := p.randomFree(true)
		if !ok {
			i = p.oldestRecent()
		}
		p.set(i)
		out = append(out, p.addr(i))
	}
	return out, true
}

func (p *addrPool) takeLowest(n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	for w := 0; w < len(p.words) && len(out) < n; w++ {
		for free := ^p.words[w] & p.valid(w); free != 0 && len(out) < n; free &= free - 1 {
			i := w*64 + bits.TrailingZeros64(free)
			p.set(i)
			out = append(out, p.addr(i))
		}
	}
	return out
}

// randomFree picks a free address uniformly, leaving out recently released
// ones when skipRecent; false when there is none.
func (p *addrPool) randomFree(skipRecent bool) (int, bool) {
	elig := func(w int) uint64 {
		e := ^p.words[w] & p.valid(w)
		if skipRecent {
			e &^= p.recent[w]
		}
		return e
	}
	total := 0
	for w := range p.words {
		total += bits.OnesCount64(elig(w))
	}
	if total == 0 {
		return 0, false
	}
	k := p.rng.IntN(total)
	for w := range p.words {
		e := elig(w)
		if c := bits.OnesCount64(e); k >= c {
			k -= c
			continue
		}
		for ; k > 0; k-- {
			e &= e - 1
		}
		return w*64 + bits.TrailingZeros64(e), true
	}
	panic("addrPool: eligible count changed during a pick")
}

// oldestRecent is the free address released longest ago (the caller has
// checked that one exists: every free address is then a recent one).
func (p *addrPool) oldestRecent() int {
	for _, m := range p.recentQ {
		if at, ok := p.recentAt[m.i]; ok && at.Equal(m.at) {
			return m.i
		}
	}
	panic("addrPool: no free address although the free count says so")
}

// takePrefixes allocates n free, aligned /28 blocks (16 addresses each) the
// way how says, or none if fewer exist. Under random, a block holding a
// recently released address is chosen only when no other block is free.
func (p *addrPool) takePrefixes(n int, how pick) ([]netip.Prefix, bool) {
	if how.random {
		p.expire(how.now, how.avoid)
	}
	var fresh, recent []int
	for b := 0; b+16 <= p.size; b += 16 {
		if !p.blockFree(b) {
			continue
		}
		if how.random && p.recent[b/64]>>(b%64)&0xffff != 0 {
			recent = append(recent, b)
			continue
		}
		fresh = append(fresh, b)
		if !how.random && len(fresh) == n {
			break
		}
	}
	if len(fresh)+len(recent) < n {
		return nil, false
	}
	var blocks []int
	if how.random {
		blocks = append(p.sample(fresh, min(n, len(fresh))), p.sample(recent, n-min(n, len(fresh)))...)
	} else {
		blocks = fresh[:n]
	}
	out := make([]netip.Prefix, len(blocks))
	for k, b := range blocks {
		for i := b; i < b+16; i++ {
			p.set(i)
		}
		out[k] = netip.PrefixFrom(p.addr(b), 28)
	}
	return out, true
}

// sample picks n of xs at random (a partial Fisher–Yates shuffle).
func (p *addrPool) sample(xs []int, n int) []int {
	for k := 0; k < n; k++ {
		j := k + p.rng.IntN(len(xs)-k)
		xs[k], xs[j] = xs[j], xs[k]
	}
	return xs[:n]
}

func (p *addrPool) blockFree(b int) bool { return p.words[b/64]>>(b%64)&0xffff == 0 }

// freePrefixes counts aligned /28 blocks that are entirely free.
func (p *addrPool) freePrefixes() int {
	n := 0
	for b := 0; b+16 <= p.size; b += 16 {
		if p.blockFree(b) {
			n++
		}
	}
	return n
}

// takeAddr marks one specific address used.
func (p *addrPool) takeAddr(a netip.Addr) { i, _ := p.index(a); p.set(i) }

// inUse reports whether a (inside the subnet) is used or reserved.
func (p *addrPool) inUse(a netip.Addr) bool { i, _ := p.index(a); return p.isSet(i) }

// release frees one address; a non-zero at records it as released then
// (a rolled-back allocation passes the zero time: nothing was released).
func (p *addrPool) release(a netip.Addr, at time.Time) {
	if i, ok := p.index(a); ok && !p.reserved(i) && p.isSet(i) {
		p.clear(i)
		if !at.IsZero() {
			p.remember(i, at)
		}
	}
}

// prefixFree reports whether every address of the /28 pf is free.
func (p *addrPool) prefixFree(pf netip.Prefix) bool {
	b, ok := p.index(pf.Addr())
	if !ok || b%16 != 0 || b+16 > p.size {
		return false
	}
	return p.blockFree(b)
}

func (p *addrPool) takePrefix(pf netip.Prefix) {
	b, _ := p.index(pf.Addr())
	for i := b; i < b+16; i++ {
		p.set(i)
	}
}

// releasePrefix frees a /28; at is as for release.
func (p *addrPool) releasePrefix(pf netip.Prefix, at time.Time) {
	b, ok := p.index(pf.Addr())
	if !ok {
		return
	}
	for i := b; i < b+16; i++ {
		if p.isSet(i) {
			p.clear(i)
			if !at.IsZero() {
				p.remember(i, at)
			}
		}
	}
}

// check verifies the pool's own bookkeeping: the free count matches the
// bitmap, and only free addresses are marked recently released.
func (p *addrPool) check() error {
	used, recent := 0, 0
	for w := range p.words {
		used += bits.OnesCount64(p.words[w] & p.valid(w))
		recent += bits.OnesCount64(p.recent[w])
		if x := p.words[w] & p.recent[w]; x != 0 {
			return fmt.Errorf("address %s is in use and marked recently released", p.addr(w*64+bits.TrailingZeros64(x)))
		}
	}
	if used != p.size-p.free {
		return fmt.Errorf("free count %d, bitmap says %d", p.free, p.size-used)
	}
	if recent != len(p.recentAt) {
		return fmt.Errorf("%d addresses marked recent, %d release times", recent, len(p.recentAt))
	}
	return nil
}

// available is the subnet's availableIpAddressCount.
func (p *addrPool) available() int { return p.free }

// usedCount is the number of non-reserved addresses in use.
func (p *addrPool) usedCount() int { return p.size - p.free - reservedPerSubnet }
