package ipamd

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is ipamd's configuration, read from the same environment
// variables as aws-node (same names, defaults and validation), plus
// VPCLAB_* duration knobs that scenarios shrink to run in seconds.
type Config struct {
	WarmENITarget          int
	WarmIPTarget           int // 0: unset
	MinimumIPTarget        int // 0: unset
	WarmPrefixTarget       int
	EnablePrefixDelegation bool
	MaxENI                 int // -1: unset
	MTU                    int
	VethPrefix             string
	ExternalSNAT           bool
	ExcludeSNATCIDRs       []netip.Prefix
	// ExternalServiceCIDRs (AWS_EXTERNAL_SERVICE_CIDRS) are always routed
	// by the main table (the primary ENI), whatever ENI a pod is on.
	ExternalServiceCIDRs  []netip.Prefix
	RandomizeSNAT         string // prng | hashrandom | none
	ConnMark              uint32
	NodePortSupport       bool
	LogLevel              string
	LogFile               string
	DisableMetrics        bool
	DisableIntrospection  bool
	DisableLeakedENIClean bool
	DisableProvisioning   bool
	AdditionalENITags     map[string]string
	ClusterName           string
	EnableIPv4            bool
	EnableIPv6            bool
	EnablePodENI          bool
	// SubnetDiscovery (ENABLE_SUBNET_DISCOVERY, on by default as in the
	// VPC CNI) creates new ENIs in the subnet of the instance's zone with
	// the most free addresses among the primary one and those tagged
	// kubernetes.io/role/cni.
	SubnetDiscovery bool
	// ManageUntaggedENI (MANAGE_UNTAGGED_ENI, on by default as in the VPC
	// CNI): off, ipamd leaves alone every secondary ENI that is neither
	// tagged with this instance's id nor tagged no_manage with a value
	// other than "true" (another controller's ENIs).
	ManageUntaggedENI bool
	// DisableTCPEarlyDemux (DISABLE_TCP_EARLY_DEMUX) sets the node's
	// net.ipv4.tcp_early_demux to 0 (else 1), as aws-node's init container
	// does: kubelet's TCP probes to branch-ENI pods need it off.
	DisableTCPEarlyDemux bool
	// CustomNetworking (AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG) gives pods
	// addresses from the node's ENIConfig (crd.k8s.amazonaws.com): new
	// ENIs are created in its subnet with its security groups (the primary
	// ENI's when it names none), and the primary ENI serves no pod. It
	// needs the Kubernetes API.
	CustomNetworking bool
	// ENIConfigLabel and ENIConfigAnnotation (ENI_CONFIG_LABEL_DEF,
	// ENI_CONFIG_ANNOTATION_DEF) are the node label and annotation that
	// name its ENIConfig (after vpc.amazonaws.com/externalEniConfig; else
	// "default").
	ENIConfigLabel, ENIConfigAnnotation string
	// AnnotatePodIP (ANNOTATE_POD_IP) keeps each pod's address in its
	// vpc.amazonaws.com/pod-ips annotation (in a cluster only).
	AnnotatePodIP     bool
	NetworkPolicyMode string
	// PodSGEnforcingMode is POD_SECURITY_GROUP_ENFORCING_MODE: strict
	// (branch pods' traffic always through their branch ENI) or standard.
	PodSGEnforcingMode string
	EC2Endpoint        string // AWS_EC2_ENDPOINT
	IntrospectionAddr  string
	MetricsAddr        string
	SocketPath         string
	TCPAddr            string // "" disables the v1.22-style TCP listener
	BackingStore       string
	HTTPTimeout        time.Duration
	Version            string

	// Timers (VPC CNI constants; VPCLAB_* overrides).
	IPCooldown   time.Duration
	PoolInterval time.Duration
	// PoolWake (VPCLAB_POOL_WAKE) runs the pool manager after every ADD
	// and DEL too; the VPC CNI waits for its tick.
	PoolWake                bool
	DecreaseInterval        time.Duration
	ReconcileInterval       time.Duration
	InsufficientCIDRBackoff time.Duration
	MinENILifetime          time.Duration
	ENIAttachWait           time.Duration
	LeakedENIInterval       time.Duration
	// GroupsInterval is how often the primary ENI's security groups are
	// read from IMDS and, changed, applied to every managed ENI (the VPC
	// CNI's 30 s).
	GroupsInterval time.Duration
	LeakedENIGrace time.Duration
	// LeakedENIStartDelay bounds the random delay before the first
	// leaked-ENI sweep (the VPC CNI's 5 min).
	LeakedENIStartDelay time.Duration
	// VethGrace is how old a restored allocation must be before a missing
	// host veth means its pod is gone (the plugin creates the veth after
	// ipamd answered its ADD).
	VethGrace time.Duration
	// EC2QPS and EC2Burst bound ipamd's own EC2 call rate (client side).
	EC2QPS   float64
	EC2Burst int
	// MaxPods caps the pool (TotalIPs ≥ MaxPods stops growth); 0: the
	// node's capacity.pods in a cluster, else none.
	MaxPods int
	// In a cluster (KUBERNETES_SERVICE_HOST set, as in the aws-node pod):
	// the node to read, ipamd's own pod for Events, how often the node is
	// read, and whether a cordoned node may still grow its ENIs.
	NodeName, PodName, PodNamespace string
	NodeInterval                    time.Duration
	ManageENIsNonSchedulable        bool
}

// Env reads one variable; tests pass a map-backed lookup.
type Env func(string) (string, bool)

// ConfigFromEnv reads the process environment.
func ConfigFromEnv() (*Config, error) { return LoadConfig(os.LookupEnv) }

// BadValuesError lists variables whose values could not be used. The VPC
// CNI logs such a value and uses the variable's default; LoadConfig does
// the same (it returns the Config, with defaults in their place, beside
// this error), so ipamd can say so loudly and go on, while the lab's
// pre-flight check refuses them before a node starts.
type BadValuesError struct {
	Problems []string // "NAME=\"value\": what is wanted"
}

func (e *BadValuesError) Error() string { return strings.Join(e.Problems, "; ") }

// Unsupported are aws-node variables vpclab's ipamd does not implement:
// set, they are logged at start-up (the real VPC CNI in a lab implements
// them: --cni upstream@VERSION).
var Unsupported = []string{
	"ENABLE_IMDS_ONLY_MODE", "ENABLE_MULTI_NIC", "ENABLE_NFTABLES", "AWS_VPC_K8S_CNI_CONFIGURE_RPFILTER",
	"ENABLE_V4_EGRESS", "ENABLE_V6_EGRESS", "CLUSTER_ENDPOINT", "WARM_ENI_TARGET_MULTI_NIC",
}

// UnsupportedSet lists the Unsupported variables env sets, "NAME=value".
func UnsupportedSet(env Env) []string {
	var out []string
	for _, k := range Unsupported {
		if v, ok := env(k); ok {
			out = append(out, k+"="+v)
		}
	}
	return out
}

// LoadConfig builds a Config from env. A value it cannot use gives a
// *BadValuesError naming each variable, beside a Config with the defaults
// in their place (as the VPC CNI); a combination it cannot run (IPv6, a
// bad veth prefix) gives a nil Config and an error.
func LoadConfig(env Env) (*Config, error) {
	p := parser{env: env}
	c := &Config{
		WarmENITarget:          p.intv("WARM_ENI_TARGET", 1, 0, 1<<16),
		WarmIPTarget:           p.intv("WARM_IP_TARGET", 0, 0, 1<<16),
		MinimumIPTarget:        p.intv("MINIMUM_IP_TARGET", 0, 0, 1<<16),
		WarmPrefixTarget:       p.intv("WARM_PREFIX_TARGET", 0, 0, 1<<16),
		EnablePrefixDelegation: p.boolv("ENABLE_PREFIX_DELEGATION", false),
		MaxENI:                 p.intv("MAX_ENI", -1, -1, 1<<10),
		MTU:                    p.intv("AWS_VPC_ENI_MTU", 9001, 576, 9001),
		VethPrefix:             p.str("AWS_VPC_K8S_CNI_VETHPREFIX", "eni"),
		ExternalSNAT:           p.boolv("AWS_VPC_K8S_CNI_EXTERNALSNAT", false),
		ExcludeSNATCIDRs:       p.cidrs("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS"),
		ExternalServiceCIDRs:   p.cidrs("AWS_EXTERNAL_SERVICE_CIDRS"),
		RandomizeSNAT:          p.oneOf("AWS_VPC_K8S_CNI_RANDOMIZESNAT", "prng", "hashrandom", "none"),
		ConnMark:               uint32(p.intv("AWS_VPC_K8S_CNI_CONNMARK", 0x80, 1, 1<<31-1)),
		NodePortSupport:        p.boolv("AWS_VPC_CNI_NODE_PORT_SUPPORT", true),
		LogLevel:               p.oneOf("AWS_VPC_K8S_CNI_LOGLEVEL", "debug", "debug", "info", "warn", "warning", "error"),
		LogFile:                p.str("AWS_VPC_K8S_CNI_LOG_FILE", "/var/log/aws-routed-eni/ipamd.log"),
		DisableMetrics:         p.boolv("DISABLE_METRICS", false),
		DisableIntrospection:   p.boolv("DISABLE_INTROSPECTION", false),
		DisableLeakedENIClean:  p.boolv("DISABLE_LEAKED_ENI_CLEANUP", false),
		DisableProvisioning:    p.boolv("DISABLE_NETWORK_RESOURCE_PROVISIONING", false),
		AdditionalENITags:      p.tags("ADDITIONAL_ENI_TAGS"),
		ClusterName:            p.str("CLUSTER_NAME", ""),
		EnableIPv4:             p.boolv("ENABLE_IPv4", true),
		ManageUntaggedENI:      p.boolv("MANAGE_UNTAGGED_ENI", true),
		DisableTCPEarlyDemux:   p.boolv("DISABLE_TCP_EARLY_DEMUX", false),
		AnnotatePodIP:          p.boolv("ANNOTATE_POD_IP", false),
		CustomNetworking:       p.boolv("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", false),
		ENIConfigLabel:         p.str("ENI_CONFIG_LABEL_DEF", DefaultENIConfigKey),
		ENIConfigAnnotation:    p.str("ENI_CONFIG_ANNOTATION_DEF", DefaultENIConfigKey),
		EnableIPv6:             p.boolv("ENABLE_IPv6", false),
		EnablePodENI:           p.boolv("ENABLE_POD_ENI", false),
		SubnetDiscovery:        p.boolv("ENABLE_SUBNET_DISCOVERY", true),
		NetworkPolicyMode:      p.oneOf("NETWORK_POLICY_ENFORCING_MODE", "", "none", "strict", "standard"),
		PodSGEnforcingMode:     p.oneOf("POD_SECURITY_GROUP_ENFORCING_MODE", "strict", "strict", "standard"),
		EC2Endpoint:            p.str("AWS_EC2_ENDPOINT", ""),
		IntrospectionAddr:      p.str("INTROSPECTION_BIND_ADDRESS", "127.0.0.1:61679"),
		MetricsAddr:            p.str("VPCLAB_METRICS_ADDR", ":61678"),
		SocketPath:             p.str("VPCLAB_IPAMD_SOCKET", "/var/run/aws-node/ipamd.sock"),
		TCPAddr:                p.str("VPCLAB_IPAMD_TCP", ""),
		BackingStore:           p.str("AWS_VPC_K8S_CNI_BACKING_STORE", "/var/run/aws-node/ipam.json"),
		HTTPTimeout:            time.Duration(max(p.intv("HTTP_TIMEOUT", 10, 1, 3600), 10)) * time.Second,
		Version:                p.str("VPC_CNI_VERSION", ""),

		IPCooldown:               time.Duration(p.intv("IP_COOLDOWN_PERIOD", 30, 0, 86400)) * time.Second,
		PoolInterval:             p.period("VPCLAB_POOL_INTERVAL", 5*time.Second),
		PoolWake:                 p.boolv("VPCLAB_POOL_WAKE", false),
		DecreaseInterval:         p.dur("VPCLAB_DECREASE_INTERVAL", 30*time.Second),
		ReconcileInterval:        p.period("VPCLAB_RECONCILE_INTERVAL", 60*time.Second),
		InsufficientCIDRBackoff:  p.dur("VPCLAB_INSUFFICIENT_CIDR_COOLDOWN", 120*time.Second),
		MinENILifetime:           p.dur("VPCLAB_MIN_ENI_LIFETIME", time.Minute),
		ENIAttachWait:            p.dur("VPCLAB_ENI_ATTACH_WAIT", 50*time.Second),
		LeakedENIInterval:        p.period("VPCLAB_LEAKED_ENI_INTERVAL", time.Hour),
		GroupsInterval:           p.period("VPCLAB_SG_SYNC_INTERVAL", 30*time.Second),
		LeakedENIGrace:           p.dur("VPCLAB_LEAKED_ENI_GRACE", 5*time.Minute),
		LeakedENIStartDelay:      p.dur("VPCLAB_LEAKED_ENI_START_DELAY", 5*time.Minute),
		VethGrace:                p.dur("VPCLAB_VETH_GRACE", 10*time.Second),
		EC2QPS:                   p.float("VPCLAB_EC2_QPS", 20),
		EC2Burst:                 p.intv("VPCLAB_EC2_BURST", 40, 1, 1<<20),
		MaxPods:                  p.intv("VPCLAB_MAX_PODS", 0, 0, 1<<20),
		NodeName:                 p.str("MY_NODE_NAME", ""),
		PodName:                  p.str("MY_POD_NAME", ""),
		PodNamespace:             p.str("MY_POD_NAMESPACE", "kube-system"),
		NodeInterval:             p.period("VPCLAB_NODE_INTERVAL", 2*time.Second),
		ManageENIsNonSchedulable: p.boolv("AWS_MANAGE_ENIS_NON_SCHEDULABLE", false),
	}
	if v, ok := env("VPCLAB_IP_COOLDOWN"); ok && v != "" { // sub-second cooldowns for scenarios
		c.IPCooldown = p.dur("VPCLAB_IP_COOLDOWN", c.IPCooldown)
	}
	if c.MaxENI == 0 {
		c.MaxENI = -1 // MAX_ENI applies only when ≥ 1
	}
	p.clock(c)
	if p.err == nil {
		p.err = c.runnable()
	}
	if p.err != nil {
		return nil, p.err
	}
	if len(p.bad) > 0 {
		return c, &BadValuesError{Problems: p.bad}
	}
	return c, nil
}

// runnable refuses the combinations ipamd cannot run (the VPC CNI exits on
// them too, or vpclab's ipamd does not implement them).
func (c *Config) runnable() error {
	switch {
	case c.EnableIPv4 == c.EnableIPv6:
		return fmt.Errorf("ENABLE_IPv4=%v and ENABLE_IPv6=%v: exactly one must be true", c.EnableIPv4, c.EnableIPv6)
	case c.EnableIPv6:
		return fmt.Errorf("ENABLE_IPv6=true: IPv6 mode is not supported by vpclab's ipamd yet")
	case len(c.VethPrefix) > 4 || c.VethPrefix == "" || c.VethPrefix == "eth" || c.VethPrefix == "lo" || c.VethPrefix == "vlan":
		return fmt.Errorf("AWS_VPC_K8S_CNI_VETHPREFIX=%q: must be 1-4 characters and not eth, lo or vlan", c.VethPrefix)
	}
	return nil
}

// minScaledInterval is the shortest interval a clock scale leaves a loop
// (a pool tick of 5 s at 3600× would spin).
const minScaledInterval = 100 * time.Millisecond

// clock applies VPCLAB_CLOCK_SCALE to c.
func (p *parser) clock(c *Config) {
	if scale := p.float("VPCLAB_CLOCK_SCALE", 1); scale < 1 {
		p.fail("VPCLAB_CLOCK_SCALE", fmt.Sprint(scale), "want a factor of at least 1")
	} else if scale > 1 {
		c.scaleClock(scale)
	}
}

// scaleClock runs ipamd's own timers scale times faster
// (VPCLAB_CLOCK_SCALE): intervals, lifetimes, cooldowns and grace periods
// are divided by it, loops no shorter than minScaledInterval. Waits on
// EC2 (ENIAttachWait, HTTP timeouts) are EC2's time and stay.
func (c *Config) scaleClock(scale float64) {
	div := func(d time.Duration) time.Duration { return time.Duration(float64(d) / scale) }
	loop := func(d time.Duration) time.Duration { return max(div(d), min(d, minScaledInterval)) }
	c.PoolInterval, c.DecreaseInterval, c.ReconcileInterval = loop(c.PoolInterval), loop(c.DecreaseInterval), loop(c.ReconcileInterval)
	c.LeakedENIInterval, c.NodeInterval, c.GroupsInterval = loop(c.LeakedENIInterval), loop(c.NodeInterval), loop(c.GroupsInterval)
	c.IPCooldown, c.MinENILifetime, c.LeakedENIGrace, c.InsufficientCIDRBackoff = div(c.IPCooldown), div(c.MinENILifetime), div(c.LeakedENIGrace), div(c.InsufficientCIDRBackoff)
	c.LeakedENIStartDelay = div(c.LeakedENIStartDelay)
}

type parser struct {
	env Env
	err error    // a combination ipamd cannot run
	bad []string // values replaced by their defaults
}

func (p *parser) get(name string) (string, bool) {
	v, ok := p.env(name)
	v = strings.TrimSpace(v)
	return v, ok && v != ""
}

// fail records a value that cannot be used (its default is used).
func (p *parser) fail(name, v, want string) {
	p.bad = append(p.bad, fmt.Sprintf("%s=%q: %s", name, v, want))
}

func (p *parser) str(name, def string) string {
	if v, ok := p.get(name); ok {
		return v
	}
	return def
}

func (p *parser) intv(name string, def, lo, hi int) int {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	n, err := strconv.ParseInt(v, 0, 64)
	if err != nil || int(n) < lo || int(n) > hi {
		p.fail(name, v, fmt.Sprintf("want an integer in [%d, %d]", lo, hi))
		return def
	}
	return int(n)
}

func (p *parser) float(name string, def float64) float64 {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		p.fail(name, v, "want a positive number")
		return def
	}
	return f
}

func (p *parser) boolv(name string, def bool) bool {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.fail(name, v, "want true or false")
		return def
	}
	return b
}

func (p *parser) dur(name string, def time.Duration) time.Duration {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		p.fail(name, v, "want a non-negative duration like 500ms or 5s")
		return def
	}
	return d
}

// period is a loop's interval: a positive duration.
func (p *parser) period(name string, def time.Duration) time.Duration {
	d := p.dur(name, def)
	if d <= 0 {
		p.fail(name, d.String(), "want a positive duration like 500ms or 5s")
		return def
	}
	return d
}

func (p *parser) oneOf(name, def string, allowed ...string) string {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return a
		}
	}
	p.fail(name, v, "want one of "+strings.Join(allowed, ", "))
	return def
}

func (p *parser) cidrs(name string) []netip.Prefix {
	v, ok := p.get(name)
	if !ok {
		return nil
	}
	var out []netip.Prefix
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		c, err := netip.ParsePrefix(s)
		if err != nil || !c.Addr().Is4() {
			p.fail(name, v, fmt.Sprintf("%q is not an IPv4 CIDR", s))
			return nil
		}
		out = append(out, c.Masked())
	}
	return out
}

func (p *parser) tags(name string) map[string]string {
	v, ok := p.get(name)
	if !ok {
		return nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(v), &m); err != nil {
		p.fail(name, v, "want a JSON object of string tags")
		return nil
	}
	for k := range m {
		if strings.Contains(k, "k8s.amazonaws.com") {
			delete(m, k) // reserved, as aws-node does
		}
	}
	return m
}
