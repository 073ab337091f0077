package model

import (
	"net/netip"
	"testing"
	"time"
)

// TestAddrPool pins the pool: 5 reserved addresses, lowest-free order,
// and a used address poisoning its aligned /28.
func TestAddrPool(t *testing.T) {
	p := newAddrPool(netip.MustParsePrefix("10.0.0.0/28"), 1, "subnet-a")
	if p.available() != 11 || p.freePrefixes() != 0 {
		t.Fatalf("fresh /28: %d free, %d prefixes", p.available(), p.freePrefixes())
	}
	got, ok := p.take(11, pick{})
	if !ok || got[0] != netip.MustParseAddr("10.0.0.4") || got[10] != netip.MustParseAddr("10.0.0.14") {
		t.Fatalf("take 11: %v %v", got, ok)
	}
	if _, ok := p.take(1, pick{}); ok || p.available() != 0 {
		t.Fatal("took from an empty pool")
	}
	p.release(netip.MustParseAddr("10.0.0.0"), time.Time{}) // reserved: no effect
	if p.available() != 0 {
		t.Fatal("released a reserved address")
	}
	q := newAddrPool(netip.MustParsePrefix("10.0.0.0/24"), 1, "subnet-b")
	if q.freePrefixes() != 14 {
		t.Fatalf("/24 has %d free prefixes, want 14", q.freePrefixes())
	}
	q.takeAddr(netip.MustParseAddr("10.0.0.20"))
	if q.freePrefixes() != 13 {
		t.Fatal("one address did not poison its /28")
	}
}
