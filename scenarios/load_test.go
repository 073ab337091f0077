package scenarios

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/vpclab/vpclab/lab/k8s"
)

// TestBuiltinsLoad pins that every embedded scenario parses, has labels,
// a unique name and slug, and that the Kubernetes ones use the image the
// lab builds.
func TestBuiltinsLoad(t *testing.T) {
	all, err := loadBuiltin()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < 17 {
		t.Fatalf("%d built-in scenarios, want the 17 ported ones at least", len(all))
	}
	seen := map[string]bool{}
	for _, s := range all {
		if len(s.Labels) == 0 || seen[Slug(s.Name)] {
			t.Errorf("%q: labels %v, slug seen before %v", s.Name, s.Labels, seen[Slug(s.Name)])
		}
		seen[Slug(s.Name)] = true
		for _, st := range s.Steps {
			if a, ok := st.Action.(*Apply); ok && strings.Contains(string(*a), "agnhost") && !strings.Contains(string(*a), k8s.AgnhostImage) {
				t.Errorf("%q: manifest does not use %s", s.Name, k8s.AgnhostImage)
			}
		}
		if _, err := BuiltinSource(Slug(s.Name)); err != nil {
			t.Error(err)
		}
	}
	for _, f := range []string{"examples/warm-ip.yaml", "examples/kubernetes-scale-up.yaml"} {
		if _, err := Load(f); err != nil {
			t.Error(err)
		}
	}
}

// TestStepsKeepTheirOrder pins that steps run in the file's order, each
// decoded into its action's type, with shorthand forms.
func TestStepsKeepTheirOrder(t *testing.T) {
	s, err := Parse([]byte(`
name: order
lab: {nodes: [{name: n, instanceType: m5.large}]}
steps:
  - expect: {totalIPs: 9}
  - addPods: 3
  - {name: storm, node: n, addPods: {count: 2, parallel: 2, nodes: [all]}}
  - fault: {action: Assign*, code: RequestLimitExceeded, match: {NetworkInterfaceId: eni-*}, caller: n, nth: 2}
  - fault: [{action: A, code: X}, {action: B, latency: 1s}]
  - sleep: 1s
  - kill: {signal: STOP, for: 2s}
  - ec2: {action: UnassignPrivateIpAddresses, params: {NetworkInterfaceId: '{{eni "n" 0}}'}, expectError: InvalidParameterValue}
  - delPods: 1
  - expect: {eventually: 3s, reach: [internet], calls: {"Describe*": [0, 5]}}
`), "t")
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, st := range s.Steps {
		kinds = append(kinds, st.Kind)
	}
	if got := strings.Join(kinds, " "); got != "expect addPods addPods fault fault sleep kill ec2 delPods expect" {
		t.Fatalf("kinds %s", got)
	}
	if a := s.Steps[1].Action.(*AddPods); a.Count != 3 {
		t.Errorf("addPods: 3 read as %+v", a)
	}
	if a := s.Steps[2].Action.(*AddPods); a.Count != 2 || a.Parallel != 2 || a.Nodes[0] != "all" || s.Steps[2].Name != "storm" || s.Steps[2].Node != "n" {
		t.Errorf("full addPods read as %+v in %+v", a, s.Steps[2])
	}
	if f := *s.Steps[3].Action.(*FaultRules); len(f) != 1 || f[0].Match["NetworkInterfaceId"] != "eni-*" || f[0].Nth != 2 || f[0].Caller != "n" {
		t.Errorf("fault read as %+v", f)
	}
	if f := *s.Steps[4].Action.(*FaultRules); len(f) != 2 {
		t.Errorf("fault list read as %+v", f)
	}
	// A step written back reads the same.
	b, err := yaml.Marshal(s.Steps[2])
	if err != nil || !strings.Contains(string(b), "addPods:") || !strings.Contains(string(b), "name: storm") {
		t.Errorf("marshal: %v\n%s", err, b)
	}
}

// TestBadScenariosAreRefused pins one clear error per mistake, naming the
// step and the field, before any lab exists.
func TestBadScenariosAreRefused(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"name: x\nstepz: []\n", "stepz"},
		{"name: x\nlab: {}\nsteps: [{addPod: 3}]\n", `unknown step key "addPod"`},
		{"name: x\nlab: {}\nsteps: [{addPods: 3, delPods: 1}]\n", "one action per step: addPods and delPods"},
		{"name: x\nlab: {}\nsteps: [{name: lonely}]\n", `step "lonely" has no action`},
		{"name: x\nlab: {}\nsteps: [{addPods: {count: 3, paralel: 2}}]\n", "paralel"},
		{"name: x\nlab: {}\nsteps: [{addPods: -1}]\n", "steps[0] (step 1): addPods: count -1"},
		{"name: x\nlab: {}\nsteps: [{kubectl: [get, pods]}]\n", "kubectl needs a Kubernetes lab"},
		{"name: x\nlab: {}\nsteps: [{expect: {running: {app=web: 1}}}]\n", "needs a Kubernetes lab"},
		{"name: x\nlab: {}\nsteps: [{fault: {action: '[', code: X}}]\n", "bad pattern"},
		{"name: x\nlab: {}\nsteps: [{kill: {signal: HUP}}]\n", `signal "HUP"`},
		{"name: x\nlab: {}\nsteps: [{ec2: {params: {A: b}}}]\n", "ec2: needs an action"},
		{"name: x\nlab: {}\nsteps: [{ec2: {action: DeleteNetworkInterface, eventually: 5s}}]\n", "only a read-only action"},
		{"name: x\nlab: {}\nsteps: [{ec2: {action: X, params: {A: '{{eni'}}}]\n", "params.A"},
		{"name: x\nlab: {}\nsteps: [{checkpoint: {}}]\n", "delete: true or corrupt: true"},
		{"name: x\nlab: {}\ntimers: slow\nsteps: [{sleep: 1s}]\n", `timers "slow"`},
		{"name: x\nlab: {}\nsteps: []\n", "at least one step"},
		{"name: x\nlab: {nodes: [{name: n1}]}\nsteps: [{expect: {events: {\"X by n2\": [0, 0]}}}]\n", `no node, peer or ec2 step's principal named "n2"`},
	} {
		_, err := Parse([]byte(c.yaml), "bad.yaml")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one containing %q", c.yaml, err, c.want)
		}
	}
	// A node, a peer and an ec2 step's principal are callers.
	ok := "name: x\nlab: {nodes: [{name: n1}]}\nsteps:\n- peer: {name: p1}\n- ec2: {action: DescribeVpcs, as: ops}\n- ec2: {action: DescribeVpcs}\n" +
		"- expect: {events: {\"X by n1\": [0, 0], \"X by p1\": [0, 0], \"X by ops\": [0, 0], \"X by console\": [0, 0]}}\n"
	if _, err := Parse([]byte(ok), "ok.yaml"); err != nil {
		t.Errorf("callers refused: %v", err)
	}
	// A run of a refused scenario fails at once, without a lab.
	res := Runner{}.Run(context.Background(), Scenario{Name: "x"}, "never-made")
	if res.Passed || len(res.Failures) != 1 || !strings.Contains(res.Failures[0], "at least one step") {
		t.Fatalf("refused scenario run: %v", res.Failures)
	}
}

// TestLayout pins the subnet layout: exactly free addresses left, and with
// noFreePrefix no aligned /28 wholly free.
func TestLayout(t *testing.T) {
	cidr := netip.MustParsePrefix("10.0.0.0/24")
	used := map[netip.Addr]bool{netip.MustParseAddr("10.0.0.4"): true}
	for _, free := range []int{0, 1, 20, 100, 235} {
		for _, nfp := range []bool{false, true} {
			reserve, err := layout(cidr, used, free, nfp)
			if err != nil {
				t.Fatalf("free %d: %v", free, err)
			}
			taken := map[netip.Addr]bool{}
			for a := range used {
				taken[a] = true
			}
			for _, a := range reserve {
				if taken[a] {
					t.Fatalf("%s reserved twice", a)
				}
				taken[a] = true
			}
			left, wholeBlocks := 0, 0
			for b := 0; b < 256; b += 16 {
				inBlock := 0
				for k := b; k < b+16; k++ {
					a := netip.AddrFrom4([4]byte{10, 0, 0, byte(k)})
					if k >= 4 && k != 255 && !taken[a] {
						left++
						inBlock++
					}
				}
				if inBlock == 16 {
					wholeBlocks++
				}
			}
			if left != free || (nfp && wholeBlocks > 0) {
				t.Errorf("free %d noFreePrefix %v: %d left, %d free /28s", free, nfp, left, wholeBlocks)
			}
		}
	}
	if _, err := layout(cidr, used, 300, false); err == nil || !strings.Contains(err.Error(), "only 250 addresses are free") {
		t.Errorf("too many: %v", err)
	}
}

// TestTemplate pins that `scenario new` writes a scenario that loads.
func TestTemplate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "new.yaml")
	if err := os.WriteFile(p, Template(), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Steps) < 5 {
		t.Errorf("template has %d steps", len(s.Steps))
	}
}
