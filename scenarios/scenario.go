// Package scenarios runs scenarios declared as data: a world (a lab
// config, the schema of `vpclab up -f`), then an ordered list of steps,
// each one action — add pods, an EC2 call as another principal, a fault,
// an IMDS fault, a kill, a wait — or an expectation with exact values,
// measured and reported. The built-in scenarios are YAML files embedded in
// the package (builtin/); the Ginkgo suite here and `vpclab scenario run`
// run them with the same code.
package scenarios

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/internal/yamlx"
	"github.com/vpclab/vpclab/lab"
)

// Scenario is a world and an ordered list of steps.
type Scenario struct {
	Name   string   `yaml:"name"`
	Labels []string `yaml:"labels,omitempty"`
	// Description says what the scenario shows, for list and reports.
	Description string `yaml:"description,omitempty"`
	// Upstream names the upstream reports the scenario models
	// ("aws/amazon-vpc-cni-k8s#2713"); Reproduces says what a run against
	// the real VPC CNI (lab.UpstreamVersion) shows: "yes" (the bug
	// reproduces: the expectations fail there), "no", or why it cannot
	// run there.
	Upstream   []string `yaml:"upstream,omitempty"`
	Reproduces string   `yaml:"reproduces,omitempty"`
	// Timers "fast" puts the CI timer knobs under the lab's env (FastTimers:
	// a 100 ms pool tick, no ENI lifetime or cooldown…; the env given
	// wins); empty keeps the CNI's own timers.
	Timers string `yaml:"timers,omitempty"`
	// Clock runs vpclab's own timers this many times faster (ipamd's
	// VPCLAB_CLOCK_SCALE: pool loops no shorter than 100 ms, the leaked-ENI
	// sweep's hour, grace periods, cooldowns, ENI lifetimes), for
	// incidents whose timers are hours long. EC2's time (attach latency,
	// IMDS lag, ages of resources) is not scaled; the real VPC CNI ignores
	// it.
	Clock float64    `yaml:"clock,omitempty"`
	Lab   lab.Config `yaml:"lab"`
	Steps []Step     `yaml:"steps"`
	// Cooldown, when set, fails the run if a pod gets an address released
	// less than this long before.
	Cooldown model.Duration `yaml:"cooldown,omitempty"`
	// Implementations are the CNIs whose behaviour the expectations pin:
	// "vpclab", "upstream" (the real VPC CNI, any version). Empty means
	// vpclab only. A scenario still runs against any CNI; a run against
	// one not listed says so.
	Implementations []string `yaml:"implementations,omitempty"`
}

// AppliesTo says whether the scenario's expectations are meant to hold for
// a CNI.
func (s Scenario) AppliesTo(c lab.CNI) bool {
	impl := lab.CNIVpclab
	if c.IsUpstream() {
		impl = lab.CNIUpstream
	}
	if len(s.Implementations) == 0 {
		return impl == lab.CNIVpclab
	}
	return slices.Contains(s.Implementations, impl)
}

// Load reads a YAML scenario file.
func Load(file string) (Scenario, error) {
	var v Scenario
	if err := yamlx.Load(file, &v); err != nil {
		return Scenario{}, err
	}
	if err := v.Validate(); err != nil {
		return Scenario{}, fmt.Errorf("%s: %w", file, err)
	}
	return v, nil
}

// Parse reads a scenario from YAML; name labels errors.
func Parse(b []byte, name string) (Scenario, error) {
	var v Scenario
	if err := yamlx.Decode(b, &v); err != nil {
		return Scenario{}, fmt.Errorf("%s: %w", name, err)
	}
	if err := v.Validate(); err != nil {
		return Scenario{}, fmt.Errorf("%s: %w", name, err)
	}
	return v, nil
}

// Validate checks what can be checked before a lab exists: a name, steps,
// each step's action, and Kubernetes steps in a Kubernetes lab only.
func (s *Scenario) Validate() error {
	if strings.TrimSpace(s.Name) == "" {
		return errors.New("name: a scenario needs a name")
	}
	if len(s.Steps) == 0 {
		return errors.New("steps: a scenario needs at least one step")
	}
	if s.Clock != 0 && s.Clock < 1 {
		return fmt.Errorf("clock %g: want a factor of at least 1 (timers run that many times faster)", s.Clock)
	}
	if s.Timers != "" && s.Timers != "fast" {
		return fmt.Errorf("timers %q: want fast, or nothing for the CNI's own timers", s.Timers)
	}
	for i, st := range s.Steps {
		if st.Action == nil {
			return fmt.Errorf("steps[%d]: no action", i)
		}
		if v, ok := st.Action.(validator); ok {
			if err := v.validate(s); err != nil {
				return fmt.Errorf("steps[%d] (%s): %w", i, st.label(i), err)
			}
		}
	}
	return nil
}

// Result is what a run found.
type Result struct {
	Scenario string `json:"scenario"`
	// CNI is the implementation the run used.
	CNI      string        `json:"cni"`
	Passed   bool          `json:"passed"`
	Failures []string      `json:"failures,omitempty"`
	Duration time.Duration `json:"duration"`
	// Steps is what each expect step observed (in step order); a step
	// result covers the actions since the previous expect step.
	Steps []StepResult `json:"steps"`
	// Dump is the lab state, ipamd logs and recent events, on failure.
	Dump string `json:"dump,omitempty"`
	// Snapshot is the lab as it ended (Runner.Capture), for a report.
	Snapshot *lab.Snapshot `json:"-"`
}

// Runner runs scenarios against labs built from BinDir's binaries.
type Runner struct {
	BinDir string
	Log    func(format string, args ...any)
	// Owner names what runs the scenarios (shown by vpclab status; default
	// "scenario").
	Owner string
	// CNI, when set, is every node's CNI, whatever the scenario's lab says.
	CNI lab.CNI
	// KeepGoing runs every step even after an expectation failed (to
	// compare implementations); otherwise a run stops at the first
	// failing step.
	KeepGoing bool
	// Capture keeps the lab's snapshot (status, timeline, EC2 calls) in
	// the Result before the lab goes, for an HTML report.
	Capture bool
}

type podRef struct {
	node *lab.Node
	pod  *lab.Pod
}

// Run runs one scenario and always tears its lab down.
func (r Runner) Run(ctx context.Context, s Scenario, labName string) (res Result) {
	start := time.Now()
	res.Scenario = s.Name
	logf := r.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	x := &run{r: r, s: s, res: &res, logf: logf, released: map[string]time.Time{}, peers: map[string]model.Instance{}, vars: map[string]string{}, nodeStats: map[string]*NodeStats{}}
	if err := s.Validate(); err != nil {
		x.fail("%v", err)
		res.Duration = time.Since(start)
		return res
	}
	cfg := r.labConfig(s, labName)
	res.CNI = cfg.CNI.String()
	if res.CNI == "" {
		res.CNI = lab.CNIVpclab
	}
	l, err := lab.New(ctx, cfg, logf)
	if err != nil {
		x.fail("bring-up: %v", err)
		res.Duration = time.Since(start)
		return res
	}
	x.l = l
	defer func() {
		x.stopBackground()
		if len(res.Failures) > 0 {
			res.Dump = dump(l, x)
		}
		if r.Capture {
			snap := l.Snapshot()
			res.Snapshot = &snap
		}
		if err := l.Close(); err != nil {
			x.fail("teardown: %v", err)
		}
		if left, _ := netx.ListNamed(labName + "-"); len(left) > 0 {
			x.fail("leak: namespaces left after teardown: %v", left)
		}
		res.Passed = len(res.Failures) == 0
		res.Duration = time.Since(start)
	}()
	x.newSegment()
	for i, st := range s.Steps {
		if err := ctx.Err(); err != nil {
			x.fail("interrupted: %v", err)
			return res
		}
		if !x.step(ctx, i, st) {
			return res
		}
	}
	x.stopBackground()
	x.finish(ctx)
	return res
}

// labConfig is the scenario's lab as this runner brings it up.
func (r Runner) labConfig(s Scenario, labName string) lab.Config {
	cfg := s.Lab
	cfg.Env = timerEnv(s.Timers, cfg.Env)
	if s.Clock > 1 {
		cfg.Env = maps.Clone(cfg.Env)
		if cfg.Env == nil {
			cfg.Env = map[string]string{}
		}
		cfg.Env["VPCLAB_CLOCK_SCALE"] = strconv.FormatFloat(s.Clock, 'g', -1, 64)
	}
	cfg.Name = labName
	cfg.Owner = r.Owner
	if cfg.Owner == "" {
		cfg.Owner = "scenario"
	}
	if cfg.IpamdRestart == (lab.Restart{}) {
		// Steps decide when ipamd restarts; a lab that restarts it on its
		// own would change what a scenario measures.
		cfg.IpamdRestart = lab.Restart{Never: true}
	}
	if cfg.BinDir == "" {
		cfg.BinDir = r.BinDir
	}
	if len(cfg.Subnets) == 0 {
		d := lab.Default()
		cfg.Subnets, cfg.VPCCIDR = d.Subnets, d.VPCCIDR
	}
	if r.CNI.Kind != "" {
		cfg.CNI = r.CNI
		cfg.Nodes = slices.Clone(cfg.Nodes)
		for i := range cfg.Nodes {
			cfg.Nodes[i].CNI = lab.CNI{}
		}
	}
	return cfg
}

// run is one scenario's progress: its lab, the pods and peers it holds,
// when each address was last released, and what happened since the last
// expect step.
type run struct {
	r    Runner
	s    Scenario
	l    *lab.Lab
	res  *Result
	logf func(string, ...any)

	mu         sync.Mutex // guards the fields below and res.Failures
	pods       []podRef
	released   map[string]time.Time
	seq        int
	peers      map[string]model.Instance
	vars       map[string]string     // set steps' values
	failedAdds int                   // since the last expect step
	nodeStats  map[string]*NodeStats // since the last expect step
	seg        segment
	events     []event // pod adds and deletes, for the timeline

	bg      sync.WaitGroup // kills' resumes and restarts
	cancels []func()       // call hooks to remove at the end
}

// segment is where the actions since the last expect step began.
type segment struct {
	start   time.Time
	seq     uint64
	calls   int // mutating EC2 calls before it
	failIdx int // len(res.Failures) at its start
}

func (x *run) newSegment() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.seg = segment{start: time.Now(), seq: lastSeq(x.l), calls: mutating(x.l), failIdx: len(x.res.Failures)}
	x.failedAdds = 0
	x.nodeStats = map[string]*NodeStats{}
}

func (x *run) fail(format string, a ...any) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.failLocked(format, a...)
}

func (x *run) failLocked(format string, a ...any) {
	x.res.Failures = append(x.res.Failures, fmt.Sprintf(format, a...))
}

func (x *run) failures() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.res.Failures)
}

// step runs step i and reports whether the scenario goes on.
func (x *run) step(ctx context.Context, i int, st Step) bool {
	label := st.label(i)
	n := x.l.Nodes()[0]
	if st.Node != "" {
		if n = x.l.Node(st.Node); n == nil {
			x.fail("%s: no node %q", label, st.Node)
			return false
		}
	}
	if st.Name != "" {
		x.logf("%d. %s — %s", i+1, st.Name, st.Action)
	} else {
		x.logf("%d. %s", i+1, st.Action)
	}
	if e, ok := st.Action.(*Expect); ok {
		x.checkpoint(ctx, label, n, e)
		return x.failures() == 0 || (x.r.KeepGoing && ctx.Err() == nil)
	}
	if err := st.Action.apply(ctx, x, n); err != nil {
		x.fail("%s: %v", label, err)
		return false
	}
	return true
}

// background runs f until the scenario ends (teardown waits for it).
func (x *run) background(f func()) {
	x.bg.Add(1)
	go func() {
		defer x.bg.Done()
		f()
	}()
}

// onCall runs f once, synchronously, when EC2 answers the call m picks
// (the nth matching answer after now).
func (x *run) onCall(m CallMatch, f func()) {
	var mu sync.Mutex
	seen, fired := 0, false
	cancel := x.l.Server().API().OnCall(func(rec ec2query.Record) {
		if ok, _ := path.Match(m.Action, rec.EventName); !ok || (m.Code != "" && rec.ErrorCode != m.Code) {
			return
		}
		if m.Caller != "" && !slices.Contains(rec.UserIdentity.Names(), m.Caller) {
			return
		}
		mu.Lock()
		seen++
		fire := !fired && seen == max(m.Nth, 1)
		fired = fired || fire
		mu.Unlock()
		if fire {
			f()
		}
	})
	x.mu.Lock()
	x.cancels = append(x.cancels, cancel)
	x.mu.Unlock()
}

// stopBackground removes the call hooks and waits for background work.
func (x *run) stopBackground() {
	x.mu.Lock()
	cancels := x.cancels
	x.cancels = nil
	x.mu.Unlock()
	for _, c := range cancels {
		c()
	}
	x.bg.Wait()
}

// podsOn counts the pods on n with addresses of their own: the run's, or
// in a Kubernetes lab the API's.
func (x *run) podsOn(ctx context.Context, n *lab.Node) int {
	if x.l.Kubeconfig() == "" {
		x.mu.Lock()
		defer x.mu.Unlock()
		return countOn(x.pods, n)
	}
	c, _ := countPods(ctx, x.l, "", func(p lab.KubePod) int {
		if p.Node == n.Name && !p.HostNetwork && p.IP != "" && !p.Terminating {
			return 1
		}
		return 0
	})
	return c
}

// finish checks what must hold once every step ran: no address held twice
// and the lab's invariants.
func (x *run) finish(ctx context.Context) {
	if dup := x.duplicates(); dup != "" {
		x.fail("%s", dup)
	}
	if err := x.l.CheckInvariants(ctx); err != nil {
		x.fail("invariants: %v", err)
	}
}

// duplicates names an address two of the run's pods hold ("" if none).
func (x *run) duplicates() string {
	x.mu.Lock()
	defer x.mu.Unlock()
	seen := map[string]string{}
	for _, p := range x.pods {
		if o, dup := seen[p.pod.IP.String()]; dup {
			return fmt.Sprintf("address %s handed to %s and %s", p.pod.IP, o, p.pod.Name)
		}
		seen[p.pod.IP.String()] = p.pod.Name
	}
	return ""
}
