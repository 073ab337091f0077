package scenarios_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"

	"github.com/vpclab/vpclab/lab"
	"github.com/vpclab/vpclab/scenarios"
)

// The suite runs its scenarios ahead of their specs, several at a time:
// each lab is independent (its own namespaces, region and control socket),
// and most of a scenario's time is spent waiting for timers. A spec waits
// for its scenario's result and reports it. The longest start first
// (Kubernetes, then the real VPC CNI's, whose pool ticks every 5 s), and a
// Kubernetes scenario counts double (a control plane, kubelets and
// containerd are heavy on two cores). VPCLAB_SCENARIO_PARALLEL sets the
// width (default 4; 1 runs them one after another).

// entry is one scenario run the suite will report.
type entry struct {
	s      scenarios.Scenario
	cni    lab.CNI
	text   string // the spec's full text
	labels []string
	once   sync.Once
	done   chan struct{}
	res    scenarios.Result
	logMu  sync.Mutex // a lab brings its nodes up in parallel, each logging
	log    bytes.Buffer
}

type pool struct {
	entries []*entry
	start   sync.Once
	width   int
	mu      sync.Mutex
	cond    *sync.Cond
	busy    int
}

var scenarioPool = &pool{}

// add registers a run and returns its entry.
func (p *pool) add(s scenarios.Scenario, cni lab.CNI, text string, labels []string) *entry {
	e := &entry{s: s, cni: cni, text: text, labels: labels, done: make(chan struct{})}
	p.entries = append(p.entries, e)
	return e
}

// result starts the scheduler (once) and waits for e's run.
func (p *pool) result(e *entry) scenarios.Result {
	p.start.Do(p.schedule)
	e.once.Do(func() { go p.runOne(e, 1) }) // a spec the filters below did not foresee
	<-e.done
	return e.res
}

// schedule starts, in spec order, the runs the suite's filters select.
func (p *pool) schedule() {
	p.width = 4
	if v, err := strconv.Atoi(os.Getenv("VPCLAB_SCENARIO_PARALLEL")); err == nil && v > 0 {
		p.width = v
	}
	p.cond = sync.NewCond(&p.mu)
	suite, _ := GinkgoConfiguration()
	picked := slices.DeleteFunc(slices.Clone(p.entries), func(e *entry) bool { return !selected(suite, e) })
	rank := func(e *entry) int {
		switch {
		case slices.Contains(e.labels, "kubernetes"):
			return 0
		case e.cni.IsUpstream():
			return 1
		}
		return 2
	}
	slices.SortStableFunc(picked, func(a, b *entry) int { return rank(a) - rank(b) })
	go func() {
		for _, e := range picked {
			weight := 1
			if slices.Contains(e.labels, "kubernetes") {
				weight = min(2, p.width)
			}
			p.acquire(weight)
			e.once.Do(func() { go p.runOne(e, weight) })
		}
	}()
}

func (p *pool) acquire(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.busy+n > p.width {
		p.cond.Wait()
	}
	p.busy += n
}

func (p *pool) release(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.busy -= n
	p.cond.Broadcast()
}

// runOne runs e and frees its weight in the pool (0 when it took none).
func (p *pool) runOne(e *entry, weight int) {
	defer close(e.done)
	if p.cond != nil {
		defer p.release(weight)
	}
	logf := func(f string, a ...any) {
		e.logMu.Lock()
		defer e.logMu.Unlock()
		fmt.Fprintf(&e.log, f+"\n", a...)
	}
	if e.cni.IsUpstream() {
		if _, err := lab.BuildCNI(context.Background(), e.cni, logf); err != nil {
			e.res = scenarios.Result{Scenario: e.s.Name, Failures: []string{"build " + e.cni.String() + ": " + err.Error()}}
			return
		}
	}
	r := scenarios.Runner{BinDir: *bins, CNI: e.cni, Log: logf}
	e.res = r.Run(context.Background(), e.s, labName())
}

// selected applies the suite's label filter, focus and skip to e as
// Ginkgo will.
func selected(suite types.SuiteConfig, e *entry) bool {
	if f, err := types.ParseLabelFilter(suite.LabelFilter); err == nil && !f(e.labels) {
		return false
	}
	match := func(res []string) bool {
		for _, r := range res {
			if re, err := regexp.Compile(r); err == nil && re.MatchString(e.text) {
				return true
			}
		}
		return false
	}
	if len(suite.FocusStrings) > 0 && !match(suite.FocusStrings) {
		return false
	}
	return !match(suite.SkipStrings)
}
