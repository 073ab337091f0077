package scenarios

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/lab"
)

// check checks a step's expectations and returns, for each pool figure it
// waited for, how long after start it held.
func (r Runner) check(ctx context.Context, l *lab.Lab, n *lab.Node, step string, e Expect, failed int, pods []podRef, callsBefore int, start time.Time, fail func(string, ...any)) map[string]time.Duration {
	reached := map[string]time.Duration{}
	if e.FailedAdds != nil && failed != *e.FailedAdds {
		fail("%s: %d pod adds failed, want %d", step, failed, *e.FailedAdds)
	}
	if e.Pods != nil && countOn(pods, n) != *e.Pods {
		fail("%s: %d pods on %s, want %d", step, countOn(pods, n), n.Name, *e.Pods)
	}
	if e.MaxMutatingCalls != nil {
		if c := mutating(l) - callsBefore; c > *e.MaxMutatingCalls {
			fail("%s: %d mutating EC2 calls, want at most %d", step, c, *e.MaxMutatingCalls)
		}
	}
	within := time.Duration(e.Within)
	if within == 0 {
		within = 10 * time.Second
		if n.CNI().IsUpstream() {
			within = 90 * time.Second
		}
		if l.Kubeconfig() != "" { // a kubelet backs off between sandbox retries
			within = 2 * time.Minute
		}
	}
	checks := waits(ctx, l, n, e)
	for _, c := range checks {
		if c.v == nil {
			continue
		}
		deadline := time.Now().Add(within)
		var got int
		var err error
		for {
			got, err = c.get()
			if err == nil && got == *c.v {
				reached[fmt.Sprintf("%s=%d", c.what, *c.v)] = time.Since(start)
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				fail("%s: %s = %d (%v), want %d", step, c.what, got, err, *c.v)
				reached[fmt.Sprintf("%s=%d", c.what, *c.v)] = -1
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for code, mm := range e.Events {
		c := len(l.Events(ec2query.EventFilter{ErrorCode: code}))
		if c < mm[0] || (mm[1] >= 0 && c > mm[1]) {
			fail("%s: %d %s events, want between %d and %d", step, c, code, mm[0], mm[1])
		}
	}
	for reason, mm := range e.PodEvents {
		c, err := l.KubeEvents(ctx, reason)
		if err != nil || c < mm[0] || (mm[1] >= 0 && c > mm[1]) {
			fail("%s: %d %s Kubernetes events (%v), want between %d and %d", step, c, reason, err, mm[0], mm[1])
		}
	}
	return reached
}

// want is one figure a step waits for.
type want struct {
	what string
	v    *int
	get  func() (int, error)
}

// waits are the figures of e a step waits for: the node's pool, its ENIs
// in EC2, and in Kubernetes labs the pods selectors pick.
func waits(ctx context.Context, l *lab.Lab, n *lab.Node, e Expect) []want {
	checks := []want{
		{"awscni_total_ip_addresses", e.TotalIPs, func() (int, error) { return metric(n, "awscni_total_ip_addresses") }},
		{"awscni_assigned_ip_addresses", e.AssignedIPs, func() (int, error) { return metric(n, "awscni_assigned_ip_addresses") }},
		{"awscni_total_ipv4_prefixes", e.Prefixes, func() (int, error) { return metric(n, "awscni_total_ipv4_prefixes") }},
		{"detached ENIs tagged for the node", e.LeakedENIs, func() (int, error) {
			c := 0
			for _, x := range l.Region().NetworkInterfaces() {
				if x.Attachment == nil && x.Tags["node.k8s.amazonaws.com/instance_id"] == n.Instance.ID {
					c++
				}
			}
			return c, nil
		}},
		{"ENIs attached (EC2)", e.ENIs, func() (int, error) {
			c := 0
			for _, x := range l.Region().NetworkInterfaces() {
				if x.Attachment != nil && x.Attachment.InstanceID == n.Instance.ID {
					c++
				}
			}
			return c, nil
		}},
	}
	for _, sel := range slices.Sorted(maps.Keys(e.Running)) {
		checks = append(checks, want{"Running pods on their node's ENIs, " + sel, Int(e.Running[sel]), func() (int, error) {
			return countPods(ctx, l, sel, func(p lab.KubePod) int {
				if p.Phase == "Running" && p.OnNodeENIs && !p.Terminating {
					return 1
				}
				return 0
			})
		}})
	}
	for _, sel := range slices.Sorted(maps.Keys(e.PodRestarts)) {
		checks = append(checks, want{"container restarts, " + sel, Int(e.PodRestarts[sel]), func() (int, error) {
			return countPods(ctx, l, sel, func(p lab.KubePod) int {
				if p.Terminating {
					return 0
				}
				return p.Restarts
			})
		}})
	}
	return checks
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
