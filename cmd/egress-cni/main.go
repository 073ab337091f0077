// Command egress-cni is the chained plugin aws-node's conflist names after
// aws-cni. vpclab's VPCs are IPv4-only, where the VPC CNI writes it
// disabled; vpclab's hands the result on (and refuses enabled=true with a
// CNI error naming the real VPC CNI as the way to run it).
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/vpclab/vpclab/plugin"
)

func main() {
	skel.PluginMainFuncs(plugin.EgressFuncs(), plugin.Supported, "egress-cni (vpclab): hands aws-cni's result on (IPv4 VPCs)")
}
