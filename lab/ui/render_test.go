package ui

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/lab"
)

// TestRenderStatic renders a made-up run without a lab: every node, ENI,
// branch and pod in the topology under the ENI holding its address, the
// pools drawn, a throttled call marked on the timeline and linked to its
// row, a fault window, text from EC2 escaped, and the live script only on
// a live page.
func TestRenderStatic(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	snap := lab.Snapshot{Taken: t0.Add(30 * time.Second),
		Status: lab.Status{Name: "x", VPCID: "vpc-1", Region: "us-west-2",
			Subnets: []lab.SubnetStatus{{ID: "subnet-1", Name: "a", CIDR: "10.0.0.0/24", AZ: "us-west-2a", Available: 200, Usable: 251}},
			Nodes: []lab.NodeStatus{{Name: "node-1", InstanceID: "i-1", InstanceType: "m5.large", PrivateIP: "10.0.0.5",
				ENIs: []lab.ENIStatus{
					{ID: "eni-0", Device: 0, SubnetID: "subnet-1", Type: "interface", Secondary: []string{"10.0.0.7"}},
					{ID: "eni-t", Device: 1, SubnetID: "subnet-1", Type: "trunk", Branches: []lab.BranchStatus{{ID: "eni-b", VLAN: 3, IP: "10.0.0.9", Groups: []string{"sg-1"}}}},
				},
				Pods: []lab.PodStatus{{Namespace: "default", Name: "p1", IP: "10.0.0.7"}, {Namespace: "default", Name: "sgp", IP: "10.0.0.9"}, {Namespace: "kube-system", Name: "host", IP: "10.0.0.5"}},
			}}},
		Timeline: lab.Timeline{Start: t0, Interval: time.Second,
			Pools:  []lab.PoolSample{{T: t0, Node: "node-1", TotalIPs: 0}, {T: t0.Add(5 * time.Second), Node: "node-1", TotalIPs: 9, AssignedIPs: 1}},
			Pods:   []lab.PodOp{{T: t0.Add(6 * time.Second), Node: "node-1", Pod: "default/p1", Op: "ADD", LatencyMs: 12}, {T: t0.Add(7 * time.Second), Node: "node-1", Pod: "default/p2", Op: "ADD", Err: "no address"}},
			Marks:  []lab.Mark{{T: t0.Add(9 * time.Second), Node: "node-1", Kind: "ipamd restarted"}},
			Faults: []lab.FaultWindow{{ID: "f-1", Action: "CreateNetworkInterface", Code: "RequestLimitExceeded", From: t0.Add(time.Second), To: t0.Add(4 * time.Second), Hits: 2}},
		},
		Events: []ec2query.Record{
			{Seq: 1, EventTime: t0.Add(2 * time.Second), EventName: "CreateNetworkInterface", ErrorCode: "RequestLimitExceeded", ErrorMessage: "Request limit exceeded <b>", UserIdentity: ec2query.Identity{InstanceID: "i-1"}},
			{Seq: 2, EventTime: t0.Add(3 * time.Second), EventName: "CreateNetworkInterface"},
		},
	}
	var b bytes.Buffer
	if err := Write(&b, Page{Title: "t", Runs: []Run{{Snap: snap}}}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		`data-node="node-1"`, `data-eni="eni-0"`, `data-eni="eni-t"`, `data-eni="eni-b"`, `branch, VLAN 3`,
		`class="pool-total"`, `class="fault" data-fault="f-1"`, `class="mark" data-kind="ipamd restarted"`, `class="pod-op failed"`,
		`<a href="#run1-ev-1" class="call-error throttled" data-code="RequestLimitExceeded"`, `<tr id="run1-ev-1" class="throttled">`,
		`Request limit exceeded &lt;b&gt;`, `other pods:`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	// each pod under the ENI that holds its address
	eni0 := out[strings.Index(out, `data-eni="eni-0"`):strings.Index(out, `data-eni="eni-t"`)]
	if !strings.Contains(eni0, `data-pod="default/p1"`) {
		t.Error("p1 not listed under eni-0")
	}
	branch := out[strings.Index(out, `data-eni="eni-b"`):]
	if !strings.Contains(branch[:strings.Index(branch, "</tr>")], `data-pod="default/sgp"`) {
		t.Error("the branch pod not listed under its branch ENI")
	}
	if strings.Contains(out, "<script") || strings.Contains(out, "<b>") {
		t.Error("a report has no script and no unescaped EC2 text")
	}
	b.Reset()
	if err := Write(&b, Page{Title: "t", Runs: []Run{{Snap: snap}}, Live: true}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `fetch("fragment"`) || !strings.Contains(b.String(), `http-equiv="refresh"`) {
		t.Error("a live page refreshes itself (script, and a reload without JavaScript)")
	}
}
