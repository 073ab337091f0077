package plugin

import (
	"encoding/json"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// EgressConf is the egress-cni entry of aws-node's conflist. In an IPv4
// cluster the VPC CNI writes it with enabled "false" (ENABLE_V6_EGRESS,
// forced off when the node has no IPv6 address, as every vpclab node): the
// plugin then hands the previous plugin's result on untouched.
type EgressConf struct {
	types.NetConf
	Enabled        string `json:"enabled"`
	MTU            string `json:"mtu,omitempty"`
	NodeIP         string `json:"nodeIP,omitempty"`
	RandomizeSNAT  string `json:"randomizeSNAT,omitempty"`
	PluginLogFile  string `json:"pluginLogFile,omitempty"`
	PluginLogLevel string `json:"pluginLogLevel,omitempty"`
}

// EgressFuncs are egress-cni's skel entry points.
func EgressFuncs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: egressAdd, Del: egressNoop, Check: egressNoop, Status: egressNoop, GC: egressNoop}
}

// loadEgress parses and checks an egress-cni configuration.
func loadEgress(stdin []byte) (*EgressConf, error) {
	var c EgressConf
	if err := json.Unmarshal(stdin, &c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "egress-cni: bad network configuration", err.Error())
	}
	switch c.Enabled {
	case "", "false":
	case "true":
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "egress-cni: enabled=true is not implemented by vpclab's egress-cni",
			"it gives pods egress in the other IP family (ENABLE_V6_EGRESS / ENABLE_V4_EGRESS), which vpclab's IPv4-only VPCs do not have; the real VPC CNI's runs with --cni upstream@VERSION")
	default:
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "egress-cni: bad network configuration", fmt.Sprintf("enabled %q: want \"true\" or \"false\"", c.Enabled))
	}
	return &c, nil
}

func egressAdd(args *skel.CmdArgs) error {
	c, err := loadEgress(args.StdinData)
	if err != nil {
		return err
	}
	if err := version.ParsePrevResult(&c.NetConf); err != nil {
		return types.NewError(types.ErrDecodingFailure, "egress-cni: bad prevResult", err.Error())
	}
	if c.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "egress-cni: no prevResult", "egress-cni is chained after aws-cni, whose result it hands on")
	}
	return types.PrintResult(c.PrevResult, c.CNIVersion)
}

// egressNoop is DEL, CHECK, STATUS and GC: a disabled egress-cni set
// nothing up.
func egressNoop(args *skel.CmdArgs) error {
	_, err := loadEgress(args.StdinData)
	return err
}
