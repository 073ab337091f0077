package scenarios

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/lab"
)

// Expect is a step that checks exact values on its node (and the lab),
// ends the stretch of actions since the previous expect step, and reports
// each expectation with its measured value. Nil or empty fields are not
// checked. Pool figures and other states that converge are waited for, up
// to Eventually.
type Expect struct {
	// Pods on the node, pod adds that failed (all nodes) since the
	// previous expect step, pods on every node.
	Pods       *int `yaml:"pods,omitempty"`
	FailedAdds *int `yaml:"failedAdds,omitempty"`
	TotalPods  *int `yaml:"totalPods,omitempty"`
	// The node's pool (ipamd's metrics) and its ENIs as EC2 has them.
	TotalIPs    *int `yaml:"totalIPs,omitempty"`
	AssignedIPs *int `yaml:"assignedIPs,omitempty"`
	ENIs        *int `yaml:"enis,omitempty"`
	Prefixes    *int `yaml:"prefixes,omitempty"`
	// LeakedENIs counts detached ENIs still tagged for the node.
	LeakedENIs *int `yaml:"leakedENIs,omitempty"`
	// Events: EC2 error code -> minimum and maximum count over the whole
	// run so far ([min, max]; max -1 for none); "CODE by NODE" counts only
	// the answers to that node's (or peer's) calls.
	Events map[string][2]int `yaml:"events,omitempty"`
	// Calls: EC2 action (or glob) -> minimum and maximum count of calls
	// since the previous expect step, answered or refused ([min, max]; max
	// -1 for none).
	Calls map[string][2]int `yaml:"calls,omitempty"`
	// MaxMutatingCalls bounds the non-Describe EC2 calls since the
	// previous expect step.
	MaxMutatingCalls *int `yaml:"maxMutatingCalls,omitempty"`
	// PodsOnENIs: every pod's address is on its node's ENIs in EC2 now
	// (waited for). UniqueAddresses: no address is held by two pods.
	// Consistent: the lab's invariants hold now — ipamd's ENIs and
	// addresses equal EC2's, every pod routed on its node (lab
	// CheckInvariants; it waits for a quiet lab).
	PodsOnENIs      bool `yaml:"podsOnENIs,omitempty"`
	UniqueAddresses bool `yaml:"uniqueAddresses,omitempty"`
	Consistent      bool `yaml:"consistent,omitempty"`
	// Reach: every pod of the scenario answers ping to each target — a
	// peer's name, a pod's name, "internet", or an address (waited for).
	Reach []string `yaml:"reach,omitempty"`
	// Running (Kubernetes labs): label selector -> how many of the pods
	// it picks are Running with an address of their node's ENIs in EC2;
	// waited for like pool figures. PodRestarts: selector -> their
	// containers' restarts in all.
	Running     map[string]int `yaml:"running,omitempty"`
	PodRestarts map[string]int `yaml:"podRestarts,omitempty"`
	// PodSubnet (Kubernetes labs): label selector -> the lab subnet (by
	// name) every Running pod it picks has its address in (custom
	// networking's ENIConfig subnet, say); at least one must be Running.
	PodSubnet map[string]string `yaml:"podSubnet,omitempty"`
	// PodEvents (Kubernetes labs): event reason (FailedCreatePodSandBox,
	// …) -> minimum and maximum count over the run so far, as Events.
	PodEvents map[string][2]int `yaml:"podEvents,omitempty"`
	// Eventually is how long waited-for values may take to hold: 10 s by
	// default for vpclab's CNI (whose timers scenarios shorten), 90 s for
	// the real VPC CNI (whose pool tick, cooldown and decrease spacing are
	// fixed at 5 s, 30 s and 30 s), 2 min in Kubernetes labs (a kubelet
	// backs off between sandbox retries).
	Eventually model.Duration `yaml:"eventually,omitempty"`
}

func (e *Expect) apply(context.Context, *run, *lab.Node) error { return nil } // run.step checks it

func (e *Expect) validate(s *Scenario) error {
	if len(e.Running) > 0 || len(e.PodRestarts) > 0 || len(e.PodEvents) > 0 || len(e.PodSubnet) > 0 {
		return needKube(s, "expect: running, podRestarts, podEvents or podSubnet")
	}
	for _, key := range slices.Sorted(maps.Keys(e.Events)) {
		if _, by, ok := strings.Cut(key, " by "); ok && !s.callerNamed(by) {
			return fmt.Errorf("expect: events %q: no node, peer or ec2 step's principal named %q", key, by)
		}
	}
	for sel, name := range e.PodSubnet {
		if !slices.ContainsFunc(s.Lab.Subnets, func(sn lab.SubnetConfig) bool { return sn.Name == name }) {
			return fmt.Errorf("expect: podSubnet %s: no subnet %q in the lab", sel, name)
		}
	}
	return nil
}

func (e *Expect) String() string { return "expect" }

// callerNamed reports whether name is someone the scenario's EC2 calls can
// come from: a node, a peer or an ec2 step's principal.
func (s *Scenario) callerNamed(name string) bool {
	if slices.ContainsFunc(s.Lab.Nodes, func(n lab.NodeConfig) bool { return slices.Contains(n.Names(), name) }) {
		return true
	}
	for _, st := range s.Steps {
		switch a := st.Action.(type) {
		case *Peer:
			if a.Name == name {
				return true
			}
		case *EC2Call:
			if a.principal() == name {
				return true
			}
		}
	}
	return false
}

// Check is one expectation as a step measured it.
type Check struct {
	What string `json:"what"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Pass bool   `json:"pass"`
	// After is how long a waited-for value took to hold (-1: never).
	After time.Duration `json:"after,omitempty"`
}

func (c Check) String() string {
	v := "PASS"
	if !c.Pass {
		v = "FAIL"
	}
	s := fmt.Sprintf("%s %s = %s", v, c.What, c.Got)
	if !c.Pass {
		s += ", want " + c.Want
	}
	if c.After > 0 {
		s += fmt.Sprintf(" (after %s)", c.After.Round(100*time.Millisecond))
	}
	return s
}

// checkpoint checks an expect step, records what the stretch since the
// previous one observed, and starts the next stretch.
func (x *run) checkpoint(ctx context.Context, label string, n *lab.Node, e *Expect) {
	x.mu.Lock()
	seg, failed := x.seg, x.failedAdds
	stats := maps.Clone(x.nodeStats)
	x.mu.Unlock()
	var checks []Check
	add := func(c Check) {
		checks = append(checks, c)
		x.logf("   %s", c)
		if !c.Pass {
			x.fail("%s: %s = %s, want %s", label, c.What, c.Got, c.Want)
		}
	}
	for _, c := range x.instant(ctx, n, e, seg, failed) {
		add(c)
	}
	within := x.within(n, e)
	for _, w := range x.waits(ctx, n, e) {
		add(waitFor(ctx, w, within, seg.start))
	}
	if e.Consistent {
		err := x.l.CheckInvariants(ctx)
		add(Check{What: "lab invariants (ipamd = EC2 = kernel)", Want: "hold", Got: errText(err, "hold"), Pass: err == nil})
	}
	res := observe(x.l, n, label, seg, failed, x.podsOn(ctx, n), checks, stats)
	x.mu.Lock()
	res.Failures = slices.Clone(x.res.Failures[seg.failIdx:])
	x.res.Steps = append(x.res.Steps, res)
	x.mu.Unlock()
	x.logf("   (%d pods on %s)", res.Pods, n.Name)
	x.newSegment()
}

// within is how long e's waited-for values may take.
func (x *run) within(n *lab.Node, e *Expect) time.Duration {
	switch {
	case e.Eventually > 0:
		return time.Duration(e.Eventually)
	case x.l.Kubeconfig() != "": // a kubelet backs off between sandbox retries
		return 2 * time.Minute
	case n.CNI().IsUpstream():
		return 90 * time.Second
	}
	return 10 * time.Second
}

// instant are e's checks that are measured once: counts of what happened.
func (x *run) instant(ctx context.Context, n *lab.Node, e *Expect, seg segment, failed int) []Check {
	var out []Check
	intCheck := func(what string, want *int, got int) {
		if want != nil {
			out = append(out, Check{What: what, Want: strconv.Itoa(*want), Got: strconv.Itoa(got), Pass: got == *want})
		}
	}
	x.mu.Lock()
	onNode, total := countOn(x.pods, n), len(x.pods)
	x.mu.Unlock()
	intCheck("failed pod adds", e.FailedAdds, failed)
	intCheck("pods on "+n.Name, e.Pods, onNode)
	intCheck("pods on every node", e.TotalPods, total)
	if e.MaxMutatingCalls != nil {
		c := mutating(x.l) - seg.calls
		out = append(out, Check{What: "mutating EC2 calls", Want: "<= " + strconv.Itoa(*e.MaxMutatingCalls), Got: strconv.Itoa(c), Pass: c <= *e.MaxMutatingCalls})
	}
	if e.UniqueAddresses {
		dup := x.duplicates()
		out = append(out, Check{What: "pod addresses unique", Want: "yes", Got: cmp.Or(dup, "yes"), Pass: dup == ""})
	}
	return out
}

func (x *run) segSeq() uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.seg.seq
}

func errText(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}

// rangeCheck is a count checked against [min, max] (max -1: none).
func rangeCheck(what string, mm [2]int, c int, err error) Check {
	want := fmt.Sprintf("%d..%d", mm[0], mm[1])
	if mm[1] < 0 {
		want = fmt.Sprintf(">= %d", mm[0])
	}
	got := strconv.Itoa(c)
	if err != nil {
		got += " (" + err.Error() + ")"
	}
	return Check{What: what, Want: want, Got: got, Pass: err == nil && inRange(mm, c)}
}

func inRange(mm [2]int, c int) bool { return c >= mm[0] && (mm[1] < 0 || c <= mm[1]) }

// want is one value a step waits for: a count, a count in a range (rng),
// or (yes) a condition whose get returns 1 when it holds and an error
// saying why not.
type want struct {
	what string
	v    int
	rng  *[2]int
	yes  bool
	get  func() (int, error)
}

// waitFor polls w until it holds or within is up.
func waitFor(ctx context.Context, w want, within time.Duration, start time.Time) Check {
	deadline := time.Now().Add(within)
	c := Check{What: w.what, Want: strconv.Itoa(w.v)}
	if w.yes {
		c.Want = "yes"
	}
	for {
		got, err := w.get()
		c.Got = strconv.Itoa(got)
		if w.yes {
			c.Got = errText(err, "yes")
		} else if err != nil {
			c.Got += " (" + err.Error() + ")"
		}
		if w.rng != nil {
			r := rangeCheck(w.what, *w.rng, got, err)
			c.Want, c.Got = r.Want, r.Got
			if r.Pass {
				c.Pass, c.After = true, time.Since(start)
				return c
			}
		} else if err == nil && got == w.v {
			c.Pass, c.After = true, time.Since(start)
			return c
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.After = -1
			return c
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waits are the values of e a step waits for: the node's pool, its ENIs
// in EC2, pods on their ENIs and reaching their targets, and in
// Kubernetes labs the pods selectors pick.
func (x *run) waits(ctx context.Context, n *lab.Node, e *Expect) []want {
	l := x.l
	var checks []want
	num := func(what string, v *int, get func() (int, error)) {
		if v != nil {
			checks = append(checks, want{what: what, v: *v, get: get})
		}
	}
	num("awscni_total_ip_addresses", e.TotalIPs, func() (int, error) { return metric(n, "awscni_total_ip_addresses") })
	num("awscni_assigned_ip_addresses", e.AssignedIPs, func() (int, error) { return metric(n, "awscni_assigned_ip_addresses") })
	num("awscni_total_ipv4_prefixes", e.Prefixes, func() (int, error) { return metric(n, "awscni_total_ipv4_prefixes") })
	num("detached ENIs tagged for the node", e.LeakedENIs, func() (int, error) {
		c := 0
		for _, x := range l.Region().NetworkInterfaces() {
			if x.Attachment == nil && x.Tags["node.k8s.amazonaws.com/instance_id"] == n.Instance.ID {
				c++
			}
		}
		return c, nil
	})
	num("ENIs attached (EC2)", e.ENIs, func() (int, error) { return attachedENIs(l, n), nil })
	for _, key := range slices.Sorted(maps.Keys(e.Events)) {
		code, by, _ := strings.Cut(key, " by ")
		checks = append(checks, want{what: key + " answers (run so far)", rng: ptr(e.Events[key]), get: func() (int, error) {
			recs := l.Events(ec2query.EventFilter{ErrorCode: code})
			if by == "" {
				return len(recs), nil
			}
			// A node or peer by its instance; anyone else (an ec2 step's
			// principal, "console" by default) by its name.
			names := []string{by}
			if id, err := x.instanceID(by); err == nil {
				names = []string{id}
			}
			c := 0
			for _, r := range recs {
				if slices.ContainsFunc(r.UserIdentity.Names(), func(n string) bool { return slices.Contains(names, n) }) {
					c++
				}
			}
			return c, nil
		}})
	}
	for _, a := range slices.Sorted(maps.Keys(e.Calls)) {
		checks = append(checks, want{what: a + " calls (this stretch)", rng: ptr(e.Calls[a]), get: func() (int, error) {
			c := 0
			for _, r := range l.Events(ec2query.EventFilter{SinceSeq: x.segSeq()}) {
				if ok, _ := path.Match(a, r.EventName); ok {
					c++
				}
			}
			return c, nil
		}})
	}
	for _, reason := range slices.Sorted(maps.Keys(e.PodEvents)) {
		checks = append(checks, want{what: reason + " Kubernetes events", rng: ptr(e.PodEvents[reason]), get: func() (int, error) { return l.KubeEvents(ctx, reason) }})
	}
	if e.PodsOnENIs {
		checks = append(checks, want{what: "every pod's address on its node's ENIs in EC2", v: 1, yes: true, get: x.podsOnENIs})
	}
	for _, t := range e.Reach {
		checks = append(checks, want{what: "every pod reaches " + t, v: 1, yes: true, get: func() (int, error) { return x.reach(ctx, t) }})
	}
	for _, sel := range slices.Sorted(maps.Keys(e.Running)) {
		num("Running pods on their node's ENIs, "+sel, Int(e.Running[sel]), func() (int, error) {
			return countPods(ctx, l, sel, func(p lab.KubePod) int {
				if p.Phase == "Running" && p.OnNodeENIs && !p.Terminating {
					return 1
				}
				return 0
			})
		})
	}
	for _, sel := range slices.Sorted(maps.Keys(e.PodSubnet)) {
		name := e.PodSubnet[sel]
		checks = append(checks, want{what: "every Running pod " + sel + " in subnet " + name, v: 1, yes: true, get: func() (int, error) {
			return podsInSubnet(ctx, l, sel, name)
		}})
	}
	for _, sel := range slices.Sorted(maps.Keys(e.PodRestarts)) {
		num("container restarts, "+sel, Int(e.PodRestarts[sel]), func() (int, error) {
			return countPods(ctx, l, sel, func(p lab.KubePod) int {
				if p.Terminating {
					return 0
				}
				return p.Restarts
			})
		})
	}
	return checks
}

func attachedENIs(l *lab.Lab, n *lab.Node) int {
	c := 0
	for _, x := range l.Region().NetworkInterfaces() {
		if x.Attachment != nil && x.Attachment.InstanceID == n.Instance.ID {
			c++
		}
	}
	return c
}

// podsOnENIs returns 1 when every pod's address is on an ENI attached to
// its node in EC2, else an error naming the first that is not.
func (x *run) podsOnENIs() (int, error) {
	on := map[string]map[netip.Addr]bool{}
	for _, e := range x.l.Region().NetworkInterfaces() {
		if e.Attachment == nil {
			continue
		}
		m := on[e.Attachment.InstanceID]
		if m == nil {
			m = map[netip.Addr]bool{}
			on[e.Attachment.InstanceID] = m
		}
		for _, a := range e.SecondaryIPs {
			m[a] = true
		}
		for _, p := range e.Prefixes {
			for a := p.Addr(); p.Contains(a); a = a.Next() {
				m[a] = true
			}
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, p := range x.pods {
		if !on[p.node.Instance.ID][p.pod.IP] {
			return 0, fmt.Errorf("pod %s's %s is not on %s's ENIs in EC2", p.pod.Name, p.pod.IP, p.node.Name)
		}
	}
	return 1, nil
}

// reach returns 1 when every pod answers a ping to target, else an error
// naming the first that does not.
func (x *run) reach(ctx context.Context, target string) (int, error) {
	dst, err := x.address(target)
	if err != nil {
		return 0, err
	}
	x.mu.Lock()
	pods := slices.Clone(x.pods)
	x.mu.Unlock()
	for _, p := range pods {
		if p.pod.IP.String() == dst {
			continue
		}
		if err := p.pod.Ping(ctx, dst); err != nil {
			return 0, fmt.Errorf("%s does not reach %s (%s)", p.pod.Name, target, dst)
		}
	}
	return 1, nil
}

// address resolves a reach target.
func (x *run) address(target string) (string, error) {
	if target == "internet" {
		return fabric.InternetHostAddr, nil
	}
	if a, err := netip.ParseAddr(target); err == nil {
		return a.String(), nil
	}
	x.mu.Lock()
	p, ok := x.peers[target]
	x.mu.Unlock()
	if ok {
		return p.PrivateIP.String(), nil
	}
	if ip, err := x.podIP(target); err == nil {
		return ip, nil
	}
	return "", fmt.Errorf("reach %q: not a peer, a pod, internet or an address", target)
}

// countPods sums f over the pods selector picks.
func countPods(ctx context.Context, l *lab.Lab, selector string, f func(lab.KubePod) int) (int, error) {
	pods, err := l.KubePods(ctx, selector)
	c := 0
	for _, p := range pods {
		c += f(p)
	}
	return c, err
}

// podsInSubnet returns 1 when the selector picks Running pods and each
// has its address in the lab subnet named name, else an error naming the
// first that does not.
func podsInSubnet(ctx context.Context, l *lab.Lab, selector, name string) (int, error) {
	id, ok := l.SubnetID(name)
	if !ok {
		return 0, fmt.Errorf("no subnet %q", name)
	}
	var cidr netip.Prefix
	for _, s := range l.Region().Subnets() {
		if s.ID == id {
			cidr = s.CIDR
		}
	}
	pods, err := l.KubePods(ctx, selector)
	if err != nil {
		return 0, err
	}
	running := 0
	for _, p := range pods {
		if p.Phase != "Running" || p.Terminating {
			continue
		}
		running++
		if a, err := netip.ParseAddr(p.IP); err != nil || !cidr.Contains(a) {
			return 0, fmt.Errorf("pod %s/%s has %q, outside %s (%s)", p.Namespace, p.Name, p.IP, name, cidr)
		}
	}
	if running == 0 {
		return 0, fmt.Errorf("no Running pod %s", selector)
	}
	return 1, nil
}

func mutating(l *lab.Lab) int {
	c := 0
	for _, e := range l.Events(ec2query.EventFilter{}) {
		if !e.ReadOnly {
			c++
		}
	}
	return c
}

// metric reads one unlabelled series from the node's ipamd.
func metric(n *lab.Node, name string) (int, error) {
	m, err := n.Metrics()
	if err != nil {
		return 0, err
	}
	v, ok := lab.Gauge(m, name)
	if !ok {
		return 0, fmt.Errorf("no metric %s", name)
	}
	return int(v), nil
}

// Int is a helper for writing expectations in Go.
func Int(v int) *int { return &v }
