package lab_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/lab"
)

// TestValidate pins, without root, what a lab config may and may not say;
// each refusal names the field.
func TestValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		mod  func(*lab.Config)
		want string // "" for valid
	}{
		{"the default", func(*lab.Config) {}, ""},
		{"bad name", func(c *lab.Config) { c.Name = "Bad_Name" }, `name "Bad_Name"`},
		{"no VPC CIDR", func(c *lab.Config) { c.VPCCIDR = "nope" }, "vpcCidr"},
		{"VPC host bits", func(c *lab.Config) { c.VPCCIDR = "192.168.0.1/16" }, "host bits"},
		{"overlapping subnets", func(c *lab.Config) { c.Subnets[1].CIDR = c.Subnets[0].CIDR }, "overlaps subnets[0]"},
		{"subnet outside the VPC", func(c *lab.Config) { c.Subnets[0].CIDR = "10.0.0.0/24" }, "not inside vpcCidr"},
		{"subnet too small", func(c *lab.Config) { c.Subnets[0].CIDR = "192.168.0.0/29" }, "/16 to /28"},
		{"AZ of another region", func(c *lab.Config) { c.Subnets[0].AZ = "eu-west-1a" }, "not an availability zone of region us-west-2"},
		{"duplicate subnet names", func(c *lab.Config) { c.Subnets[1].Name = c.Subnets[0].Name }, "duplicate name"},
		{"unknown instance type", func(c *lab.Config) { c.Nodes[0].InstanceType = "m9.huge" }, "unknown instance type"},
		{"unknown subnet", func(c *lab.Config) { c.Nodes[0].Subnet = "nowhere" }, `subnet "nowhere"`},
		{"node names clash", func(c *lab.Config) {
			c.Nodes = append(c.Nodes, lab.NodeConfig{Name: "node-2", InstanceType: "m5.large"})
		}, `node name "node-2" is already used`},
		{"too many nodes for a /28", func(c *lab.Config) {
			c.Subnets[0].CIDR, c.Nodes[0].Count = "192.168.0.0/28", 12
		}, "11 usable addresses and cannot hold 12 nodes"},
		{"a bad aws-node value", func(c *lab.Config) { c.Env = map[string]string{"WARM_IP_TARGET": "abc"} }, "WARM_IP_TARGET"},
		{"kubelet max pods out of range", func(c *lab.Config) { c.Kubernetes = &lab.KubernetesConfig{MaxPods: 5000} }, "kubernetes.maxPods 5000"},
		{"custom networking without Kubernetes", func(c *lab.Config) { c.Env = map[string]string{"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true"} }, "needs a Kubernetes lab"},
		{"node labels without Kubernetes", func(c *lab.Config) { c.Nodes[0].Labels = map[string]string{"k8s.amazonaws.com/eniConfig": "a"} }, "labels are Kubernetes node labels"},
		{"custom networking", func(c *lab.Config) {
			c.Env = map[string]string{"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true"}
			c.Nodes[0].Labels = map[string]string{"k8s.amazonaws.com/eniConfig": "pods-a"}
			c.Kubernetes = &lab.KubernetesConfig{ENIConfigs: []lab.ENIConfig{{Name: "pods-a", Subnet: c.Subnets[1].Name, SecurityGroups: []string{"default", "sg-0123456789abcdef0"}}}}
		}, ""},
		{"an ENIConfig in no lab subnet", func(c *lab.Config) {
			c.Kubernetes = &lab.KubernetesConfig{ENIConfigs: []lab.ENIConfig{{Name: "x", Subnet: "nowhere"}}}
		}, `kubernetes.eniConfigs[0] (x) subnet "nowhere"`},
		{"an ENIConfig with a group name", func(c *lab.Config) {
			c.Kubernetes = &lab.KubernetesConfig{ENIConfigs: []lab.ENIConfig{{Name: "x", Subnet: c.Subnets[0].Name, SecurityGroups: []string{"web"}}}}
		}, `securityGroups "web"`},
		{"a bad ENIConfig name", func(c *lab.Config) {
			c.Kubernetes = &lab.KubernetesConfig{ENIConfigs: []lab.ENIConfig{{Name: "Pods_A", Subnet: c.Subnets[0].Name}}}
		}, `name "Pods_A"`},
		{"a node label the kubelet may not set", func(c *lab.Config) {
			c.Kubernetes = &lab.KubernetesConfig{}
			c.Nodes[0].Labels = map[string]string{"node-role.kubernetes.io/worker": ""}
		}, `label "node-role.kubernetes.io/worker"`},
		{"a bad node label value", func(c *lab.Config) {
			c.Kubernetes = &lab.KubernetesConfig{}
			c.Nodes[0].Labels = map[string]string{"team": "a,b"}
		}, `label "team" value "a,b"`},
		{"Kubernetes on the machine itself", func(c *lab.Config) {
			c.Kubernetes = &lab.KubernetesConfig{}
			c.Nodes = []lab.NodeConfig{{Name: "vm", InstanceType: "m5.large", HostNamespace: "/proc/self/ns/net", LinkPrefix: "vpc", HostPaths: true}}
		}, ""},
		{"Kubernetes on the machine's paths in a namespace of its own", func(c *lab.Config) {
			c.Kubernetes = &lab.KubernetesConfig{}
			c.Nodes[0].Count, c.Nodes[0].HostPaths = 1, true
		}, "hostPaths in Kubernetes mode needs hostNamespace"},
		{"two Kubernetes nodes on the machine's paths", func(c *lab.Config) {
			c.Kubernetes = &lab.KubernetesConfig{}
			c.Nodes = []lab.NodeConfig{{Name: "a", InstanceType: "m5.large", HostNamespace: "/proc/self/ns/net", LinkPrefix: "a", HostPaths: true},
				{Name: "b", InstanceType: "m5.large", HostNamespace: "/proc/self/ns/net", LinkPrefix: "b", HostPaths: true}}
		}, "2 nodes with hostPaths"},
		{"a negative time scale", func(c *lab.Config) { c.TimeScale = -1 }, "timeScale -1"},
		{"an emulated machine's time scale", func(c *lab.Config) { c.TimeScale = 20 }, ""},
		{"an unknown allocation policy", func(c *lab.Config) { c.Allocation.Policy = "first-fit" }, `allocation.policy "first-fit"`},
		{"a fault without an action", func(c *lab.Config) { c.Faults = append(c.Faults, faults.Rule{Code: "X"}) }, "faults[0]: fault rule \"\": needs an action"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := lab.Default()
			cfg.Name = "test"
			c.mod(&cfg)
			before := cfg.Subnets[0]
			err := cfg.Validate()
			if !reflect.DeepEqual(cfg.Subnets[0], before) {
				t.Errorf("Validate changed the config: %+v -> %+v", before, cfg.Subnets[0])
			}
			switch {
			case c.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("got %v, want an error with %q", err, c.want)
			}
		})
	}
}

// TestOverrides pins up's flags as a config: the common changes, and
// refusals naming the flag the user typed.
func TestOverrides(t *testing.T) {
	file := filepath.Join(t.TempDir(), "lab.yaml")
	if err := os.WriteFile(file, []byte("name: fromfile\nvpcCidr: 10.0.0.0/16\nsubnets: [{name: a, cidr: 10.0.0.0/24}]\nnodes: [{name: n, instanceType: t3.medium, count: 3}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := lab.Overrides{Name: "x", Nodes: 4, NodesSet: true, InstanceType: "m5.xlarge", Env: []string{"WARM_IP_TARGET=3"}, IpamdRestart: "never"}.Config()
	if err != nil || cfg.Name != "x" || cfg.Nodes[0].Count != 4 || cfg.Nodes[0].InstanceType != "m5.xlarge" || cfg.Env["WARM_IP_TARGET"] != "3" || !cfg.IpamdRestart.Never {
		t.Errorf("overrides: %+v %v", cfg, err)
	}
	if cfg, err = (lab.Overrides{Name: "x", Allocation: "lowest"}).Config(); err != nil || cfg.Allocation.Policy != "lowest" {
		t.Errorf("--allocation lowest: %+v %v", cfg.Allocation, err)
	}
	cfg, err = lab.Overrides{Name: "vpclab", File: file}.Config()
	if err != nil || cfg.Name != "fromfile" || cfg.Nodes[0].Count != 3 {
		t.Errorf("file keeps its name and nodes: %+v %v", cfg, err)
	}
	cfg, err = lab.Overrides{Name: "x", SubnetCIDR: "192.168.0.0/18"}.Config()
	if err != nil || cfg.Subnets[0].CIDR != "192.168.0.0/18" || len(cfg.Subnets) != 3 {
		t.Errorf("--subnet-cidr /18 moves the other default subnets: %+v %v", cfg.Subnets, err)
	}
	for _, c := range []struct {
		o    lab.Overrides
		want string
	}{
		{lab.Overrides{Name: "x", Nodes: 0, NodesSet: true}, "--nodes 0: want 1..200"},
		{lab.Overrides{Name: "x", SubnetCIDR: "10.0.0.0/24"}, "--subnet-cidr 10.0.0.0/24: not inside vpcCidr"},
		{lab.Overrides{Name: "x", SubnetCIDR: "192.168.4.1/24"}, "--subnet-cidr 192.168.4.1/24: host bits set"},
		{lab.Overrides{Name: "x", Env: []string{"NOEQUALS"}}, "KEY=VALUE"},
		{lab.Overrides{Name: "x", IpamdRestart: "sometimes"}, "--ipamd-restart"},
		{lab.Overrides{Name: "x", Allocation: "first-fit"}, `--allocation "first-fit": want random or lowest`},
		{lab.Overrides{Name: "x", File: "/nonexistent.yaml"}, "-f "},
	} {
		if _, err := c.o.Config(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.o, err, c.want)
		}
	}
}
