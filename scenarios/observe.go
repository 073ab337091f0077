package scenarios

import (
	"slices"
	"time"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/lab"
)

// StepResult is what one step of a run observed on its node once its
// expectations were checked.
type StepResult struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"duration"`
	// Pods on the node and pod adds that failed in the step.
	Pods       int `json:"pods"`
	FailedAdds int `json:"failedAdds"`
	// Pool figures (ipamd's metrics; ENIs as EC2 sees them); -1 when the
	// node did not answer.
	TotalIPs    int `json:"totalIPs"`
	AssignedIPs int `json:"assignedIPs"`
	Prefixes    int `json:"prefixes"`
	ENIs        int `json:"enis"`
	// Calls counts the EC2 calls made during the step by action; Mutating
	// and Describe split their total.
	Calls    map[string]int `json:"calls"`
	Mutating int            `json:"mutating"`
	Describe int            `json:"describe"`
	// Errors counts EC2 error codes answered during the step.
	Errors map[string]int `json:"errors"`
	// Reached is, per expected pool figure ("awscni_total_ip_addresses=29"),
	// how long after the step started it held; -1 if it never did.
	Reached map[string]time.Duration `json:"reached"`
	// Failures are the step's failed expectations.
	Failures []string `json:"failures,omitempty"`
}

// lastSeq is the sequence number of the lab's latest EC2 event.
func lastSeq(l *lab.Lab) uint64 {
	ev := l.Events(ec2query.EventFilter{Limit: 1})
	if len(ev) == 0 {
		return 0
	}
	return ev[len(ev)-1].Seq
}

// observe records a finished step.
func observe(l *lab.Lab, n *lab.Node, name string, start time.Time, seqBefore uint64, failed, pods int, reached map[string]time.Duration, failures []string) StepResult {
	r := StepResult{Name: name, Duration: time.Since(start), Pods: pods, FailedAdds: failed, Calls: map[string]int{}, Errors: map[string]int{},
		Reached: reached, Failures: slices.Clone(failures)}
	for _, e := range l.Events(ec2query.EventFilter{SinceSeq: seqBefore}) {
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
	for _, x := range l.Region().NetworkInterfaces() {
		if x.Attachment != nil && x.Attachment.InstanceID == n.Instance.ID {
			r.ENIs++
		}
	}
	return r
}
