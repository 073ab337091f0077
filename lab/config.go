package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/yamlx"
)

// Config declares a lab: the world first (VPC, subnets, nodes), then the
// aws-node settings, faults and throttling. It loads from YAML.
type Config struct {
	// Name prefixes every kernel object (1–8 of [a-z0-9], a letter first).
	Name   string `yaml:"name"`
	Region string `yaml:"region"`
	// VPCCIDR is the VPC's block; Subnets are carved from it.
	VPCCIDR string         `yaml:"vpcCidr"`
	Subnets []SubnetConfig `yaml:"subnets"`
	Nodes   []NodeConfig   `yaml:"nodes"`
	// Env is the aws-node environment of every node's ipamd.
	Env map[string]string `yaml:"env"`
	// CNI is every node's CNI implementation unless the node names its
	// own: vpclab (default), upstream@VERSION, path:DIR or bin:DIR.
	CNI CNI `yaml:"cni"`
	// Kubernetes makes the lab a Kubernetes cluster (nil: plain nodes,
	// pods added through libcni).
	Kubernetes *KubernetesConfig `yaml:"kubernetes"`
	// Internet adds the internet host behind NAT (default true).
	Internet *bool `yaml:"internet"`
	// Throttling of the EC2 API (off unless set).
	Throttling *ec2query.ThrottleConfig `yaml:"throttling"`
	Faults     []faults.Rule            `yaml:"faults"`
	Timing     model.Timing             `yaml:"timing"`
	// Allocation is how fakeec2 picks the addresses and prefixes nodes get
	// (default: random from Seed, avoiding what was released in the last
	// minute, as EC2 behaves; "lowest" for predictable addresses).
	Allocation model.Allocation `yaml:"allocation"`
	Seed       uint64           `yaml:"seed"`
	// BinDir holds ipamd, aws-cni, egress-cni and aws-vpc-cni (default: next to the
	// running executable, or $VPCLAB_BIN).
	BinDir string `yaml:"binDir"`
	// RefPluginsDir holds the reference CNI plugins loopback, portmap and
	// bandwidth (default: cni/ in BinDir, where make build puts them).
	RefPluginsDir string `yaml:"refPluginsDir"`
	// StateDir is where node directories live (default /run/vpclab).
	StateDir string `yaml:"stateDir"`
	// IpamdRestart is what happens when a node's ipamd exits by itself:
	// restart it after a delay, as a kubelet restarts aws-node ("1s", the
	// default), or "never" (scenarios that control restarts themselves).
	IpamdRestart Restart `yaml:"ipamdRestart" json:"ipamdRestart"`
	// TimeScale multiplies the lab's start-up deadlines (the fabric, the
	// control plane, containerd, nodes and aws-node Ready) on a slow
	// machine: a VM under software emulation (TCG) runs ~16× slower than
	// its host. 0 or 1: the deadlines as they are.
	TimeScale int `yaml:"timeScale" json:"timeScale,omitempty"`
	// Owner says what runs the lab (up, demo, scenario, test …); other
	// commands show it. Not part of a lab file.
	Owner string `yaml:"-" json:"owner,omitempty"`
}

// Restart is an ipamd restart policy: a delay, or never.
type Restart struct {
	Never bool
	Delay time.Duration
}

// delay is the wait before a restart (1 s unless set).
func (r Restart) delay() time.Duration {
	if r.Delay <= 0 {
		return time.Second
	}
	return r.Delay
}

// String is "never" or the delay.
func (r Restart) String() string {
	if r.Never {
		return "never"
	}
	return r.delay().String()
}

// MarshalText implements encoding.TextMarshaler.
func (r Restart) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads "never" or a duration.
func (r *Restart) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	switch s {
	case "never":
		*r = Restart{Never: true}
		return nil
	case "":
		*r = Restart{}
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return fmt.Errorf("ipamdRestart %q: want a duration such as 1s, or never", s)
	}
	*r = Restart{Delay: d}
	return nil
}

func (c *Config) ownerKind() string {
	if c.Owner == "" {
		return "process"
	}
	return c.Owner
}

// nodeSpecs expands the node declarations (count) into nodes, each with
// its whole environment: the lab's base (CLUSTER_NAME the lab's name), the
// lab's env, the node's env.
func (c *Config) nodeSpecs() []nodeSpec {
	var specs []nodeSpec
	for _, nc := range c.Nodes {
		for _, name := range nc.Names() {
			env := baseNodeEnv()
			// The cluster is the lab, as aws-node's manifest names it in EKS:
			// the ENIs the CNI creates carry it, and its leaked-ENI sweep
			// keeps to it.
			env["CLUSTER_NAME"] = c.Name
			for k, v := range c.Env {
				env[k] = v
			}
			for k, v := range nc.Env {
				env[k] = v
			}
			cni := c.CNI
			if nc.CNI.Kind != "" {
				cni = nc.CNI
			}
			if cni.Kind == "" {
				cni = CNI{Kind: CNIVpclab}
			}
			specs = append(specs, nodeSpec{name: name, cfg: nc, env: env, cni: cni})
		}
	}
	return specs
}

// Names are the node names a declaration makes: Name, or Name-1 … Name-N.
func (n NodeConfig) Names() []string {
	if n.Count <= 1 {
		return []string{n.Name}
	}
	out := make([]string, n.Count)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", n.Name, i+1)
	}
	return out
}

// SubnetConfig is one subnet.
type SubnetConfig struct {
	Name string `yaml:"name"`
	CIDR string `yaml:"cidr"`
	AZ   string `yaml:"az"`
	// Tags are the subnet's EC2 tags (e.g. kubernetes.io/role/cni: "1",
	// which opts a secondary subnet into the VPC CNI's subnet discovery).
	Tags map[string]string `yaml:"tags,omitempty"`
}

// NodeConfig declares nodes (Count of them, named Name-1…, or Name).
type NodeConfig struct {
	Name         string            `yaml:"name"`
	InstanceType string            `yaml:"instanceType"`
	Subnet       string            `yaml:"subnet"` // subnet name; default the first
	Count        int               `yaml:"count"`
	Env          map[string]string `yaml:"env"`
	// CNI overrides the lab's CNI for this node (two versions can run
	// side by side in one region).
	CNI CNI `yaml:"cni"`
	// HostNamespace makes the node an existing network namespace (e.g.
	// /proc/1/ns/net: the machine itself, as in the Vagrant cluster)
	// instead of a new one; its ENI links are named LinkPrefix+"ethN".
	HostNamespace string `yaml:"hostNamespace"`
	LinkPrefix    string `yaml:"linkPrefix"`
	// HostPaths uses the machine's real /var/run/aws-node, /opt/cni/bin,
	// /etc/cni/net.d and /var/log/aws-routed-eni instead of a private
	// mount namespace (with HostNamespace: the machine is the node).
	HostPaths bool `yaml:"hostPaths"`
	// Labels are the node's Kubernetes labels, set by its kubelet
	// (--node-labels) as EKS node groups set them, e.g.
	// k8s.amazonaws.com/eniConfig naming its ENIConfig (Kubernetes labs).
	Labels map[string]string `yaml:"labels"`
}

// Default is `vpclab up` without a file: a VPC 192.168.0.0/16 in the
// default region with one /19 subnet per AZ and two m5.large nodes.
func Default() Config {
	c := Config{Region: model.DefaultRegion, VPCCIDR: "192.168.0.0/16", Nodes: []NodeConfig{{Name: "node", InstanceType: "m5.large", Count: 2}}}
	for i, az := range model.ZoneNames(c.Region) {
		c.Subnets = append(c.Subnets, SubnetConfig{Name: az[len(az)-1:], CIDR: fmt.Sprintf("192.168.%d.0/19", 32*i), AZ: az})
	}
	return c
}

// SetDefaults fills in what a config may leave out: the region, subnet
// names and zones, the directories.
func (c *Config) SetDefaults() {
	// The caller's slices are not ours to write (a scenario's lab is
	// brought up by several runs at once).
	c.Subnets, c.Nodes = slices.Clone(c.Subnets), slices.Clone(c.Nodes)
	if c.Region == "" {
		c.Region = model.DefaultRegion
	}
	for i := range c.Subnets {
		if c.Subnets[i].Name == "" {
			c.Subnets[i].Name = fmt.Sprintf("subnet%d", i)
		}
		if c.Subnets[i].AZ == "" {
			c.Subnets[i].AZ = c.Region + "a"
		}
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.BinDir == "" {
		c.BinDir = DefaultBinDir()
	}
	if c.RefPluginsDir == "" {
		c.RefPluginsDir = filepath.Join(c.BinDir, "cni")
	}
}

// LoadConfig reads a YAML lab file; unknown fields are errors.
func LoadConfig(path string) (Config, error) {
	var v Config
	if err := yamlx.Load(path, &v); err != nil {
		return Config{}, err
	}
	return v, nil
}

// DefaultBinDir is where a lab finds its binaries unless told: $VPCLAB_BIN,
// else the running executable's directory (make build puts them together).
func DefaultBinDir() string {
	if d := os.Getenv("VPCLAB_BIN"); d != "" {
		return d
	}
	self, _ := os.Executable()
	return filepath.Dir(self)
}

// slow is a start-up deadline d stretched by TimeScale.
func (c *Config) slow(d time.Duration) time.Duration {
	return d * time.Duration(max(c.TimeScale, 1))
}
