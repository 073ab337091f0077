// Package scenarios runs scenarios declared as data: a world (a lab
// config), then steps — pod churn, faults, ipamd crashes, waits — each with
// exact expectations on the node's pool, the pods and the EC2 events. The
// Ginkgo suite in this directory runs the built-in ones; `vpclab scenario
// run FILE` runs a YAML one.
package scenarios

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/internal/yamlx"
	"github.com/vpclab/vpclab/lab"
)

// Scenario is a world, a workload and its expectations.
type Scenario struct {
	Name   string     `yaml:"name"`
	Labels []string   `yaml:"labels"`
	Lab    lab.Config `yaml:"lab"`
	Steps  []Step     `yaml:"steps"`
	// Cooldown, when set, fails the run if a pod gets an address released
	// less than this long before.
	Cooldown model.Duration `yaml:"cooldown"`
	// Implementations are the CNIs whose behaviour the expectations pin:
	// "vpclab", "upstream" (the real VPC CNI, any version). Empty means
	// vpclab only. A scenario still runs against any CNI; a run against
	// one not listed says so.
	Implementations []string `yaml:"implementations"`
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

// Step is one action and what must hold after it.
type Step struct {
	Name string `yaml:"name"`
	// Node the step acts on (default: the first node).
	Node string `yaml:"node"`
	// AddPods adds that many pods, one after the other unless Parallel;
	// failures are counted, not fatal. DelPods deletes that many of the
	// oldest pods.
	AddPods int `yaml:"addPods"`
	DelPods int `yaml:"delPods"`
	// Parallel adds up to that many of AddPods' pods at once (default 1),
	// as `vpclab pods add --parallel` does.
	Parallel int `yaml:"parallel"`
	// PodTimeout is how long a failed ADD is retried the way a kubelet
	// retries a sandbox (its DEL first, back-off 100 ms doubling to 2 s:
	// lab.Retry, as `vpclab pods add --retry`) before the pod counts as
	// failed (default 30 s: a kubelet retries for longer; a step that
	// expects refusals sets it short).
	PodTimeout model.Duration `yaml:"podTimeout"`
	// Faults are installed before the step's workload; ClearFaults removes
	// every rule first.
	Faults      []faults.Rule `yaml:"faults"`
	ClearFaults bool          `yaml:"clearFaults"`
	// RestartIpamd SIGKILLs the node's ipamd and starts it again.
	RestartIpamd bool `yaml:"restartIpamd"`
	// LeakENIs creates that many detached ENIs tagged for the node (as a
	// crash between create and attach leaves them), created an hour ago.
	LeakENIs int            `yaml:"leakENIs"`
	Sleep    model.Duration `yaml:"sleep"`
	// Kubernetes labs (lab.kubernetes): Apply is a manifest `kubectl
	// apply`ed after the step's faults; Kubectl is one kubectl command (its
	// arguments: [scale, deployment/web, --replicas=20]) run after it.
	Apply   string   `yaml:"apply"`
	Kubectl []string `yaml:"kubectl"`
	Expect  Expect   `yaml:"expect"`
}

// Expect lists exact values; nil fields are not checked. Pool figures are
// waited for (up to Within, default 10 s) since the pool converges.
type Expect struct {
	Pods        *int `yaml:"pods"`
	FailedAdds  *int `yaml:"failedAdds"`
	TotalIPs    *int `yaml:"totalIPs"`
	AssignedIPs *int `yaml:"assignedIPs"`
	ENIs        *int `yaml:"enis"`
	Prefixes    *int `yaml:"prefixes"`
	// LeakedENIs counts detached ENIs still tagged for the node.
	LeakedENIs *int `yaml:"leakedENIs"`
	// Events: EC2 error code -> minimum and maximum count over the whole
	// run so far ([min, max]; max -1 for none).
	Events map[string][2]int `yaml:"events"`
	// MaxMutatingCalls bounds the non-Describe EC2 calls of this step.
	MaxMutatingCalls *int `yaml:"maxMutatingCalls"`
	// Running (Kubernetes labs): label selector -> how many of the pods
	// it picks are Running with an address of their node's ENIs in EC2;
	// waited for like pool figures. PodRestarts: selector -> their
	// containers' restarts in all.
	Running     map[string]int `yaml:"running"`
	PodRestarts map[string]int `yaml:"podRestarts"`
	// PodEvents (Kubernetes labs): event reason (FailedCreatePodSandBox,
	// …) -> minimum and maximum count over the run so far, as Events.
	PodEvents map[string][2]int `yaml:"podEvents"`
	// Within is how long pool figures may take to converge: 10 s by
	// default for vpclab's CNI (whose timers scenarios shorten), 90 s for
	// the real VPC CNI (whose pool tick, cooldown and decrease spacing are
	// fixed at 5 s, 30 s and 30 s), 2 min in Kubernetes labs (a kubelet
	// backs off between sandbox retries).
	Within model.Duration `yaml:"within"`
}

// Load reads a YAML scenario.
func Load(path string) (Scenario, error) {
	var v Scenario
	if err := yamlx.Load(path, &v); err != nil {
		return Scenario{}, err
	}
	for i, st := range v.Steps {
		switch {
		case st.AddPods < 0 || st.DelPods < 0:
			return Scenario{}, fmt.Errorf("%s: steps[%d]: addPods and delPods must not be negative", path, i)
		case st.Parallel < 0 || st.Parallel > 64:
			return Scenario{}, fmt.Errorf("%s: steps[%d].parallel %d: want 1..64", path, i, st.Parallel)
		}
	}
	return v, nil
}

// Result is what a run found.
type Result struct {
	Scenario string `json:"scenario"`
	// CNI is the implementation the run used.
	CNI      string        `json:"cni"`
	Passed   bool          `json:"passed"`
	Failures []string      `json:"failures,omitempty"`
	Duration time.Duration `json:"duration"`
	// Steps is what each step observed (in step order).
	Steps []StepResult `json:"steps"`
	// Dump is the lab state, ipamd logs and recent events, on failure.
	Dump string `json:"-"`
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
	run := &run{r: r, s: s, res: &res, logf: logf, released: map[string]time.Time{}}
	if err := s.checkKubernetes(); err != nil {
		run.fail("%v", err)
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
		run.fail("bring-up: %v", err)
		res.Duration = time.Since(start)
		return res
	}
	run.l = l
	defer func() {
		if len(res.Failures) > 0 {
			res.Dump = dump(l)
		}
		if err := l.Close(); err != nil {
			run.fail("teardown: %v", err)
		}
		if left, _ := netx.ListNamed(labName + "-"); len(left) > 0 {
			run.fail("leak: namespaces left after teardown: %v", left)
		}
		res.Passed = len(res.Failures) == 0
		res.Duration = time.Since(start)
	}()
	for i, st := range s.Steps {
		if err := ctx.Err(); err != nil {
			run.fail("interrupted: %v", err)
			return res
		}
		if !run.step(ctx, i, st) {
			return res
		}
	}
	run.finish(ctx)
	return res
}

// checkKubernetes refuses Kubernetes steps and expectations in a scenario
// whose lab is not a Kubernetes lab, naming the step.
func (s Scenario) checkKubernetes() error {
	if s.Lab.Kubernetes != nil {
		return nil
	}
	for i, st := range s.Steps {
		e := st.Expect
		if st.Apply != "" || len(st.Kubectl) > 0 || len(e.Running) > 0 || len(e.PodRestarts) > 0 || len(e.PodEvents) > 0 {
			return fmt.Errorf("steps[%d]: apply, kubectl, running, podRestarts and podEvents need a Kubernetes lab (lab.kubernetes: {})", i)
		}
	}
	return nil
}

// labConfig is the scenario's lab as this runner brings it up.
func (r Runner) labConfig(s Scenario, labName string) lab.Config {
	cfg := s.Lab
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

// run is one scenario's progress: its lab, the pods it holds and when each
// address was last released.
type run struct {
	r        Runner
	s        Scenario
	l        *lab.Lab
	res      *Result
	logf     func(string, ...any)
	pods     []podRef
	released map[string]time.Time
	seq      int
}

func (x *run) fail(format string, a ...any) {
	x.res.Failures = append(x.res.Failures, fmt.Sprintf(format, a...))
}

// step runs step i and reports whether the scenario goes on.
func (x *run) step(ctx context.Context, i int, st Step) bool {
	name := st.Name
	if name == "" {
		name = fmt.Sprintf("step %d", i+1)
	}
	n := x.l.Nodes()[0]
	if st.Node != "" {
		if n = x.l.Node(st.Node); n == nil {
			x.fail("%s: no node %q", name, st.Node)
			return false
		}
	}
	if !x.inject(name, n, st) || !x.kube(ctx, name, st) {
		return false
	}
	start, seqBefore := time.Now(), lastSeq(x.l)
	callsBefore := mutating(x.l)
	failsBefore := len(x.res.Failures)
	failed := x.addPods(ctx, name, n, st)
	x.delPods(ctx, name, n, st.DelPods)
	if st.RestartIpamd {
		if err := n.RestartIpamd(ctx); err != nil {
			x.fail("%s: %v", name, err)
			return false
		}
	}
	if st.Sleep > 0 {
		select {
		case <-time.After(time.Duration(st.Sleep)):
		case <-ctx.Done():
		}
	}
	reached := x.r.check(ctx, x.l, n, name, st.Expect, failed, x.pods, callsBefore, start, x.fail)
	pods := x.podsOn(ctx, n)
	x.res.Steps = append(x.res.Steps, observe(x.l, n, name, start, seqBefore, failed, pods, reached, x.res.Failures[failsBefore:]))
	x.logf("%s: %s done (%d pods on %s)", x.s.Name, name, pods, n.Name)
	return len(x.res.Failures) == 0 || (x.r.KeepGoing && ctx.Err() == nil)
}

// inject applies a step's faults and leaked ENIs.
func (x *run) inject(name string, n *lab.Node, st Step) bool {
	if st.ClearFaults {
		x.l.Faults().Clear()
	}
	if len(st.Faults) > 0 {
		if _, err := x.l.Faults().Add(st.Faults...); err != nil {
			x.fail("%s: faults: %v", name, err)
			return false
		}
	}
	for k := 0; k < st.LeakENIs; k++ {
		_, err := x.l.Region().CreateNetworkInterface(model.CreateNetworkInterfaceInput{SubnetID: n.Instance.SubnetID, Description: "aws-K8S-" + n.Instance.ID,
			Tags: model.Tags{"node.k8s.amazonaws.com/instance_id": n.Instance.ID, "node.k8s.amazonaws.com/createdAt": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}})
		if err != nil {
			x.fail("%s: leak an ENI: %v", name, err)
			return false
		}
	}
	return true
}

// podsOn counts the pods on n with addresses of their own: the run's, or
// in a Kubernetes lab the API's.
func (x *run) podsOn(ctx context.Context, n *lab.Node) int {
	if x.l.Kubeconfig() == "" {
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

// kube applies a step's manifest and runs its kubectl command.
func (x *run) kube(ctx context.Context, name string, st Step) bool {
	if st.Apply != "" {
		if _, err := x.l.Kubectl(ctx, []byte(st.Apply), "apply", "-f", "-"); err != nil {
			x.fail("%s: %v", name, err)
			return false
		}
	}
	if len(st.Kubectl) > 0 {
		if _, err := x.l.Kubectl(ctx, nil, st.Kubectl...); err != nil {
			x.fail("%s: %v", name, err)
			return false
		}
	}
	return true
}

// finish checks what must hold once every step ran: no address held twice
// and the lab's invariants.
func (x *run) finish(ctx context.Context) {
	seen := map[string]string{}
	for _, p := range x.pods {
		if o, dup := seen[p.pod.IP.String()]; dup {
			x.fail("address %s handed to %s and %s", p.pod.IP, o, p.pod.Name)
		}
		seen[p.pod.IP.String()] = p.pod.Name
	}
	if err := x.l.CheckInvariants(ctx); err != nil {
		x.fail("invariants: %v", err)
	}
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
	for _, l := range strings.Split(m, "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			return int(v), err
		}
	}
	return 0, fmt.Errorf("no metric %s", name)
}

// dump gathers what a failed scenario's reader needs: the nodes' pools,
// the last ipamd log lines and the last EC2 errors.
func dump(l *lab.Lab) string {
	var b strings.Builder
	for _, n := range l.Nodes() {
		enis, assigned, err := n.IpamdENIs()
		fmt.Fprintf(&b, "node %s (%s): ipamd ENIs %v, %d assigned, err %v\n", n.Name, n.Instance.ID, enis, len(assigned), err)
		log := strings.Split(strings.TrimSpace(n.IpamdLog()), "\n")
		if len(log) > 25 {
			log = log[len(log)-25:]
		}
		fmt.Fprintf(&b, "ipamd log (last lines):\n%s\n", strings.Join(log, "\n"))
	}
	errs := l.Events(ec2query.EventFilter{ErrorsOnly: true})
	if len(errs) > 20 {
		errs = errs[len(errs)-20:]
	}
	for _, e := range errs {
		j, _ := json.Marshal(map[string]any{"time": e.EventTime, "action": e.EventName, "code": e.ErrorCode})
		fmt.Fprintln(&b, string(j))
	}
	return b.String()
}

// Int is a helper for writing expectations in Go.
func Int(v int) *int { return &v }

// RunFile runs a scenario (a YAML file, or a built-in one by name or
// slug) in a lab of its own (named sc + 6 hex digits) built from binDir's
// binaries, with every node on cni when it is set, reporting its steps and
// verdict on out. It returns an error for a scenario it cannot find or
// read, or one that fails; ctx cancelled (Ctrl-C) stops it and tears its
// lab down.
func RunFile(ctx context.Context, path, binDir string, cni lab.CNI, out io.Writer) error {
	s, err := Find(path)
	if err != nil {
		return err
	}
	name := labName()
	fmt.Fprintf(out, "scenario %q in lab %s (vpclab status --name %s while it runs)\n", s.Name, name, name)
	if cni.Kind != "" && !s.AppliesTo(cni) {
		fmt.Fprintf(out, "  note: its expectations are written for %v, not %s; differences may be known deltas\n", implementations(s), cni)
	}
	r := Runner{BinDir: binDir, Owner: "scenario", CNI: cni, Log: func(f string, a ...any) { fmt.Fprintf(out, "  "+f+"\n", a...) }}
	res := r.Run(ctx, s, name)
	took := res.Duration.Round(100 * time.Millisecond)
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("interrupted; lab %s removed", name)
	case res.Passed:
		fmt.Fprintf(out, "PASS %s (%s)\n", res.Scenario, took)
		return nil
	}
	fmt.Fprintf(out, "FAIL %s (%s)\n  %s\n%s", res.Scenario, took, strings.Join(res.Failures, "\n  "), res.Dump)
	return fmt.Errorf("scenario %q failed", res.Scenario)
}

// implementations lists the CNIs a scenario's expectations are written for.
func implementations(s Scenario) []string {
	if len(s.Implementations) == 0 {
		return []string{lab.CNIVpclab}
	}
	return s.Implementations
}

// LoadError is a scenario file that could not be read or parsed.
type LoadError struct{ Err error }

func (e *LoadError) Error() string { return e.Err.Error() }
func (e *LoadError) Unwrap() error { return e.Err }
