// Command aws-cni is vpclab's CNI plugin, interchangeable with the VPC
// CNI's: ADD/DEL over ipamd's gRPC socket, plus CHECK, STATUS and GC.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/vpclab/vpclab/plugin"
)

func main() {
	skel.PluginMainFuncs(plugin.Funcs(), plugin.Supported, "aws-cni (vpclab): AWS VPC CNI plugin")
}
