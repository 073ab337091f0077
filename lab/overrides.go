package lab

import (
	"flag"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vpclab/vpclab/fakeec2/model"
)

// Overrides are what `vpclab up` takes besides a lab file: the common
// changes to the default lab (or to the file's). Every error names the
// flag or field at fault.
type Overrides struct {
	File         string // a lab YAML file instead of Default()
	Name         string
	NameSet      bool
	Nodes        int
	NodesSet     bool
	InstanceType string
	SubnetCIDR   string
	IpamdRestart string
	Env          []string // KEY=VALUE
	// CNI, when set, is every node's CNI (the file's node-level choices
	// included).
	CNI string
	// Kubernetes makes the lab a Kubernetes cluster.
	Kubernetes bool
	// Allocation is fakeec2's address allocation policy (random, lowest).
	Allocation string
}

// Config builds and validates the lab config the overrides describe.
func (o Overrides) Config() (Config, error) {
	cfg := Default()
	if o.File != "" {
		var err error
		if cfg, err = LoadConfig(o.File); err != nil {
			return Config{}, fmt.Errorf("-f %w", err)
		}
	}
	if cfg.Name == "" || o.NameSet {
		cfg.Name = o.Name
	}
	if o.NodesSet {
		if o.Nodes < 1 || o.Nodes > 200 {
			return Config{}, fmt.Errorf("--nodes %d: want 1..200", o.Nodes)
		}
		cfg.Nodes = cfg.Nodes[:1]
		cfg.Nodes[0].Count = o.Nodes
	}
	if o.InstanceType != "" {
		for i := range cfg.Nodes {
			cfg.Nodes[i].InstanceType = o.InstanceType
		}
	}
	if o.SubnetCIDR != "" {
		if err := setSubnetCIDR(&cfg, o.SubnetCIDR, o.File == ""); err != nil {
			return Config{}, err
		}
	}
	if o.IpamdRestart != "" {
		if err := cfg.IpamdRestart.UnmarshalText([]byte(o.IpamdRestart)); err != nil {
			return Config{}, fmt.Errorf("--ipamd-restart: %w", err)
		}
	}
	if o.CNI != "" {
		c, err := ParseCNI(o.CNI)
		if err != nil {
			return Config{}, fmt.Errorf("--%w", err)
		}
		cfg.CNI = c
		for i := range cfg.Nodes {
			cfg.Nodes[i].CNI = CNI{}
		}
	}
	if o.Allocation != "" {
		cfg.Allocation.Policy = o.Allocation
		if err := cfg.Allocation.Check(); err != nil {
			return Config{}, fmt.Errorf("--allocation %q: want %s or %s", o.Allocation, model.AllocRandom, model.AllocLowest)
		}
	}
	if o.Kubernetes && cfg.Kubernetes == nil {
		cfg.Kubernetes = &KubernetesConfig{}
	}
	if cfg.Env == nil {
		cfg.Env = map[string]string{}
	}
	for _, kv := range o.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return Config{}, fmt.Errorf("--env %q: want KEY=VALUE", kv)
		}
		cfg.Env[k] = v
	}
	return cfg, cfg.Validate()
}

// setSubnetCIDR makes cidr the lab's first subnet. The lab's other
// subnets move out of its way (to a free block of their size), or, if
// they came with the defaults and no block is free, are left out.
func setSubnetCIDR(cfg *Config, cidr string, defaults bool) error {
	p, err := netip.ParsePrefix(cidr)
	if err != nil || !p.Addr().Is4() {
		return fmt.Errorf("--subnet-cidr %q: not an IPv4 CIDR", cidr)
	}
	if p.Masked() != p {
		return fmt.Errorf("--subnet-cidr %s: host bits set (the block is %s)", cidr, p.Masked())
	}
	vpc, err := netip.ParsePrefix(cfg.VPCCIDR)
	if err == nil && (!vpc.Contains(p.Addr()) || p.Bits() < vpc.Bits()) {
		return fmt.Errorf("--subnet-cidr %s: not inside vpcCidr %s", cidr, vpc)
	}
	cfg.Subnets[0].CIDR = p.String()
	taken := []netip.Prefix{p}
	var keep []SubnetConfig
	keep = append(keep, cfg.Subnets[0])
	for _, s := range cfg.Subnets[1:] {
		q, err := netip.ParsePrefix(s.CIDR)
		if err != nil {
			keep = append(keep, s) // Validate names it
			continue
		}
		if overlapsAny(q, taken) {
			free, ok := freeBlock(vpc, q.Bits(), taken)
			switch {
			case ok:
				s.CIDR = free.String()
				q = free
			case defaults && !usedByNodes(cfg, s.Name):
				continue
			default:
				return fmt.Errorf("--subnet-cidr %s overlaps subnet %q (%s) and the VPC %s has no free /%d for it", cidr, s.Name, s.CIDR, vpc, q.Bits())
			}
		}
		taken = append(taken, q)
		keep = append(keep, s)
	}
	cfg.Subnets = keep
	return nil
}

func overlapsAny(p netip.Prefix, taken []netip.Prefix) bool {
	for _, t := range taken {
		if t.Overlaps(p) {
			return true
		}
	}
	return false
}

// freeBlock finds the lowest /bits block of vpc that overlaps none taken.
func freeBlock(vpc netip.Prefix, bits int, taken []netip.Prefix) (netip.Prefix, bool) {
	if bits < vpc.Bits() || bits > 32 {
		return netip.Prefix{}, false
	}
	step := uint32(1) << (32 - bits)
	base := vpc.Masked().Addr().As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	count := uint64(1) << (bits - vpc.Bits())
	for i := uint64(0); i < count && i < 1<<16; i++ {
		a := start + uint32(i)*step
		c := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), bits)
		if !overlapsAny(c, taken) {
			return c, true
		}
	}
	return netip.Prefix{}, false
}

func usedByNodes(cfg *Config, subnet string) bool {
	for _, n := range cfg.Nodes {
		if n.Subnet == subnet {
			return true
		}
	}
	return false
}

// Bind declares the overrides as flags (up's).
func (o *Overrides) Bind(fs *flag.FlagSet) {
	fs.StringVar(&o.File, "f", "", "lab YAML file")
	fs.IntVar(&o.Nodes, "nodes", 0, "number of nodes (1..200; default from the file, else 2)")
	fs.StringVar(&o.InstanceType, "instance-type", "", "instance type of the nodes")
	fs.StringVar(&o.SubnetCIDR, "subnet-cidr", "", "CIDR of the (first) subnet")
	fs.StringVar(&o.IpamdRestart, "ipamd-restart", "", "restart an ipamd that exits after this delay (default 1s), or never")
	fs.Var((*listFlag)(&o.Env), "env", "aws-node environment KEY=VALUE (repeatable)")
	fs.BoolVar(&o.Kubernetes, "kubernetes", false, "a Kubernetes cluster: control plane, containerd + kubelet on every node, aws-node as a DaemonSet (make kubernetes builds it)")
	fs.StringVar(&o.Allocation, "allocation", "", "how fakeec2 picks addresses: random (default; seeded, avoids just-released ones, as EC2) or lowest (predictable)")
	fs.StringVar(&o.CNI, "cni", "", "CNI of every node: vpclab (default), upstream@VERSION (the real VPC CNI, built from the Go module proxy), path:DIR (built from a checkout) or bin:DIR (prebuilt)")
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }
