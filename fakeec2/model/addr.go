package model

import (
	"math/bits"
	"net/netip"
)

// addrPool tracks which IPv4 addresses of one subnet are in use. AWS
// reserves the first four addresses and the last one of every subnet; they
// are marked used from the start and never handed out or freed.
type addrPool struct {
	base  netip.Addr
	size  int // number of addresses in the CIDR
	words []uint64
	free  int
}

const reservedPerSubnet = 5

func newAddrPool(cidr netip.Prefix) *addrPool {
	size := 1 << (32 - cidr.Bits())
	p := &addrPool{base: cidr.Masked().Addr(), size: size, words: make([]uint64, (size+63)/64), free: size}
	for _, i := range []int{0, 1, 2, 3, size - 1} {
		p.set(i)
	}
	return p
}

func (p *addrPool) isSet(i int) bool { return p.words[i/64]&(1<<(i%64)) != 0 }
func (p *addrPool) set(i int)        { p.words[i/64] |= 1 << (i % 64); p.free-- }
func (p *addrPool) clear(i int)      { p.words[i/64] &^= 1 << (i % 64); p.free++ }

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

// take allocates n addresses, lowest first, or none if fewer are free.
func (p *addrPool) take(n int) ([]netip.Addr, bool) {
	if n > p.free {
		return nil, false
	}
	out := make([]netip.Addr, 0, n)
	for w := 0; w < len(p.words) && len(out) < n; w++ {
		for p.words[w] != ^uint64(0) && len(out) < n {
			i := w*64 + bits.TrailingZeros64(^p.words[w])
			if i >= p.size {
				break
			}
			p.set(i)
			out = append(out, p.addr(i))
		}
	}
	return out, true
}

// takePrefixes allocates n free, aligned /28 blocks (16 addresses each),
// lowest first, or none if fewer exist.
func (p *addrPool) takePrefixes(n int) ([]netip.Prefix, bool) {
	var blocks []int
	for b := 0; b+16 <= p.size && len(blocks) < n; b += 16 {
		if p.words[b/64]>>(b%64)&0xffff == 0 {
			blocks = append(blocks, b)
		}
	}
	if len(blocks) < n {
		return nil, false
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

// freePrefixes counts aligned /28 blocks that are entirely free.
func (p *addrPool) freePrefixes() int {
	n := 0
	for b := 0; b+16 <= p.size; b += 16 {
		if p.words[b/64]>>(b%64)&0xffff == 0 {
			n++
		}
	}
	return n
}

// takeAddr marks one specific address used.
func (p *addrPool) takeAddr(a netip.Addr) { i, _ := p.index(a); p.set(i) }

// inUse reports whether a (inside the subnet) is used or reserved.
func (p *addrPool) inUse(a netip.Addr) bool { i, _ := p.index(a); return p.isSet(i) }

// release frees one address.
func (p *addrPool) release(a netip.Addr) {
	if i, ok := p.index(a); ok && !p.reserved(i) && p.isSet(i) {
		p.clear(i)
	}
}

// prefixFree reports whether every address of the /28 pf is free.
func (p *addrPool) prefixFree(pf netip.Prefix) bool {
	b, ok := p.index(pf.Addr())
	if !ok || b%16 != 0 || b+16 > p.size {
		return false
	}
	return p.words[b/64]>>(b%64)&0xffff == 0
}

func (p *addrPool) takePrefix(pf netip.Prefix) {
	b, _ := p.index(pf.Addr())
	for i := b; i < b+16; i++ {
		p.set(i)
	}
}

func (p *addrPool) releasePrefix(pf netip.Prefix) {
	b, ok := p.index(pf.Addr())
	if !ok {
		return
	}
	for i := b; i < b+16; i++ {
		if p.isSet(i) {
			p.clear(i)
		}
	}
}

// available is the subnet's availableIpAddressCount.
func (p *addrPool) available() int { return p.free }

// usedCount is the number of non-reserved addresses in use.
func (p *addrPool) usedCount() int { return p.size - p.free - reservedPerSubnet }
