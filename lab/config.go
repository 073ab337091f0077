package lab

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"regexp"

	"gopkg.in/yaml.v3"

	"github.com/vpclab/vpclab/fakeec2"
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
	Throttling *fakeec2.ThrottleConfig `yaml:"throttling"`
	Faults     []fakeec2.FaultRule     `yaml:"faults"`
	Timing     fakeec2.Timing          `yaml:"timing"`
	Seed       uint64                  `yaml:"seed"`
	// BinDir holds ipamd, aws-cni and aws-vpc-cni (default: next to the
	// running executable, or $VPCLAB_BIN).
	BinDir string `yaml:"binDir"`
	// RefPluginsDir holds the reference CNI plugins (default /usr/lib/cni).
	RefPluginsDir string `yaml:"refPluginsDir"`
	// StateDir is where node directories live (default /run/vpclab).
	StateDir string `yaml:"stateDir"`
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

// Validate checks the config before anything is created.
func (c *Config) Validate() error {
	if !nameRE.MatchString(c.Name) {
		return fmt.Errorf("name %q: want 1-8 characters of [a-z0-9] starting with a letter", c.Name)
	}
	vpc, err := netip.ParsePrefix(c.VPCCIDR)
	if err != nil || !vpc.Addr().Is4() {
		return fmt.Errorf("vpcCidr %q: not an IPv4 CIDR", c.VPCCIDR)
	}
	if len(c.Subnets) == 0 {
		return fmt.Errorf("subnets: at least one is needed")
	}
	var seen []netip.Prefix
	names := map[string]bool{}
	for i, s := range c.Subnets {
		p, err := netip.ParsePrefix(s.CIDR)
		if err != nil || !p.Addr().Is4() {
			return fmt.Errorf("subnets[%d] cidr %q: not an IPv4 CIDR", i, s.CIDR)
		}
		if !vpc.Contains(p.Addr()) || p.Bits() < vpc.Bits() {
			return fmt.Errorf("subnets[%d] cidr %s: not inside vpcCidr %s", i, s.CIDR, vpc)
		}
		for _, q := range seen {
			if q.Overlaps(p) {
				return fmt.Errorf("subnets[%d] cidr %s overlaps %s", i, s.CIDR, q)
			}
		}
		seen = append(seen, p)
		if s.Name == "" {
			c.Subnets[i].Name = fmt.Sprintf("subnet%d", i)
		}
		if names[c.Subnets[i].Name] {
			return fmt.Errorf("subnets[%d]: duplicate name %q", i, s.Name)
		}
		names[c.Subnets[i].Name] = true
	}
	if len(c.Nodes) == 0 {
		return fmt.Errorf("nodes: at least one is needed")
	}
	for i, n := range c.Nodes {
		if !nodeNameRE.MatchString(n.Name) {
			return fmt.Errorf("nodes[%d] name %q: want [a-z][a-z0-9-]*", i, n.Name)
		}
		if _, ok := fakeec2.LookupInstanceType(n.InstanceType); !ok {
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
	}
	for i := range c.Faults {
		if err := c.Faults[i].Validate(); err != nil {
			return fmt.Errorf("faults[%d]: %w", i, err)
		}
	}
	return nil
}
