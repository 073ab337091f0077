package model

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// idGen makes EC2-style resource ids and MAC addresses from a seeded source,
// so a run with the same seed and the same calls yields the same ids.
type idGen struct {
	rng  *rand.Rand
	used map[string]bool
}

func newIDGen(seed uint64) *idGen {
	return &idGen{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), used: map[string]bool{}}
}

// next returns a fresh id such as "eni-0a1b2c3d4e5f60718" (17 hex digits,
// the format EC2 has used since 2018).
func (g *idGen) next(prefix string) string {
	for {
		id := fmt.Sprintf("%s-0%016x", prefix, g.rng.Uint64())[:len(prefix)+18]
		if !g.used[id] {
			g.used[id] = true
			return id
		}
	}
}

// mac returns a fresh locally administered unicast MAC address.
func (g *idGen) mac() string {
	for {
		b := [6]byte{}
		v := g.rng.Uint64()
		for i := range b {
			b[i] = byte(v >> (8 * i))
		}
		b[0] = b[0]&0xfc | 0x02
		m := fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5])
		if !g.used[m] {
			g.used[m] = true
			return m
		}
	}
}

func (g *idGen) float() float64 { return g.rng.Float64() }

// IDKind describes one kind of resource id and the error codes EC2 uses for
// malformed and unknown ids of that kind.
type IDKind struct {
	prefix    string
	malformed string
	what      string
}

// The id kinds of the region's resources.
var (
	KindENI        = IDKind{"eni", "InvalidNetworkInterfaceId.Malformed", "network interface"}
	KindInstance   = IDKind{"i", "InvalidInstanceID.Malformed", "instance"}
	KindSubnet     = IDKind{"subnet", "InvalidSubnetID.Malformed", "subnet"}
	KindVPC        = IDKind{"vpc", "InvalidVpcID.Malformed", "vpc"}
	KindGroup      = IDKind{"sg", "InvalidGroupId.Malformed", "security group"}
	KindAttachment = IDKind{"eni-attach", "InvalidNetworkInterfaceAttachmentId.Malformed", "attachment"}
	KindTrunkAssoc = IDKind{"trunk-assoc", "InvalidAssociationID.Malformed", "association"}
)

// validID reports whether id has the shape prefix-<8 or 17 hex digits>.
func validID(prefix, id string) bool {
	rest, ok := strings.CutPrefix(id, prefix+"-")
	if !ok || (len(rest) != 8 && len(rest) != 17) {
		return false
	}
	for _, c := range rest {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// CheckID returns EC2's Malformed error if id is not a well-formed id of kind k.
func CheckID(k IDKind, id string) *APIError {
	if id == "" {
		return nil
	}
	if !validID(k.prefix, id) {
		return Errorf(k.malformed, "Invalid id: \"%s\" (expecting \"%s-...\")", id, k.prefix)
	}
	return nil
}
