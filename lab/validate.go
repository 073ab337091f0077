package lab

import (
	"fmt"
	"maps"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/vpclab/vpclab/fakeec2/catalog"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/lab/k8s"
)

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,7}$`)
var nodeNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)

// Validate checks the config before anything is created; it changes
// nothing (defaults are filled in on a copy).
func (c Config) Validate() error {
	c.SetDefaults()
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
	if c.TimeScale < 0 || c.TimeScale > 100 {
		return fmt.Errorf("timeScale %d: want 1 to 100 (0: 1)", c.TimeScale)
	}
	names, err := c.validateSubnets(vpc)
	if err != nil {
		return err
	}
	if err := c.validateNodes(names); err != nil {
		return err
	}
	if err := c.validateCapacity(); err != nil {
		return err
	}
	for _, s := range c.nodeSpecs() {
		if s.cni.IsUpstream() {
			// The real VPC CNI checks its environment itself (its
			// entrypoint and ipamd exit naming the variable).
			if s.cfg.HostPaths {
				return fmt.Errorf("node %s: cni %s needs the node's own mount namespace (for /app and /host); hostPaths is only for vpclab's CNI", s.name, s.cni)
			}
			continue
		}
		if err := validateNodeEnv(s.env); err != nil {
			return fmt.Errorf("node %s: aws-node environment: %w", s.name, err)
		}
	}
	if c.Kubernetes == nil {
		for _, s := range c.nodeSpecs() {
			if strings.EqualFold(s.env[customNetworkingVar], "true") {
				return fmt.Errorf("node %s: %s=true needs a Kubernetes lab (kubernetes: {eniConfigs: [...]}): the node's ENIConfig lives in the API server", s.name, customNetworkingVar)
			}
			if len(s.cfg.Labels) > 0 {
				return fmt.Errorf("node %s: labels are Kubernetes node labels; this lab has no kubernetes section", s.name)
			}
		}
	}
	if err := c.validateKubernetes(); err != nil {
		return err
	}
	for i := range c.Faults {
		if err := c.Faults[i].Validate(); err != nil {
			return fmt.Errorf("faults[%d]: %w", i, err)
		}
	}
	return c.Allocation.Check()
}

// validateSubnets checks the subnets and returns their names.
func (c *Config) validateSubnets(vpc netip.Prefix) (map[string]bool, error) {
	if len(c.Subnets) == 0 {
		return nil, fmt.Errorf("subnets: at least one is needed")
	}
	var seen []netip.Prefix
	names := map[string]bool{}
	azs := model.ZoneNames(c.Region)
	for i, s := range c.Subnets {
		p, err := netip.ParsePrefix(s.CIDR)
		if err != nil || !p.Addr().Is4() {
			return nil, fmt.Errorf("subnets[%d] cidr %q: not an IPv4 CIDR", i, s.CIDR)
		}
		if p.Masked() != p {
			return nil, fmt.Errorf("subnets[%d] cidr %s: host bits set (the block is %s)", i, s.CIDR, p.Masked())
		}
		if !vpc.Contains(p.Addr()) || p.Bits() < vpc.Bits() {
			return nil, fmt.Errorf("subnets[%d] cidr %s: not inside vpcCidr %s", i, s.CIDR, vpc)
		}
		if p.Bits() < 16 || p.Bits() > 28 {
			return nil, fmt.Errorf("subnets[%d] cidr %s: EC2 subnets are /16 to /28", i, s.CIDR)
		}
		for j, q := range seen {
			if q.Overlaps(p) {
				return nil, fmt.Errorf("subnets[%d] cidr %s overlaps subnets[%d] (%s)", i, s.CIDR, j, q)
			}
		}
		seen = append(seen, p)
		if s.AZ != "" && !slices.Contains(azs, s.AZ) {
			return nil, fmt.Errorf("subnets[%d] az %q: not an availability zone of region %s (want one of %s)", i, s.AZ, c.Region, strings.Join(azs, ", "))
		}
		if names[s.Name] {
			return nil, fmt.Errorf("subnets[%d]: duplicate name %q", i, s.Name)
		}
		names[s.Name] = true
	}
	return names, nil
}

// validateNodes checks the node declarations against the subnet names.
func (c *Config) validateNodes(names map[string]bool) error {
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
		for _, name := range n.Names() {
			if j, dup := nodeNames[name]; dup {
				return fmt.Errorf("nodes[%d]: node name %q is already used by nodes[%d]", i, name, j)
			}
			nodeNames[name] = i
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
		nodes[subnet] += len(n.Names())
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

// validateKubernetes checks a Kubernetes lab: the pinned version, one CNI
// for every node (aws-node is one DaemonSet), at most one node on the
// machine's own paths (the Vagrant VM: its network namespace and
// directories are the node).
func (c *Config) validateKubernetes() error {
	if c.Kubernetes == nil {
		return nil
	}
	if v := c.Kubernetes.Version; v != "" && v != k8s.KubeVersion {
		return fmt.Errorf("kubernetes version %q: this vpclab builds %s", v, k8s.KubeVersion)
	}
	if m := c.Kubernetes.MaxPods; m < 0 || m > 1000 {
		return fmt.Errorf("kubernetes.maxPods %d: want 1 to 1000 (0: EKS's value for the instance type)", m)
	}
	if err := c.validateENIConfigs(); err != nil {
		return err
	}
	specs := c.nodeSpecs()
	hostPathNodes := 0
	for _, s := range specs {
		if err := validateNodeLabels(s.cfg.Labels); err != nil {
			return fmt.Errorf("node %s: %w", s.name, err)
		}
		if s.cfg.HostPaths && s.cfg.HostNamespace == "" {
			return fmt.Errorf("node %s: hostPaths in Kubernetes mode needs hostNamespace too (the machine is the node: its kubelet, containerd and pods use the machine's directories)", s.name)
		}
		if s.cfg.HostPaths {
			hostPathNodes++
		}
		if s.cni != specs[0].cni {
			return fmt.Errorf("node %s: cni %s differs from node %s's %s; in Kubernetes mode aws-node is one DaemonSet for every node", s.name, s.cni, specs[0].name, specs[0].cni)
		}
	}
	if hostPathNodes > 1 {
		return fmt.Errorf("nodes: %d nodes with hostPaths; the machine's kubelet and containerd directories can be one node's only", hostPathNodes)
	}
	return nil
}

// customNetworkingVar turns custom networking on in aws-node.
const customNetworkingVar = "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG"

var (
	dnsSubdomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
	labelNameRE    = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)
	sgIDRE         = regexp.MustCompile(`^sg-[0-9a-f]{8,17}$`)
)

// validateENIConfigs checks kubernetes.eniConfigs: names Kubernetes
// accepts, once each; a lab subnet; group ids or "default".
func (c *Config) validateENIConfigs() error {
	seen := map[string]bool{}
	for i, e := range c.Kubernetes.ENIConfigs {
		if !dnsSubdomainRE.MatchString(e.Name) {
			return fmt.Errorf("kubernetes.eniConfigs[%d] name %q: want a DNS subdomain (lower-case letters, digits, '-' and '.')", i, e.Name)
		}
		if seen[e.Name] {
			return fmt.Errorf("kubernetes.eniConfigs[%d]: duplicate name %q", i, e.Name)
		}
		seen[e.Name] = true
		if !slices.ContainsFunc(c.Subnets, func(s SubnetConfig) bool { return s.Name == e.Subnet }) {
			return fmt.Errorf("kubernetes.eniConfigs[%d] (%s) subnet %q: no such subnet in the lab", i, e.Name, e.Subnet)
		}
		if len(e.SecurityGroups) > 5 {
			return fmt.Errorf("kubernetes.eniConfigs[%d] (%s) securityGroups: %d groups, an ENI has at most 5", i, e.Name, len(e.SecurityGroups))
		}
		for _, g := range e.SecurityGroups {
			if g != "default" && !sgIDRE.MatchString(g) {
				return fmt.Errorf("kubernetes.eniConfigs[%d] (%s) securityGroups %q: want a group id (sg-…) or default", i, e.Name, g)
			}
		}
	}
	return nil
}

// validateNodeLabels checks labels as the kubelet's --node-labels would
// take them: Kubernetes label syntax, and none in the kubernetes.io or
// k8s.io namespaces (the kubelet may set only a few there; vpclab sets
// those itself).
func validateNodeLabels(labels map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		v := labels[k]
		prefix, name, ok := strings.Cut(k, "/")
		if !ok {
			prefix, name = "", k
		}
		if (ok && (prefix == "" || len(prefix) > 253 || !dnsSubdomainRE.MatchString(prefix))) || !labelNameRE.MatchString(name) {
			return fmt.Errorf("label %q: not a Kubernetes label key ([prefix/]name, name 1-63 of [A-Za-z0-9-_.])", k)
		}
		if prefix == "kubernetes.io" || prefix == "k8s.io" || strings.HasSuffix(prefix, ".kubernetes.io") || strings.HasSuffix(prefix, ".k8s.io") {
			return fmt.Errorf("label %q: the kubelet may not set labels in the kubernetes.io and k8s.io namespaces", k)
		}
		if v != "" && !labelNameRE.MatchString(v) {
			return fmt.Errorf("label %q value %q: want 0-63 of [A-Za-z0-9-_.], alphanumeric at both ends", k, v)
		}
	}
	return nil
}
