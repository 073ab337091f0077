package scenarios

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/imds"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/ipamd"
	"github.com/vpclab/vpclab/lab"
)

// FaultRules installs fault rules (one mapping or a list), in order after
// the ones already installed. A rule's caller may name a lab node: it
// matches the calls that node's instance makes.
type FaultRules []faults.Rule

// UnmarshalYAML reads one rule or a list of rules.
func (f *FaultRules) UnmarshalYAML(v *yaml.Node) error {
	if v.Kind == yaml.MappingNode {
		var r faults.Rule
		if err := decodeStrict(v, &r); err != nil {
			return err
		}
		*f = FaultRules{r}
		return nil
	}
	var rules []faults.Rule
	if err := decodeStrict(v, &rules); err != nil {
		return err
	}
	*f = rules
	return nil
}

func (f FaultRules) validate(*Scenario) error {
	for i := range f {
		if err := f[i].Validate(); err != nil {
			return err
		}
		if err := checkTemplates("fault: match", f[i].Match); err != nil {
			return err
		}
	}
	return nil
}

func (f FaultRules) apply(_ context.Context, x *run, _ *lab.Node) error {
	rules := make([]faults.Rule, len(f))
	for i, r := range f {
		if n := x.l.Node(r.Caller); n != nil {
			r.Caller = n.Instance.ID
		}
		m, err := x.expand(r.Match)
		if err != nil {
			return fmt.Errorf("fault %s: %w", r.Action, err)
		}
		r.Match = m
		rules[i] = r
	}
	_, err := x.l.Faults().Add(rules...)
	return err
}

func (f FaultRules) String() string {
	var parts []string
	for _, r := range f {
		parts = append(parts, r.String())
	}
	return "fault " + strings.Join(parts, "; ")
}

// ClearFaults removes every fault rule.
type ClearFaults bool

func (c ClearFaults) apply(_ context.Context, x *run, _ *lab.Node) error {
	if c {
		x.l.Faults().Clear()
	}
	return nil
}

func (c ClearFaults) String() string { return "clear every fault rule" }

// RestartIpamd SIGKILLs the node's ipamd (if it runs) and starts it again,
// waiting until it serves.
type RestartIpamd bool

func (r RestartIpamd) apply(ctx context.Context, _ *run, n *lab.Node) error {
	if !r {
		return nil
	}
	return n.RestartIpamd(ctx)
}

func (r RestartIpamd) String() string { return "SIGKILL ipamd and start it again" }

// Sleep waits. Prefer an expect step's eventually: a sleep's length is a
// guess, a condition is not.
type Sleep model.Duration

func (s Sleep) apply(ctx context.Context, _ *run, _ *lab.Node) error {
	select {
	case <-time.After(time.Duration(s)):
	case <-ctx.Done():
	}
	return nil
}

func (s Sleep) String() string { return "sleep " + time.Duration(s).String() }

// UnmarshalYAML reads a duration (1s, 500ms).
func (s *Sleep) UnmarshalYAML(v *yaml.Node) error { return v.Decode((*model.Duration)(s)) }

// MarshalYAML writes the duration.
func (s Sleep) MarshalYAML() (any, error) { return model.Duration(s).String(), nil }

// LeakENIs creates detached ENIs tagged for the node and the lab's cluster,
// created Age ago (1 h by default), as a crash between create and attach
// leaves them.
type LeakENIs struct {
	Count int            `yaml:"count"`
	Age   model.Duration `yaml:"age,omitempty"`
}

// UnmarshalYAML reads a count or the full form.
func (a *LeakENIs) UnmarshalYAML(v *yaml.Node) error {
	type plain LeakENIs
	return scalarOr(v, &a.Count, (*plain)(a))
}

func (a *LeakENIs) validate(*Scenario) error {
	if a.Count < 1 || a.Age < 0 {
		return fmt.Errorf("leakENIs: count %d, age %s: want a positive count and age", a.Count, a.Age)
	}
	return nil
}

func (a *LeakENIs) apply(_ context.Context, x *run, n *lab.Node) error {
	age := time.Duration(a.Age)
	if age == 0 {
		age = time.Hour
	}
	for range a.Count {
		tags := ipamd.ENITags(n.Instance.ID, x.l.Name(), nil)
		tags[ipamd.TagCreatedAt] = time.Now().Add(-age).UTC().Format(time.RFC3339)
		_, err := x.l.Region().CreateNetworkInterface(model.CreateNetworkInterfaceInput{SubnetID: n.Instance.SubnetID, Description: ipamd.DescriptionPrefix + n.Instance.ID,
			Tags: model.Tags(tags)})
		if err != nil {
			return fmt.Errorf("leak an ENI: %w", err)
		}
	}
	return nil
}

func (a *LeakENIs) String() string {
	return fmt.Sprintf("leak %d detached ENIs tagged for the node", a.Count)
}

// Kill signals the node's ipamd: at once, or the moment EC2 has answered
// a matching call (AfterCall) — after EC2 made the change and before the
// caller reads the answer, the window a crash leaves things in. SIGSTOP
// freezes it; For then resumes it (SIGCONT) that much later. Restart
// starts a killed ipamd again once it is gone.
type Kill struct {
	// Signal is KILL (default), TERM or STOP.
	Signal    string     `yaml:"signal,omitempty"`
	AfterCall *CallMatch `yaml:"afterCall,omitempty"`
	Restart   bool       `yaml:"restart,omitempty"`
	// For is how long a STOP lasts (default: until a later kill step
	// sends CONT).
	For model.Duration `yaml:"for,omitempty"`
}

// CallMatch picks one EC2 call: the Nth (default 1st) answer to Action,
// counted from when the step runs, optionally only calls by Caller (a lab
// node's name or an instance id) and only errors with Code.
type CallMatch struct {
	Action string `yaml:"action"`
	Nth    int    `yaml:"nth,omitempty"`
	Caller string `yaml:"caller,omitempty"`
	Code   string `yaml:"code,omitempty"`
}

var signals = map[string]syscall.Signal{"KILL": syscall.SIGKILL, "TERM": syscall.SIGTERM, "STOP": syscall.SIGSTOP, "CONT": syscall.SIGCONT}

func (k *Kill) signal() syscall.Signal {
	if k.Signal == "" {
		return syscall.SIGKILL
	}
	return signals[strings.TrimPrefix(strings.ToUpper(k.Signal), "SIG")]
}

func (k *Kill) validate(*Scenario) error {
	switch {
	case k.signal() == 0:
		return fmt.Errorf("kill: signal %q: want KILL, TERM, STOP or CONT", k.Signal)
	case k.For > 0 && k.signal() != syscall.SIGSTOP:
		return fmt.Errorf("kill: for is how long a STOP lasts; signal is %s", k.Signal)
	case k.Restart && (k.signal() == syscall.SIGSTOP || k.signal() == syscall.SIGCONT):
		return errors.New("kill: restart follows KILL or TERM")
	case k.AfterCall != nil && (k.AfterCall.Action == "" || k.AfterCall.Nth < 0):
		return errors.New("kill: afterCall needs an action and a non-negative nth")
	}
	return nil
}

func (k *Kill) apply(ctx context.Context, x *run, n *lab.Node) error {
	if k.AfterCall == nil {
		return k.fire(ctx, x, n)
	}
	m := *k.AfterCall
	if c := x.l.Node(m.Caller); c != nil {
		m.Caller = c.Instance.ID
	}
	x.onCall(m, func() {
		if err := k.fire(ctx, x, n); err != nil {
			x.fail("kill after %s #%d: %v", m.Action, max(m.Nth, 1), err)
		}
	})
	return nil
}

// fire sends the signal, then resumes or restarts as asked (in the
// background, so that a call's handler is not held).
func (k *Kill) fire(ctx context.Context, x *run, n *lab.Node) error {
	sig := k.signal()
	if err := n.SignalIpamd(sig); err != nil {
		return err
	}
	x.logf("%s: ipamd sent %s", n.Name, sig)
	switch {
	case sig == syscall.SIGSTOP && k.For > 0:
		x.background(func() {
			select {
			case <-time.After(time.Duration(k.For)):
			case <-ctx.Done():
			}
			if err := n.SignalIpamd(syscall.SIGCONT); err != nil {
				x.fail("resume ipamd on %s: %v", n.Name, err)
			}
		})
	case k.Restart:
		x.background(func() {
			if err := n.RestartIpamd(ctx); err != nil {
				x.fail("restart ipamd on %s: %v", n.Name, err)
			}
		})
	}
	return nil
}

func (k *Kill) String() string {
	s := "send ipamd SIG" + strings.TrimPrefix(strings.ToUpper(k.Signal), "SIG")
	if k.Signal == "" {
		s = "send ipamd SIGKILL"
	}
	if k.AfterCall != nil {
		s += fmt.Sprintf(" when EC2 answers %s #%d", k.AfterCall.Action, max(k.AfterCall.Nth, 1))
	}
	if k.For > 0 {
		s += " for " + k.For.String()
	}
	if k.Restart {
		s += ", then start it again"
	}
	return s
}

// Checkpoint removes (Delete) or garbles (Corrupt) ipamd's checkpoint
// file on the node, as a disk or a bad upgrade might; the next ipamd start
// reads what is left.
type Checkpoint struct {
	Delete  bool `yaml:"delete,omitempty"`
	Corrupt bool `yaml:"corrupt,omitempty"`
}

// CheckpointPath is where ipamd (vpclab's and upstream's) keeps its
// checkpoint on a node.
const CheckpointPath = "/var/run/aws-node/ipam.json"

func (c *Checkpoint) validate(*Scenario) error {
	if c.Delete == c.Corrupt {
		return errors.New("checkpoint: say delete: true or corrupt: true")
	}
	return nil
}

func (c *Checkpoint) apply(_ context.Context, _ *run, n *lab.Node) error {
	// The node's directories are mapped, not its files.
	p := filepath.Join(n.HostPath(filepath.Dir(CheckpointPath)), filepath.Base(CheckpointPath))
	if c.Delete {
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("delete the checkpoint: %w", err)
		}
		return nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("corrupt the checkpoint: %w", err)
	}
	return os.WriteFile(p, b[:len(b)/2], 0o644)
}

func (c *Checkpoint) String() string {
	if c.Delete {
		return "delete ipamd's checkpoint"
	}
	return "truncate ipamd's checkpoint to half"
}

// Apply is a manifest kubectl applies (Kubernetes labs).
type Apply string

func (a Apply) apply(ctx context.Context, x *run, _ *lab.Node) error {
	_, err := x.l.Kubectl(ctx, []byte(a), "apply", "-f", "-")
	return err
}

func (a Apply) validate(s *Scenario) error { return needKube(s, "apply") }

func (a Apply) String() string {
	first, _, _ := strings.Cut(strings.TrimSpace(string(a)), "\n")
	return "kubectl apply (" + first + " …)"
}

// Kubectl is one kubectl command's arguments (Kubernetes labs).
type Kubectl []string

func (k Kubectl) apply(ctx context.Context, x *run, _ *lab.Node) error {
	_, err := x.l.Kubectl(ctx, nil, k...)
	return err
}

func (k Kubectl) validate(s *Scenario) error { return needKube(s, "kubectl") }

func (k Kubectl) String() string { return "kubectl " + strings.Join(k, " ") }

func needKube(s *Scenario, what string) error {
	if s.Lab.Kubernetes == nil {
		return fmt.Errorf("%s needs a Kubernetes lab (lab.kubernetes: {})", what)
	}
	return nil
}

// IMDSFault changes what the node's instance metadata shows for a while,
// apart from EC2 (an imds.Overlay): freeze the whole tree, keep one path
// stale while the rest moves on, hide a path (an attached ENI's MAC), or
// set one (a ghost MAC's fields, a wrong device-number). Path and Value
// are templates as in ec2 steps ({{mac "node" 1}} is an ENI's MAC);
// clear: true removes the node's IMDS faults.
type IMDSFault struct {
	Kind  string         `yaml:"kind,omitempty"`
	Path  string         `yaml:"path,omitempty"`
	Value string         `yaml:"value,omitempty"`
	For   model.Duration `yaml:"for,omitempty"`
	Clear bool           `yaml:"clear,omitempty"`
}

func (f *IMDSFault) validate(*Scenario) error {
	if f.Clear {
		if f.Kind != "" || f.Path != "" {
			return errors.New("imds: clear takes no kind or path")
		}
		return nil
	}
	if err := checkTemplates("imds", map[string]string{"path": f.Path, "value": f.Value}); err != nil {
		return err
	}
	o := imds.Overlay{Kind: f.Kind, Path: f.Path, For: f.For}
	if strings.Contains(f.Path, "{{") {
		o.Path = "x" // checked once expanded
	}
	return o.Validate()
}

func (f *IMDSFault) apply(_ context.Context, x *run, n *lab.Node) error {
	svc := x.l.Server().IMDS()
	if f.Clear {
		svc.ClearOverlays(n.Instance.ID)
		return nil
	}
	m, err := x.expand(map[string]string{"path": f.Path, "value": f.Value})
	if err != nil {
		return err
	}
	_, err = svc.AddOverlay(imds.Overlay{Instance: n.Instance.ID, Kind: f.Kind, Path: m["path"], Value: m["value"], For: f.For})
	return err
}

func (f *IMDSFault) String() string {
	if f.Clear {
		return "clear the node's IMDS faults"
	}
	s := "IMDS " + f.Kind
	if f.Path != "" {
		s += " " + f.Path
	}
	if f.Value != "" {
		s += " = " + f.Value
	}
	if f.For > 0 {
		s += " for " + f.For.String()
	}
	return s
}
