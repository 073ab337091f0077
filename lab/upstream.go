package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/plugin"
)

// upstreamCNI runs the real VPC CNI on a node: its aws-node container's
// entrypoint, from an /app directory of its binaries.
type upstreamCNI struct{ build CNIBuild }

// mounts are what an aws-node container of the real VPC CNI sees besides
// the node directories: the image's /app, the host paths its DaemonSet
// mounts under /host, and a /tmp of its own (the entrypoint renders the
// conflist in /tmp, which nodes must not share).
func (u upstreamCNI) mounts(n *Node) [][2]string {
	return [][2]string{
		{"/app", u.build.AppDir},
		{"/host/opt/cni/bin", hostDir(n.root, "/opt/cni/bin")},
		{"/host/etc/cni/net.d", hostDir(n.root, "/etc/cni/net.d")},
		{"/host/var/log/aws-routed-eni", hostDir(n.root, "/var/log/aws-routed-eni")},
		{"/tmp", filepath.Join(n.root, "tmp")},
	}
}

// env adds to the aws-node environment what aws-node's manifest and
// container give the real VPC CNI that vpclab's own does not need. With no
// API server, upstream must be told to manage ENIs on a node it cannot see
// (else it dereferences a nil Kubernetes client); ENABLE_IPv4 defaults to
// false in its code.
func (u upstreamCNI) env(n *Node, env map[string]string) map[string]string {
	home := filepath.Join(n.root, "home") // never a user's ~/.kube/config
	_ = os.MkdirAll(home, 0o700)
	out := map[string]string{
		"ENABLE_IPv4": "true", "ENABLE_IPv6": "false", "AWS_MANAGE_ENIS_NON_SCHEDULABLE": "true",
		"MY_NODE_NAME": n.Name, "VPC_CNI_VERSION": u.build.Version, "HOME": home,
	}
	for k, v := range env {
		out[k] = v
	}
	return out
}

// command is the aws-node container's entrypoint: it starts ipamd, waits
// for its health, installs the plugins and the conflist, and stays. (cd
// inside the mount namespace: nsenter --wd would pick the host's /app.)
func (u upstreamCNI) command(n *Node) (*exec.Cmd, string) {
	return exec.Command("nsenter", "--net="+n.netns, "--mount="+n.mntns, "--", "sh", "-c", "cd /app && exec ./aws-vpc-cni"), n.awsNodeLog()
}

// ready waits for the conflist, at every start: the entrypoint rewrites it.
func (u upstreamCNI) ready(ctx context.Context, n *Node, p *ipamdProc, _ bool) error {
	return n.waitInstalled(ctx, p, 3*time.Minute)
}

// livenessProbe is a kubelet's liveness probe of ipamd's gRPC health:
// from delay after the start, every period; failures in a row and the
// container is killed.
type livenessProbe struct {
	delay, period time.Duration
	failures      int
}

// awsNodeLiveness is aws-node's, as its manifest sets it. The entrypoint
// waits for ipamd's health forever, so an ipamd that died at start-up (an
// IMDS timeout, say) is only ever recovered this way.
var awsNodeLiveness = livenessProbe{delay: 60 * time.Second, period: 10 * time.Second, failures: 3}

// liveness probes an aws-node run as the kubelet would.
func (u upstreamCNI) liveness(n *Node, p *ipamdProc) { awsNodeLiveness.run(n, p) }

// run probes p and kills it (its process group) after l.failures failed
// checks; the lab's restart policy then starts it again. It returns when
// p exits.
func (l livenessProbe) run(n *Node, p *ipamdProc) {
	select {
	case <-p.done:
		return
	case <-time.After(l.delay):
	}
	failed := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), l.period)
		err := plugin.WaitHealthy(ctx, n.SocketPath(), 5*time.Second)
		cancel()
		if err == nil {
			failed = 0
		} else if failed++; failed >= l.failures {
			n.lab.log.Warn("aws-node liveness probe failed; killing it, as a kubelet would", "node", n.Name, "failures", failed, "err", err)
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			return
		}
		select {
		case <-p.done:
			return
		case <-time.After(l.period):
		}
	}
}

// lastLog is ipamd's last line, or the container's while ipamd wrote none.
func (u upstreamCNI) lastLog(n *Node) string {
	if l := lastLineOf(n.ipamdLog); l != "" {
		return l
	}
	return lastLineOf(n.awsNodeLog())
}

func (u upstreamCNI) status(n *Node) CNIStatus {
	return CNIStatus{Implementation: CNIUpstream, Spec: u.build.CNI.String(), Version: u.build.Version, Binaries: u.build.AppDir}
}

// awsNodeLog is where the aws-node container's own output goes.
func (n *Node) awsNodeLog() string {
	return filepath.Join(n.path("/var/log/aws-routed-eni"), "aws-node.log")
}

// initNode does what aws-node's init container does before the main one
// starts: copy the reference plugins into the node's CNI bin directory,
// loosen reverse-path filtering on the primary interface and set TCP early
// demux (off with DISABLE_TCP_EARLY_DEMUX=true).
func (u upstreamCNI) initNode(n *Node) error {
	bin := n.path("/opt/cni/bin")
	ents, err := os.ReadDir(n.lab.cfg.RefPluginsDir)
	if err != nil {
		return fmt.Errorf("reference plugins: %w", err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copyExecutable(filepath.Join(n.lab.cfg.RefPluginsDir, e.Name()), filepath.Join(bin, e.Name())); err != nil {
			return err
		}
	}
	link, ok := n.lab.fab.LinkName(n.Instance.PrimaryENI)
	if !ok {
		return fmt.Errorf("no link for the primary ENI %s", n.Instance.PrimaryENI)
	}
	if err := netx.Sysctl(n.ns, "net/ipv4/conf/"+link+"/rp_filter", "2"); err != nil {
		return err
	}
	demux := "1"
	if off, _ := strconv.ParseBool(n.envValue("DISABLE_TCP_EARLY_DEMUX")); off {
		demux = "0"
	}
	return netx.Sysctl(n.ns, "net/ipv4/tcp_early_demux", demux)
}

// copyExecutable copies a file as the init container does: to dst.tmp,
// then renamed into place, executable.
func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst+".tmp", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(dst+".tmp", dst)
}

// waitInstalled waits until the real VPC CNI's entrypoint has written the
// node's conflist since this run started (it does so only once ipamd
// answers its health check). A run that exits (or that the liveness probe
// kills) is followed into the lab's restart of it, as a kubelet restarts
// the aws-node container; with restarts off, that fails at once.
func (n *Node) waitInstalled(ctx context.Context, p *ipamdProc, timeout time.Duration) error {
	if p == nil {
		return fmt.Errorf("node %s has no aws-node", n.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conf := filepath.Join(n.path("/etc/cni/net.d"), "10-aws.conflist")
	for {
		if st, err := os.Stat(conf); err == nil && !st.ModTime().Before(p.started.Add(-time.Second)) {
			return nil
		}
		select {
		case <-p.done:
			if n.lab.cfg.IpamdRestart.Never {
				return fmt.Errorf("node %s: aws-node (VPC CNI %s) exited during start-up (%v): %s", n.Name, n.build.CNI, p.err, n.upstreamLogs())
			}
			if next := n.current(); next != p {
				p = next // restarted: wait for this run's conflist
			} else {
				time.Sleep(200 * time.Millisecond) // the restart is due after the lab's delay
			}
		case <-ctx.Done():
			return fmt.Errorf("node %s: aws-node (VPC CNI %s) wrote no conflist within %s: %s", n.Name, n.build.CNI, timeout, n.upstreamLogs())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// upstreamLogs is the last line of the aws-node container's output and of
// ipamd's log.
func (n *Node) upstreamLogs() string {
	return fmt.Sprintf("aws-node: %s; ipamd: %s", lastLineOf(n.awsNodeLog()), lastLineOf(n.ipamdLog))
}
