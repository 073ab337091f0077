package scenarios

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/lab"
)

// AddPods adds Count pods to each of its nodes (the step's node, or Nodes:
// names, or [all]), the nodes in parallel (a boot storm), on each node up
// to Parallel at once (default 1), started at most Rate per second per
// node when set. Each pod is retried the way a kubelet retries a sandbox
// (its DEL first, back-off 100 ms doubling to 2 s) for Timeout (default
// 30 s) before it counts as failed; failures and retries are counted per
// node, not fatal.
type AddPods struct {
	Count    int            `yaml:"count"`
	Parallel int            `yaml:"parallel,omitempty"`
	Timeout  model.Duration `yaml:"timeout,omitempty"`
	Nodes    []string       `yaml:"nodes,omitempty"`
	Rate     float64        `yaml:"rate,omitempty"`
}

// UnmarshalYAML reads a count or the full form.
func (a *AddPods) UnmarshalYAML(v *yaml.Node) error {
	type plain AddPods
	return scalarOr(v, &a.Count, (*plain)(a))
}

func (a *AddPods) validate(s *Scenario) error {
	switch {
	case a.Count < 1:
		return fmt.Errorf("addPods: count %d: want at least 1", a.Count)
	case a.Parallel < 0 || a.Parallel > 64:
		return fmt.Errorf("addPods: parallel %d: want 1..64", a.Parallel)
	case a.Timeout < 0 || a.Rate < 0:
		return errors.New("addPods: timeout and rate must not be negative")
	}
	return nil
}

func (a *AddPods) String() string {
	s := fmt.Sprintf("add %d pods", a.Count)
	if len(a.Nodes) > 0 {
		s += " on each of " + strings.Join(a.Nodes, ", ")
	}
	if a.Parallel > 1 {
		s += fmt.Sprintf(", %d at a time", a.Parallel)
	}
	if a.Rate > 0 {
		s += fmt.Sprintf(", %g/s", a.Rate)
	}
	return s
}

func (a *AddPods) apply(ctx context.Context, x *run, n *lab.Node) error {
	nodes, err := x.nodes(a.Nodes, n)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x.addPodsOn(ctx, n, a)
		}()
	}
	wg.Wait()
	return nil
}

// addPodsOn adds a's pods to one node.
func (x *run) addPodsOn(ctx context.Context, n *lab.Node, a *AddPods) {
	timeout := time.Duration(a.Timeout)
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	sem := make(chan struct{}, max(a.Parallel, 1))
	var wg sync.WaitGroup
	for k := range a.Count {
		if a.Rate > 0 && k > 0 {
			time.Sleep(time.Duration(float64(time.Second) / a.Rate))
		}
		name := x.podName()
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			retries := 0
			p, err := n.AddPodAttempts(ctx, "scenario", name, timeout, func(_ int, _ error, wait time.Duration) {
				if wait > 0 {
					retries++
				}
			})
			x.addedPod(n, p, err, retries)
		}()
	}
	wg.Wait()
}

// podName is the next pod's name (p1, p2, …).
func (x *run) podName() string {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.seq++
	return fmt.Sprintf("p%d", x.seq)
}

// addedPod records one pod's outcome: its failure, or the pod, after
// checking it did not get an address still cooling down.
func (x *run) addedPod(n *lab.Node, p *lab.Pod, err error, retries int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	st := x.stats(n.Name)
	st.Adds++
	st.Retries += retries
	if err != nil {
		st.Failed++
		x.failedAdds++
		x.note("pod add failed on %s: %v", n.Name, err)
		return
	}
	x.note("pod %s added on %s: %s (%d retries)", p.Name, n.Name, p.IP, retries)
	if t, ok := x.released[p.IP.String()]; ok && x.s.Cooldown > 0 && time.Since(t) < time.Duration(x.s.Cooldown) {
		x.failLocked("pod %s got %s, released only %s ago (cooldown %s)", p.Name, p.IP, time.Since(t).Round(time.Millisecond), time.Duration(x.s.Cooldown))
	}
	x.pods = append(x.pods, podRef{n, p})
}

// stats returns node's counters since the last expect step (x.mu held).
func (x *run) stats(node string) *NodeStats {
	st, ok := x.nodeStats[node]
	if !ok {
		st = &NodeStats{}
		x.nodeStats[node] = st
	}
	return st
}

// DelPods deletes the Count oldest pods of each of its nodes.
type DelPods struct {
	Count int      `yaml:"count"`
	Nodes []string `yaml:"nodes,omitempty"`
}

// UnmarshalYAML reads a count or the full form.
func (d *DelPods) UnmarshalYAML(v *yaml.Node) error {
	type plain DelPods
	return scalarOr(v, &d.Count, (*plain)(d))
}

func (d *DelPods) validate(*Scenario) error {
	if d.Count < 1 {
		return fmt.Errorf("delPods: count %d: want at least 1", d.Count)
	}
	return nil
}

func (d *DelPods) String() string { return fmt.Sprintf("delete the %d oldest pods", d.Count) }

func (d *DelPods) apply(ctx context.Context, x *run, n *lab.Node) error {
	nodes, err := x.nodes(d.Nodes, n)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		for range d.Count {
			x.mu.Lock()
			idx := slices.IndexFunc(x.pods, func(p podRef) bool { return p.node == n })
			if idx < 0 {
				x.mu.Unlock()
				return fmt.Errorf("no pod left to delete on %s", n.Name)
			}
			p := x.pods[idx]
			x.pods = slices.Delete(x.pods, idx, idx+1)
			x.mu.Unlock()
			if err := n.DelPod(ctx, p.pod); err != nil {
				return err
			}
			x.mu.Lock()
			x.released[p.pod.IP.String()] = time.Now()
			x.note("pod %s deleted on %s: %s released", p.pod.Name, n.Name, p.pod.IP)
			x.mu.Unlock()
		}
	}
	return nil
}

// nodes resolves a step's node list: none means def, [all] every node.
func (x *run) nodes(names []string, def *lab.Node) ([]*lab.Node, error) {
	if len(names) == 0 {
		return []*lab.Node{def}, nil
	}
	if len(names) == 1 && names[0] == "all" {
		return x.l.Nodes(), nil
	}
	var out []*lab.Node
	for _, name := range names {
		n := x.l.Node(name)
		if n == nil {
			return nil, fmt.Errorf("no node %q", name)
		}
		out = append(out, n)
	}
	return out, nil
}

func countOn(pods []podRef, n *lab.Node) int {
	c := 0
	for _, p := range pods {
		if p.node == n {
			c++
		}
	}
	return c
}
