// Package faults is fakeec2's scripted failures as data: rules matching EC2
// actions by name or glob that answer with an error code, add latency, or
// delay a call's changes in IMDS, within a window, a count or a probability
// rolled from a seeded source.
package faults

import (
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vpclab/vpclab/fakeec2/model"
)

// Rule injects an error and/or latency into matching API calls.
type Rule struct {
	// ID names the rule; assigned when empty.
	ID string `json:"id,omitempty" yaml:"id,omitempty"`
	// Action is an EC2 action name or a glob ("Assign*", "*").
	Action string `json:"action,omitempty" yaml:"action,omitempty"`
	// Match narrows the rule to calls whose request parameters match:
	// Query API name (NetworkInterfaceId, SubnetId, InterfaceType,
	// InstanceId…) -> glob; a name also matches its numbered forms
	// (NetworkInterfaceId matches NetworkInterfaceId.1). Every entry must
	// match.
	Match map[string]string `json:"match,omitempty" yaml:"match,omitempty"`
	// Caller narrows the rule to calls by one principal: a glob matched
	// against the calling instance's id (calls from an instance's address),
	// the caller's ARN and its user name.
	Caller string `json:"caller,omitempty" yaml:"caller,omitempty"`
	// Nth lets the first Nth-1 matching calls through; the rule hits from
	// the Nth on (only the Nth, unless Count says how many).
	Nth int `json:"nth,omitempty" yaml:"nth,omitempty"`
	// Code is the EC2 error code to answer with; empty injects latency only.
	Code string `json:"code,omitempty" yaml:"code,omitempty"`
	// Message overrides the error message.
	Message string `json:"message,omitempty" yaml:"message,omitempty"`
	// Status overrides the HTTP status (default: EC2's status for Code).
	Status int `json:"status,omitempty" yaml:"status,omitempty"`
	// Probability that a matching call is hit; 0 means always.
	Probability float64 `json:"probability,omitempty" yaml:"probability,omitempty"`
	// Count limits how many calls the rule hits; 0 means unlimited.
	Count int `json:"count,omitempty" yaml:"count,omitempty"`
	// After delays the rule's start, relative to when it was added.
	After model.Duration `json:"after,omitempty" yaml:"after,omitempty"`
	// For bounds the rule's active window; 0 means forever.
	For model.Duration `json:"for,omitempty" yaml:"for,omitempty"`
	// Latency is added to every call the rule hits.
	Latency model.Duration `json:"latency,omitempty" yaml:"latency,omitempty"`
	// IMDSLag makes the rule an IMDS rule: it never touches API calls;
	// instead every change made by a matching action (an attach, an
	// assignment…) reaches the affected instance's IMDS this much later
	// than the instance's own lag. Count and Probability apply per change.
	IMDSLag model.Duration `json:"imdsLag,omitempty" yaml:"imdsLag,omitempty"`

	// Hits counts calls the rule has hit (read-only).
	Hits int `json:"hits" yaml:"hits,omitempty"`
	// seen counts the matching calls (for Nth).
	seen int
	// Delayed lists (newest last, at most 20) the changes an imdsLag rule
	// held back: "ACTION ENI on INSTANCE".
	Delayed []string `json:"delayed,omitempty" yaml:"-"`
	// Added is when the rule was installed (read-only).
	Added time.Time `json:"added" yaml:"-"`
}

// Validate checks a rule for nonsense values.
func (f *Rule) Validate() error {
	switch {
	case strings.TrimSpace(f.Action) == "":
		return fmt.Errorf("fault rule %q: needs an action (an EC2 action name, a glob such as Assign*, or * for every action)", f.ID)
	case f.Probability < 0 || f.Probability > 1:
		return fmt.Errorf("fault rule %q: probability %v not in [0,1]", f.ID, f.Probability)
	case f.Count < 0 || f.Nth < 0:
		return fmt.Errorf("fault rule %q: count %d, nth %d: must not be negative", f.ID, f.Count, f.Nth)
	case f.IMDSLag > 0 && (len(f.Match) > 0 || f.Caller != ""):
		return fmt.Errorf("fault rule %q: an imdsLag rule matches changes by action only (no match or caller)", f.ID)
	case f.After < 0 || f.For < 0 || f.Latency < 0 || f.IMDSLag < 0:
		return fmt.Errorf("fault rule %q: durations must not be negative", f.ID)
	case f.IMDSLag > 0 && (f.Code != "" || f.Latency > 0):
		return fmt.Errorf("fault rule %q: imdsLag delays IMDS and cannot be combined with code or latency (use two rules)", f.ID)
	case f.Code == "" && f.Latency == 0 && f.IMDSLag == 0:
		return fmt.Errorf("fault rule %q: needs a code, a latency or an imdsLag", f.ID)
	case f.Status != 0 && (f.Status < 400 || f.Status > 599):
		return fmt.Errorf("fault rule %q: status %d is not an HTTP error status", f.ID, f.Status)
	}
	for _, p := range append([]string{f.Action, f.Caller}, slices.Collect(maps.Values(f.Match))...) {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("fault rule %q: bad pattern %q: %w", f.ID, p, err)
		}
	}
	return nil
}

// String describes the rule in one line.
func (f Rule) String() string {
	var b strings.Builder
	b.WriteString(f.Action)
	for _, k := range slices.Sorted(maps.Keys(f.Match)) {
		fmt.Fprintf(&b, " %s=%s", k, f.Match[k])
	}
	if f.Caller != "" {
		b.WriteString(" by " + f.Caller)
	}
	switch {
	case f.Code != "":
		b.WriteString(" -> " + f.Code)
	case f.IMDSLag > 0:
		b.WriteString(" -> IMDS +" + f.IMDSLag.String())
	}
	if f.Latency > 0 {
		b.WriteString(" +" + f.Latency.String())
	}
	if f.Nth > 0 {
		fmt.Fprintf(&b, " from call #%d", f.Nth)
	}
	if f.Count > 0 {
		fmt.Fprintf(&b, " x%d", f.Count)
	}
	if f.For > 0 {
		b.WriteString(" for " + f.For.String())
	}
	if f.Probability > 0 {
		fmt.Fprintf(&b, " p=%g", f.Probability)
	}
	return b.String()
}

// Call is what rules match an API call on.
type Call struct {
	Action string
	// Params are the request's parameters (Query API names).
	Params url.Values
	// Caller names the principal: the calling instance's id, the ARN, the
	// user name (any that apply).
	Caller []string
}

// matches reports whether the call's parameters and caller satisfy r.
func (r *Rule) matches(c Call) bool {
	if r.Caller != "" && !slices.ContainsFunc(c.Caller, func(n string) bool { ok, _ := path.Match(r.Caller, n); return ok }) {
		return false
	}
	for k, glob := range r.Match {
		hit := false
		for pk, vs := range c.Params {
			if pk != k && !strings.HasPrefix(pk, k+".") {
				continue
			}
			for _, v := range vs {
				if ok, _ := path.Match(glob, v); ok {
					hit = true
				}
			}
		}
		if !hit {
			return false
		}
	}
	return true
}

// Rules holds the fault rules; dice are rolled from a seeded source.
type Rules struct {
	mu    sync.Mutex
	rules []*Rule
	rng   *rand.Rand
	now   func() time.Time
	next  int
}

// New returns an empty rule set.
func New(seed uint64, now func() time.Time) *Rules {
	if now == nil {
		now = time.Now
	}
	return &Rules{rng: rand.New(rand.NewPCG(seed, 0xfa17)), now: now}
}

// Add installs rules, in order after existing ones.
func (f *Rules) Add(rules ...Rule) ([]Rule, error) {
	for i := range rules {
		if err := rules[i].Validate(); err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Rule, 0, len(rules))
	for _, r := range rules {
		r := r
		if r.ID == "" {
			f.next++
			r.ID = fmt.Sprintf("fault-%d", f.next)
		}
		r.Added, r.Hits, r.Delayed, r.seen = f.now(), 0, nil, 0
		f.rules = append(f.rules, &r)
		out = append(out, r)
	}
	return out, nil
}

// Remove deletes one rule; it reports whether it existed.
func (f *Rules) Remove(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, r := range f.rules {
		if r.ID == id {
			f.rules = append(f.rules[:i], f.rules[i+1:]...)
			return true
		}
	}
	return false
}

// Clear deletes every rule.
func (f *Rules) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
}

// List returns the rules with their hit counts.
func (f *Rules) List() []Rule {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Rule, len(f.rules))
	for i, r := range f.rules {
		out[i] = *r
		out[i].Delayed = slices.Clone(r.Delayed)
	}
	return out
}

// hits reports whether rule r applies to action now, rolling its dice and
// counting the hit; callers hold f.mu.
func (f *Rules) hits(r *Rule, c Call, now time.Time) bool {
	if r.Action != "" {
		if ok, _ := path.Match(r.Action, c.Action); !ok {
			return false
		}
	}
	start := r.Added.Add(time.Duration(r.After))
	if now.Before(start) || (r.For > 0 && !now.Before(start.Add(time.Duration(r.For)))) {
		return false
	}
	if !r.matches(c) {
		return false
	}
	r.seen++
	if r.seen < r.Nth {
		return false
	}
	count := r.Count
	if count == 0 && r.Nth > 0 {
		count = 1
	}
	if count > 0 && r.Hits >= count {
		return false
	}
	if r.Probability > 0 && f.rng.Float64() >= r.Probability {
		return false
	}
	r.Hits++
	return true
}

// IMDSLag returns the extra IMDS propagation delay for one change made by
// action (what describes it, e.g. "eni-… on i-…"): the sum of the imdsLag
// of every IMDS rule that hits it, and those rules' ids. Each rule
// remembers what it delayed.
func (f *Rules) IMDSLag(action, what string) (time.Duration, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	var lag time.Duration
	var ids []string
	for _, r := range f.rules {
		if r.IMDSLag > 0 && f.hits(r, Call{Action: action}, now) {
			lag += time.Duration(r.IMDSLag)
			ids = append(ids, r.ID)
			if len(r.Delayed) == maxDelayed {
				r.Delayed = r.Delayed[1:]
			}
			r.Delayed = append(r.Delayed, action+" "+what)
		}
	}
	return lag, ids
}

// maxDelayed bounds a rule's Delayed list (the newest are kept).
const maxDelayed = 20

// Evaluate returns the latency to add and the error to answer for one call.
func (f *Rules) Evaluate(c Call) (time.Duration, *model.APIError) {
	action := c.Action
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	var lat time.Duration
	for _, r := range f.rules {
		if r.IMDSLag > 0 || !f.hits(r, c, now) {
			continue
		}
		lat += time.Duration(r.Latency)
		if r.Code != "" {
			e := model.Errorf(r.Code, "%s", r.Message)
			if r.Message == "" {
				e.Message = defaultFaultMessage(r.Code, action)
			}
			if r.Status != 0 {
				e.Status = r.Status
			}
			return lat, e
		}
	}
	return lat, nil
}

func defaultFaultMessage(code, action string) string {
	switch code {
	case "RequestLimitExceeded":
		return "Request limit exceeded."
	case "InsufficientFreeAddressesInSubnet":
		return "The specified subnet does not have enough free addresses to satisfy the request."
	case "InsufficientCidrBlocks":
		return "The specified subnet does not have enough free cidr blocks to satisfy the request."
	case "InternalError":
		return "An internal error has occurred"
	case "UnauthorizedOperation":
		return "You are not authorized to perform this operation."
	}
	return fmt.Sprintf("Injected fault for %s", action)
}

// Bind declares the rule's fields as flags (vpclab faults add).
func (f *Rule) Bind(fs *flag.FlagSet) {
	fs.StringVar(&f.Action, "action", "", "EC2 action or glob")
	fs.StringVar(&f.Code, "code", "", "EC2 error code")
	fs.IntVar(&f.Count, "count", 0, "hit at most N calls")
	fs.Float64Var(&f.Probability, "probability", 0, "hit probability (0 = always)")
	fs.Var(&f.Latency, "latency", "added latency")
	fs.Var(&f.IMDSLag, "imds-lag", "delay of the call's changes in IMDS")
	fs.Var(&f.For, "for", "active window")
}
