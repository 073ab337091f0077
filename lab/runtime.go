package lab

import (
	"context"
	"os/exec"
	"path/filepath"
)

// cniRuntime is how a node runs its CNI implementation: vpclab's own
// (ipamd, then the aws-vpc-cni installer) or the real VPC CNI (its
// aws-node entrypoint).
type cniRuntime interface {
	// mounts are extra mounts of the node's mount namespace: node path,
	// host directory.
	mounts(n *Node) [][2]string
	// env completes the node's aws-node environment.
	env(n *Node, env map[string]string) map[string]string
	// initNode runs once, before the first start.
	initNode(n *Node) error
	// command is the node's long-running CNI process, and the file its
	// output goes to.
	command(n *Node) (*exec.Cmd, string)
	// ready waits until a start of p serves pods; first is the node's
	// first start.
	ready(ctx context.Context, n *Node, p *ipamdProc, first bool) error
	// lastLog is the line a failure message quotes.
	lastLog(n *Node) string
	status(n *Node) CNIStatus
}

// runtimeFor picks the runtime of a built CNI.
func runtimeFor(b CNIBuild) cniRuntime {
	if b.AppDir != "" {
		return upstreamCNI{b}
	}
	return ownCNI{}
}

// ownCNI runs vpclab's ipamd and installs its plugin with aws-vpc-cni.
type ownCNI struct{}

func (ownCNI) mounts(*Node) [][2]string { return nil }

func (ownCNI) env(_ *Node, env map[string]string) map[string]string { return env }

func (ownCNI) initNode(*Node) error { return nil }

func (ownCNI) command(n *Node) (*exec.Cmd, string) {
	return n.command(filepath.Join(n.lab.cfg.BinDir, "ipamd")), n.ipamdLog
}

// ready installs the plugin on the first start (the installer waits for
// ipamd's health itself); later starts wait for the health check.
func (ownCNI) ready(ctx context.Context, n *Node, p *ipamdProc, first bool) error {
	if first {
		return n.install(ctx, p)
	}
	return n.waitHealthy(ctx)
}

func (ownCNI) lastLog(n *Node) string { return lastLineOf(n.ipamdLog) }

func (ownCNI) status(n *Node) CNIStatus {
	return CNIStatus{Implementation: CNIVpclab, Spec: CNIVpclab, Binaries: n.lab.cfg.BinDir}
}

// CNI is the node's CNI implementation.
func (n *Node) CNI() CNI { return n.build.CNI }

// cniStatus describes the node's CNI implementation.
func (n *Node) cniStatus() CNIStatus { return n.rt.status(n) }
