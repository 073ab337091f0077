package scenarios

import (
	"time"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/lab"
)

// StepResult is what one expect step found, for the stretch of actions
// since the previous one, on its node.
type StepResult struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"duration"`
	// Start and End bound the stretch (its first action, the expect
	// step's end).
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Pods on the node and pod adds (all nodes) that failed in the stretch.
	Pods       int `json:"pods"`
	FailedAdds int `json:"failedAdds"`
	// Nodes are the stretch's pod adds per node, with failures and
	// kubelet-like retries.
	Nodes map[string]NodeStats `json:"nodes,omitempty"`
	// Pool figures (ipamd's metrics; ENIs as EC2 sees them); -1 when the
	// node did not answer.
	TotalIPs    int `json:"totalIPs"`
	AssignedIPs int `json:"assignedIPs"`
	Prefixes    int `json:"prefixes"`
	ENIs        int `json:"enis"`
	// Calls counts the EC2 calls made during the stretch by action;
	// Mutating and Describe split their total.
	Calls    map[string]int `json:"calls"`
	Mutating int            `json:"mutating"`
	Describe int            `json:"describe"`
	// Errors counts EC2 error codes answered during the stretch.
	Errors map[string]int `json:"errors"`
	// Checks are the step's expectations with their measured values.
	Checks []Check `json:"checks"`
	// Reached is, per waited-for value ("awscni_total_ip_addresses=29"),
	// how long after the stretch began it held; -1 if it never did.
	Reached map[string]time.Duration `json:"reached"`
	// Failures are the stretch's failures.
	Failures []string `json:"failures,omitempty"`
}

// NodeStats counts one node's pod adds in a stretch.
type NodeStats struct {
	Adds    int `json:"adds"`
	Failed  int `json:"failed"`
	Retries int `json:"retries"`
}

// lastSeq is the sequence number of the lab's latest EC2 event.
func lastSeq(l *lab.Lab) uint64 {
	ev := l.Events(ec2query.EventFilter{Limit: 1})
	if len(ev) == 0 {
		return 0
	}
	return ev[len(ev)-1].Seq
}

// observe records a finished stretch.
func observe(l *lab.Lab, n *lab.Node, name string, seg segment, failed, pods int, checks []Check, stats map[string]*NodeStats) StepResult {
	r := StepResult{Name: name, Duration: time.Since(seg.start), Start: seg.start, End: time.Now(), Pods: pods, FailedAdds: failed, Calls: map[string]int{}, Errors: map[string]int{},
		Checks: checks, Reached: map[string]time.Duration{}}
	for _, c := range checks {
		if c.After != 0 {
			r.Reached[c.What+"="+c.Want] = c.After
		}
	}
	if len(stats) > 0 {
		r.Nodes = map[string]NodeStats{}
		for k, v := range stats {
			r.Nodes[k] = *v
		}
	}
	for _, e := range l.Events(ec2query.EventFilter{SinceSeq: seg.seq}) {
		r.Calls[e.EventName]++
		if e.ReadOnly {
			r.Describe++
		} else {
			r.Mutating++
		}
		if e.ErrorCode != "" {
			r.Errors[e.ErrorCode]++
		}
	}
	figure := func(name string) int {
		v, err := metric(n, name)
		if err != nil {
			return -1
		}
		return v
	}
	r.TotalIPs, r.AssignedIPs, r.Prefixes = figure("awscni_total_ip_addresses"), figure("awscni_assigned_ip_addresses"), figure("awscni_total_ipv4_prefixes")
	r.ENIs = attachedENIs(l, n)
	return r
}
