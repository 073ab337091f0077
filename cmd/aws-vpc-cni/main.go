// Command aws-vpc-cni installs the CNI plugin the way aws-node's
// entrypoint does: copy aws-cni and egress-cni (and the reference plugins
// loopback, portmap, bandwidth and tuning, if present) into the CNI bin
// dir, wait for ipamd's gRPC health, then write 10-aws.conflist
// (cniVersion 0.4.0, disableCheck; bandwidth with ENABLE_BANDWIDTH_PLUGIN,
// tuning with DISABLE_POD_V6) into the CNI conf dir.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/vpclab/vpclab/plugin"
)

func main() { os.Exit(run(os.Args[1:])) }

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// boolEnv reads a boolean as aws-node's entrypoint does: unset or not a
// boolean is false (the latter said loudly).
func boolEnv(k string) bool {
	v := os.Getenv(k)
	if v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "aws-vpc-cni: %s=%q is not a boolean; using false\n", k, v)
		return false
	}
	return b
}

func run(args []string) int {
	self, _ := os.Executable()
	fs := flag.NewFlagSet("aws-vpc-cni", flag.ContinueOnError)
	o := plugin.InstallOptions{}
	fs.StringVar(&o.Plugin, "plugin", filepath.Join(filepath.Dir(self), "aws-cni"), "aws-cni binary to install")
	fs.StringVar(&o.Egress, "egress-plugin", filepath.Join(filepath.Dir(self), "egress-cni"), "egress-cni binary to install and chain (\"\" leaves it out)")
	fs.StringVar(&o.BinDir, "bin-dir", env("HOST_CNI_BIN_PATH", "/opt/cni/bin"), "CNI bin dir")
	fs.StringVar(&o.ConfDir, "conf-dir", env("HOST_CNI_CONFDIR_PATH", "/etc/cni/net.d"), "CNI conf dir")
	fs.StringVar(&o.RefPluginsDir, "ref-plugins", filepath.Join(filepath.Dir(self), "cni"), "directory of the reference CNI plugins loopback, portmap, bandwidth, tuning (\"\" to skip)")
	fs.StringVar(&o.Socket, "socket", plugin.DefaultSocket, "ipamd gRPC socket")
	fs.StringVar(&o.Checkpoint, "checkpoint", plugin.DefaultCheckpoint, "ipamd checkpoint (for GC)")
	fs.DurationVar(&o.Wait, "wait", time.Minute, "how long to wait for ipamd")
	fs.StringVar(&o.CNIVersion, "cni-version", "0.4.0", "cniVersion of the conflist (aws-node's is 0.4.0)")
	fs.BoolVar(&o.DisableCheck, "disable-check", true, "set the conflist's disableCheck (as aws-node)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.VethPrefix = env("AWS_VPC_K8S_CNI_VETHPREFIX", "eni")
	// The pods' MTU is POD_MTU, else the ENIs' (AWS_VPC_ENI_MTU); aws-node
	// refuses to start on either out of range.
	eniMTU := env("AWS_VPC_ENI_MTU", "9001")
	for _, v := range []struct{ name, val string }{{"AWS_VPC_ENI_MTU", eniMTU}, {"POD_MTU", env("POD_MTU", eniMTU)}} {
		mtu, err := strconv.Atoi(v.val)
		if err != nil || mtu < 576 || mtu > 9001 {
			fmt.Fprintf(os.Stderr, "aws-vpc-cni: %s=%q: want an integer in [576, 9001]\n", v.name, v.val)
			return 2
		}
		o.MTU = mtu
	}
	o.Bandwidth = boolEnv("ENABLE_BANDWIDTH_PLUGIN")
	o.DisablePodV6 = boolEnv("DISABLE_POD_V6")
	o.PodSGMode = env("POD_SECURITY_GROUP_ENFORCING_MODE", "strict")
	o.LogFile = env("AWS_VPC_K8S_PLUGIN_LOG_FILE", "/var/log/aws-routed-eni/plugin.log")
	o.LogLevel = env("AWS_VPC_K8S_PLUGIN_LOG_LEVEL", "Debug")
	if err := plugin.Install(context.Background(), o); err != nil {
		fmt.Fprintf(os.Stderr, "aws-vpc-cni: %v\n", err)
		return 1
	}
	fmt.Printf("aws-vpc-cni: installed aws-cni into %s and %s into %s\n", o.BinDir, plugin.ConflistName, o.ConfDir)
	return 0
}
