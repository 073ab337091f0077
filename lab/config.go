package lab

import (
	"bytes"
	"fmt"
	"github.com/vpclab/vpclab/fakeec2/catalog"
	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/model"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
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
	// Internet adds the internet host behind NAT (default true).
	Internet *bool `yaml:"internet"`
	// Throttling of the EC2 API (off unless set).
	Throttling *ec2query.ThrottleConfig `yaml:"throttling"`
	Faults     []faults.Rule            `yaml:"faults"`
	Timing     model.Timing             `yaml:"timing"`
	Seed       uint64                   `yaml:"seed"`
	// BinDir holds ipamd, aws-cni and aws-vpc-cni (default: next to the
	// running executable, or $VPCLAB_BIN).
	BinDir string `yaml:"binDir"`
	// RefPluginsDir holds the reference CNI plugins (default /usr/lib/cni).
	RefPluginsDir string `yaml:"refPluginsDir"`
	// StateDir is where node directories live (default /run/vpclab).
	StateDir string `yaml:"stateDir"`
	// IpamdRestart is what happens when a node's ipamd exits by itself:
	// restart it after a delay, as a kubelet restarts aws-node ("1s", the
	// default), or "never" (scenarios that control restarts themselves).
	IpamdRestart Restart `yaml:"ipamdRestart" json:"ipamdRestart"`
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
// its whole environment: the lab's base, the lab's env, the node's env.
func (c *Config) nodeSpecs() []nodeSpec {
	var specs []nodeSpec
	for _, nc := range c.Nodes {
		for _, name := range nc.names() {
			env := baseNodeEnv()
			for k, v := range c.Env {
				env[k] = v
			}
			for k, v := range nc.Env {
				env[k] = v
			}
			specs = append(specs, nodeSpec{name: name, cfg: nc, env: env})
		}
	}
	return specs
}

// names are the node names a declaration makes: Name, or Name-1 … Name-N.
func (n NodeConfig) names() []string {
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
}

// NodeConfig declares nodes (Count of them, named Name-1…, or Name).
type NodeConfig struct {
	Name         string            `yaml:"name"`
	InstanceType string            `yaml:"instanceType"`
	Subnet       string            `yaml:"subnet"` // subnet name; default the first
	Count        int               `yaml:"count"`
	Env          map[string]string `yaml:"env"`
	// HostNamespace makes the node an existing network namespace (e.g.
	// /proc/1/ns/net: the machine itself, as in the Vagrant cluster)
	// instead of a new one; its ENI links are named LinkPrefix+"ethN".
	HostNamespace string `yaml:"hostNamespace"`
	LinkPrefix    string `yaml:"linkPrefix"`
	// HostPaths uses the machine's real /var/run/aws-node, /opt/cni/bin,
	// /etc/cni/net.d and /var/log/aws-routed-eni instead of a private
	// mount namespace (with HostNamespace: the machine is the node).
	HostPaths bool `yaml:"hostPaths"`
}

// DefaultConfig is `vpclab up` without a file: a VPC 192.168.0.0/16 in
// eu-west-1 with one /19 subnet per AZ and two m5.large nodes.
func DefaultConfig() Config {
	return Config{Region: "eu-west-1", VPCCIDR: "192.168.0.0/16",
		Subnets: []SubnetConfig{{Name: "a", CIDR: "192.168.0.0/19", AZ: "eu-west-1a"}, {Name: "b", CIDR: "192.168.32.0/19", AZ: "eu-west-1b"}, {Name: "c", CIDR: "192.168.64.0/19", AZ: "eu-west-1c"}},
		Nodes:   []NodeConfig{{Name: "node", InstanceType: "m5.large", Count: 2}}}
}

// LoadConfig reads a YAML lab file; unknown fields are errors.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,7}$`)
var nodeNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)

// DefaultRegion is a lab's region unless its config names one.
const DefaultRegion = "eu-west-1"

// AvailabilityZones are the zones of a lab's region (as fakeec2 serves them).
func AvailabilityZones(region string) []string {
	return []string{region + "a", region + "b", region + "c"}
}

// setDefaults fills in what a config may leave out: the region, subnet
// names.
func (c *Config) setDefaults() {
	if c.Region == "" {
		c.Region = DefaultRegion
	}
	for i := range c.Subnets {
		if c.Subnets[i].Name == "" {
			c.Subnets[i].Name = fmt.Sprintf("subnet%d", i)
		}
	}
}

// Validate checks the config before anything is created.
func (c *Config) Validate() error {
	c.setDefaults()
	if !nameRE.MatchString(c.Name) {
		return fmt.Errorf("name %q: want 1-8 characters of [a-z0-9] starting with a letter", c.Name)
	}
	vpc, err := netip.ParsePrefix(c.VPCCIDR)
	if err != nil || !vpc.Addr().Is4() {
		return fmt.Errorf("vpcCidr %q: not an IPv4 CIDR", c.VPCCIDR)
	}
	if vpc.Masked() != vpc {
		return fmt.Errorf("vpcCidr %s: host bits set (the block is %s)", vpc, vpc.Masked())
	}
	if len(c.Subnets) == 0 {
		return fmt.Errorf("subnets: at least one is needed")
	}
	var seen []netip.Prefix
	names := map[string]bool{}
	azs := AvailabilityZones(c.Region)
	for i, s := range c.Subnets {
		p, err := netip.ParsePrefix(s.CIDR)
		if err != nil || !p.Addr().Is4() {
			return fmt.Errorf("subnets[%d] cidr %q: not an IPv4 CIDR", i, s.CIDR)
		}
		if p.Masked() != p {
			return fmt.Errorf("subnets[%d] cidr %s: host bits set (the block is %s)", i, s.CIDR, p.Masked())
		}
		if !vpc.Contains(p.Addr()) || p.Bits() < vpc.Bits() {
			return fmt.Errorf("subnets[%d] cidr %s: not inside vpcCidr %s", i, s.CIDR, vpc)
		}
		if p.Bits() < 16 || p.Bits() > 28 {
			return fmt.Errorf("subnets[%d] cidr %s: EC2 subnets are /16 to /28", i, s.CIDR)
		}
		for j, q := range seen {
			if q.Overlaps(p) {
				return fmt.Errorf("subnets[%d] cidr %s overlaps subnets[%d] (%s)", i, s.CIDR, j, q)
			}
		}
		seen = append(seen, p)
		if s.AZ != "" && !slices.Contains(azs, s.AZ) {
			return fmt.Errorf("subnets[%d] az %q: not an availability zone of region %s (want one of %s)", i, s.AZ, c.Region, strings.Join(azs, ", "))
		}
		if names[s.Name] {
			return fmt.Errorf("subnets[%d]: duplicate name %q", i, s.Name)
		}
		names[s.Name] = true
	}
	if len(c.Nodes) == 0 {
		return fmt.Errorf("nodes: at least one is needed")
	}
	nodeNames := map[string]int{}
	for i, n := range c.Nodes {
		if !nodeNameRE.MatchString(n.Name) {
			return fmt.Errorf("nodes[%d] name %q: want [a-z][a-z0-9-]*", i, n.Name)
		}
		if _, ok := catalog.Lookup(n.InstanceType); !ok {
			return fmt.Errorf("nodes[%d] instanceType %q: unknown instance type", i, n.InstanceType)
		}
		if n.Subnet != "" && !names[n.Subnet] {
			return fmt.Errorf("nodes[%d] subnet %q: no such subnet", i, n.Subnet)
		}
		if n.HostNamespace != "" && n.Count > 1 {
			return fmt.Errorf("nodes[%d]: a hostNamespace node cannot have count %d", i, n.Count)
		}
		if n.HostNamespace != "" {
			if _, err := os.Stat(n.HostNamespace); err != nil {
				return fmt.Errorf("nodes[%d] hostNamespace %q: %v", i, n.HostNamespace, err)
			}
		}
		if n.Count < 0 || n.Count > 200 {
			return fmt.Errorf("nodes[%d] count %d: want 0..200", i, n.Count)
		}
		for _, name := range n.names() {
			if j, dup := nodeNames[name]; dup {
				return fmt.Errorf("nodes[%d]: node name %q is already used by nodes[%d]", i, name, j)
			}
			nodeNames[name] = i
		}
	}
	if err := c.validateCapacity(); err != nil {
		return err
	}
	for _, s := range c.nodeSpecs() {
		if err := validateNodeEnv(s.env); err != nil {
			return fmt.Errorf("node %s: aws-node environment: %w", s.name, err)
		}
	}
	for i := range c.Faults {
		if err := c.Faults[i].Validate(); err != nil {
			return fmt.Errorf("faults[%d]: %w", i, err)
		}
	}
	return nil
}

// validateCapacity refuses more nodes in a subnet than it has addresses
// for their primary IPs (5 of every subnet's are reserved by EC2).
func (c *Config) validateCapacity() error {
	nodes := map[string]int{}
	for _, n := range c.Nodes {
		subnet := n.Subnet
		if subnet == "" {
			subnet = c.Subnets[0].Name
		}
		nodes[subnet] += len(n.names())
	}
	for _, s := range c.Subnets {
		p := netip.MustParsePrefix(s.CIDR)
		usable := 1<<(32-p.Bits()) - 5
		if nodes[s.Name] > usable {
			return fmt.Errorf("subnet %q (%s) has %d usable addresses and cannot hold %d nodes", s.Name, s.CIDR, usable, nodes[s.Name])
		}
	}
	return nil
}
