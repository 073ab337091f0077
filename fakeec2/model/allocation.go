package model

import (
	"fmt"
	"time"
)

// Address allocation policies: how a region picks the addresses and
// prefixes a caller did not name.
const (
	// AllocRandom picks uniformly among the free addresses (or aligned /28
	// blocks) from the subnet's own seeded source, so runs with the same
	// seed and the same calls are reproducible. It is the default: EC2's
	// choices look random and it does not hand a just-released address
	// straight back, which a lowest-free fake would, hiding reuse bugs.
	AllocRandom = "random"
	// AllocLowest picks the lowest free address (or block): predictable
	// addresses for tests that want them.
	AllocLowest = "lowest"
)

// DefaultAvoidRecent is how long, under AllocRandom, a released address or
// prefix is handed out again only when nothing else is free.
const DefaultAvoidRecent = 60 * time.Second

// Allocation is a region's address allocation policy as configs and the
// control API write it.
type Allocation struct {
	// Policy is AllocRandom (the default when empty) or AllocLowest.
	Policy string `json:"policy" yaml:"policy"`
	// AvoidRecent applies under AllocRandom: an address or /28 prefix
	// released less than this long ago is chosen only when nothing else is
	// free. Unset means DefaultAvoidRecent; "0s" turns it off.
	AvoidRecent *Duration `json:"avoidRecent,omitempty" yaml:"avoidRecent"`
}

// Check reports a policy this region cannot follow, naming the field.
func (a Allocation) Check() error {
	switch a.Policy {
	case "", AllocRandom, AllocLowest:
	default:
		return fmt.Errorf("allocation.policy %q: want %q or %q", a.Policy, AllocRandom, AllocLowest)
	}
	if a.AvoidRecent != nil && *a.AvoidRecent < 0 {
		return fmt.Errorf("allocation.avoidRecent %s: must not be negative", time.Duration(*a.AvoidRecent))
	}
	return nil
}

// withDefaults fills the policy and window an empty field stands for.
func (a Allocation) withDefaults() Allocation {
	if a.Policy == "" {
		a.Policy = AllocRandom
	}
	if a.AvoidRecent == nil {
		d := Duration(DefaultAvoidRecent)
		a.AvoidRecent = &d
	}
	return a
}

// SetAllocation changes the region's allocation policy at run time; it
// applies to the next allocation. Releases are always recorded, so turning
// AllocRandom on avoids addresses released before the change too.
func (r *Region) SetAllocation(a Allocation) error {
	if err := a.Check(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opts.Allocation = a.withDefaults()
	return nil
}

// Allocation returns the region's allocation policy with defaults filled.
func (r *Region) Allocation() Allocation {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.opts.Allocation
	if a.AvoidRecent != nil {
		d := *a.AvoidRecent
		a.AvoidRecent = &d
	}
	return a
}

// pick is how the next allocation chooses (r.mu held).
func (r *Region) pick() pick {
	a := r.opts.Allocation
	return pick{random: a.Policy == AllocRandom, now: r.opts.Now(), avoid: time.Duration(*a.AvoidRecent)}
}
