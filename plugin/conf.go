// Package plugin is the aws-cni CNI plugin: it asks ipamd (over the VPC
// CNI's gRPC protocol) for an address and wires the pod the way the VPC CNI
// does — a veth pair, the address as /32 behind the link-local gateway
// 169.254.1.1, host routes and rules — plus CHECK, STATUS and GC, and the
// installer aws-node's entrypoint runs.
//
// Failures are CNI errors with the spec's codes (11, try again later, for
// an empty pool or an unreachable ipamd; 7 for a bad configuration) and the
// VPC CNI's message texts ("add cmd: failed to assign an IP address to
// container", …), so what is grepped for in kubelet events matches both;
// the VPC CNI's own plugin answers every failure with code 999.
package plugin

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vpclab/vpclab/internal/vethname"
)

// Defaults of the conflist and the node.
const (
	DefaultSocket     = "/var/run/aws-node/ipamd.sock"
	DefaultCheckpoint = "/var/run/aws-node/ipam.json"
	DefaultVethPrefix = "eni"
	DefaultMTU        = 9001
	// GatewayIP is the pod's link-local default gateway.
	GatewayIP = "169.254.1.1"
	// Rule priorities of the VPC CNI's per-pod rules.
	ToPodRulePriority   = 512
	FromPodRulePriority = 1536
	mainTable           = 254
)

// NetConf is aws-cni's configuration (a plugin of 10-aws.conflist).
type NetConf struct {
	types.NetConf
	VethPrefix         string `json:"vethPrefix"`
	MTU                string `json:"mtu"`
	PodSGEnforcingMode string `json:"podSGEnforcingMode"`
	PluginLogFile      string `json:"pluginLogFile"`
	PluginLogLevel     string `json:"pluginLogLevel"`
	// IPAMDSocket and Checkpoint are vpclab extensions for nodes whose
	// /var/run/aws-node is elsewhere.
	IPAMDSocket string `json:"ipamdSocket,omitempty"`
	Checkpoint  string `json:"ipamdCheckpoint,omitempty"`

	mtu        int
	prev       *current.Result // parsed prevResult (prevResult)
	prevParsed bool
}

// K8sArgs are the CNI_ARGS kubelet passes.
type K8sArgs struct {
	types.CommonArgs
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive
	K8S_POD_UID                types.UnmarshallableString //nolint:revive
}

// LoadConf parses and validates stdin's configuration.
func LoadConf(b []byte) (*NetConf, error) {
	c := &NetConf{}
	if err := json.Unmarshal(b, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "failed to parse network configuration", err.Error())
	}
	if c.Name == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "network configuration has no \"name\"", "")
	}
	if c.VethPrefix == "" {
		c.VethPrefix = DefaultVethPrefix
	}
	if len(c.VethPrefix) > 4 || c.VethPrefix == "eth" || c.VethPrefix == "lo" || c.VethPrefix == "vlan" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("vethPrefix %q: must be at most 4 characters and not eth, lo or vlan", c.VethPrefix), "")
	}
	c.mtu = DefaultMTU
	if c.MTU != "" {
		n, err := strconv.Atoi(c.MTU)
		if err != nil || n < 576 || n > 9001 {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("mtu %q: want an integer in [576, 9001]", c.MTU), "")
		}
		c.mtu = n
	}
	switch c.PodSGEnforcingMode {
	case "", "strict", "standard":
	default:
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("podSGEnforcingMode %q: want strict or standard", c.PodSGEnforcingMode), "")
	}
	if c.IPAMDSocket == "" {
		c.IPAMDSocket = DefaultSocket
	}
	if c.Checkpoint == "" {
		c.Checkpoint = DefaultCheckpoint
	}
	return c, nil
}

// DummyName names the result's bookkeeping interface for a pod as the VPC
// CNI does (never created in the kernel): "dummy" + the host veth hash, so
// either plugin's DEL finds it in the other's prevResult.
func DummyName(namespace, pod string) string { return HostVethName("dummy", namespace, pod) }

// HostVethName is the VPC CNI's host-side name: prefix + the first 11 hex
// characters of SHA-1("<namespace>.<pod>").
func HostVethName(prefix, namespace, pod string) string { return vethname.Host(prefix, namespace, pod) }
