// Package lab is the composition root: a fakeec2 region (its EC2 API also
// on a host loopback address), the fabric, and nodes. A node is a network
// namespace plus a mount namespace in which its own directories sit at
// /var/run/aws-node, /var/log/aws-routed-eni, /opt/cni/bin and
// /etc/cni/net.d; it runs a real ipamd and has aws-cni installed by the
// install step, and pods are added through libcni as a runtime would.
package lab

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netns"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/internal/netx"
)

// Lab is a running lab.
type Lab struct {
	cfg    Config
	log    *slog.Logger
	root   string
	region *fakeec2.Region
	srv    *fakeec2.Server
	fab    *fabric.Fabric
	http   *http.Server
	ec2URL string
	vpcID  string

	subnets map[string]string // name -> id
	mu      sync.Mutex
	nodes   []*Node
}

// Progress, when set, receives one line per bring-up step.
type Progress func(format string, args ...any)

// New brings a lab up. On failure everything created so far is removed.
func New(ctx context.Context, cfg Config, progress Progress) (l *Lab, err error) {
	if progress == nil {
		progress = func(string, ...any) {}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("vpclab needs root (network and mount namespaces)")
	}
	if cfg.StateDir == "" {
		cfg.StateDir = "/run/vpclab"
	}
	if cfg.BinDir == "" {
		cfg.BinDir = os.Getenv("VPCLAB_BIN")
	}
	if cfg.BinDir == "" {
		self, _ := os.Executable()
		cfg.BinDir = filepath.Dir(self)
	}
	for _, b := range []string{"ipamd", "aws-cni", "aws-vpc-cni"} {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, b)); err != nil {
			return nil, fmt.Errorf("binary %s not in %s (run make build, or set VPCLAB_BIN)", b, cfg.BinDir)
		}
	}
	if cfg.RefPluginsDir == "" {
		cfg.RefPluginsDir = "/usr/lib/cni"
	}
	l = &Lab{cfg: cfg, log: slog.Default().With("lab", cfg.Name), root: filepath.Join(cfg.StateDir, cfg.Name), subnets: map[string]string{}}
	if _, err := os.Stat(l.root); err == nil {
		return nil, fmt.Errorf("lab %s already exists at %s (vpclab down, or vpclab gc)", cfg.Name, l.root)
	}
	defer func() {
		if err != nil {
			_ = l.Close()
		}
	}()
	if err := ensureSharedNetnsDir(netx.NetnsDir); err != nil {
		return nil, fmt.Errorf("shared %s: %w", netx.NetnsDir, err)
	}
	if err := makePrivate(l.root); err != nil {
		return nil, err
	}
	region := cfg.Region
	if region == "" {
		region = "eu-west-1"
	}
	l.region = fakeec2.NewRegion(fakeec2.Options{Name: region, Seed: cfg.Seed, AttachLatency: time.Duration(cfg.Timing.AttachLatency),
		DetachLatency: time.Duration(cfg.Timing.DetachLatency), ConsistencyLag: time.Duration(cfg.Timing.ConsistencyLag)})
	so := fakeec2.ServerOptions{Seed: cfg.Seed, IMDS: fakeec2.IMDSOptions{Lag: time.Duration(cfg.Timing.IMDSLag)}, Logger: l.log}
	if cfg.Throttling != nil {
		so.Throttle = *cfg.Throttling
	}
	l.srv = fakeec2.NewServer(l.region, so)
	if len(cfg.Faults) > 0 {
		if _, err := l.srv.Faults().Add(cfg.Faults...); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l.http = &http.Server{Handler: l.srv, ReadHeaderTimeout: 10 * time.Second}
	l.ec2URL = "http://" + ln.Addr().String()
	go func() { _ = l.http.Serve(ln) }()

	vpc, err := l.region.CreateVPC(fakeec2.CreateVPCInput{CIDR: netip.MustParsePrefix(cfg.VPCCIDR)})
	if err != nil {
		return nil, fmt.Errorf("vpc: %w", err)
	}
	l.vpcID = vpc.ID
	for _, s := range cfg.Subnets {
		sn, err := l.region.CreateSubnet(fakeec2.CreateSubnetInput{VPCID: vpc.ID, CIDR: netip.MustParsePrefix(s.CIDR), AZ: s.AZ})
		if err != nil {
			return nil, fmt.Errorf("subnet %s: %w", s.Name, err)
		}
		l.subnets[s.Name] = sn.ID
	}
	progress("region %s: %s with %d subnets; EC2 API %s", region, vpc.ID, len(cfg.Subnets), l.ec2URL)
	internet := cfg.Internet == nil || *cfg.Internet
	hostNodes := map[string]NodeConfig{}
	for _, nc := range cfg.Nodes {
		if nc.HostNamespace != "" {
			hostNodes[nc.Name] = nc
		}
	}
	l.fab, err = fabric.New(fabric.Config{Name: cfg.Name, Region: l.region, IMDS: l.srv.IMDS(), EC2: l.srv, Internet: internet, Logger: l.log,
		NodeNamespace: func(i fakeec2.Instance) (fabric.NodeNamespace, bool) {
			nc, ok := hostNodes[i.Tags["vpclab:node"]]
			return fabric.NodeNamespace{Path: nc.HostNamespace, LinkPrefix: nc.LinkPrefix}, ok
		}})
	if err != nil {
		return nil, err
	}
	progress("fabric up (VLAN datapath %s)", l.fab.Datapath())
	var specs []nodeSpec
	for _, nc := range cfg.Nodes {
		count := max(nc.Count, 1)
		for i := 1; i <= count; i++ {
			name := nc.Name
			if nc.Count > 1 {
				name = fmt.Sprintf("%s-%d", nc.Name, i)
			}
			specs = append(specs, nodeSpec{name: name, cfg: nc})
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(specs))
	for i, s := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := l.startNode(ctx, s)
			if err != nil {
				errs[i] = fmt.Errorf("node %s: %w", s.name, err)
				return
			}
			progress("node %s: %s (%s) up, ipamd serving, aws-cni installed", n.Name, n.Instance.ID, n.Instance.Type)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	sort.Slice(l.nodes, func(i, j int) bool { return l.nodes[i].Name < l.nodes[j].Name })
	return l, nil
}

type nodeSpec struct {
	name string
	cfg  NodeConfig
}

// Name returns the lab's name.
func (l *Lab) Name() string { return l.cfg.Name }

// Region returns the fake region.
func (l *Lab) Region() *fakeec2.Region { return l.region }

// Server returns the fake EC2 server (faults, throttling, audit, IMDS).
func (l *Lab) Server() *fakeec2.Server { return l.srv }

// Fabric returns the fabric.
func (l *Lab) Fabric() *fabric.Fabric { return l.fab }

// Faults returns the EC2 fault rules.
func (l *Lab) Faults() *fakeec2.Faults { return l.srv.Faults() }

// Events returns the CloudTrail-shaped audit records matching f.
func (l *Lab) Events(f fakeec2.EventFilter) []fakeec2.Record { return l.srv.Audit().Events(f) }

// EC2Endpoint is the EC2 API on a host loopback address.
func (l *Lab) EC2Endpoint() string { return l.ec2URL }

// VPCID returns the VPC's id.
func (l *Lab) VPCID() string { return l.vpcID }

// Nodes returns the nodes by name.
func (l *Lab) Nodes() []*Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Node(nil), l.nodes...)
}

// Node returns the node with the given name, or nil.
func (l *Lab) Node(name string) *Node {
	for _, n := range l.Nodes() {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Close removes everything the lab created: pods, ipamd processes, mounts,
// namespaces, kernel objects, the state directory.
func (l *Lab) Close() error {
	var errs []error
	for _, n := range l.Nodes() {
		errs = append(errs, n.stop())
	}
	if l.fab != nil {
		errs = append(errs, l.fab.Close())
	}
	if l.http != nil {
		_ = l.http.Close()
	}
	if l.srv != nil {
		_ = l.srv.Close()
	}
	errs = append(errs, GC(l.cfg.Name, l.cfg.StateDir))
	return errors.Join(errs...)
}

// GC removes what a lab of that name left behind: its processes (found by
// their network namespace), mounts, state directory and namespaces.
func GC(name, stateDir string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("gc %q: not a lab name", name)
	}
	if stateDir == "" {
		stateDir = "/run/vpclab"
	}
	var errs []error
	killInNamespaces(name)
	root := filepath.Join(stateDir, name)
	errs = append(errs, unmountUnder(root))
	if err := os.RemoveAll(root); err != nil && !os.IsNotExist(err) {
		errs = append(errs, err)
	}
	errs = append(errs, fabric.GC(name))
	return errors.Join(errs...)
}

// Labs lists the labs with state under stateDir.
func Labs(stateDir string) []string {
	if stateDir == "" {
		stateDir = "/run/vpclab"
	}
	ents, _ := os.ReadDir(stateDir)
	var out []string
	for _, e := range ents {
		if e.IsDir() && nameRE.MatchString(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

// killInNamespaces kills every process whose network namespace is one of
// the lab's named namespaces.
func killInNamespaces(name string) {
	names, _ := netx.ListNamed(name + "-")
	inodes := map[uint64]bool{}
	for _, n := range names {
		var st syscall.Stat_t
		if syscall.Stat(netx.Path(n), &st) == nil {
			inodes[st.Ino] = true
		}
	}
	if len(inodes) == 0 {
		return
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		var pid int
		if _, err := fmt.Sscan(p.Name(), &pid); err != nil || pid == os.Getpid() {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", p.Name(), "ns/net"), &st) == nil && inodes[st.Ino] {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// Node is one simulated instance.
type Node struct {
	Name      string
	Instance  fakeec2.Instance
	lab       *Lab
	root      string
	netns     string // path
	mntns     string // path of the bind-mounted mount namespace
	ns        netns.NsHandle
	ipamd     *exec.Cmd
	cni       *libcni.CNIConfig
	list      *libcni.NetworkConfigList
	mu        sync.Mutex
	pods      map[string]*Pod
	httpc     *http.Client
	ipamdLog  string
	hostPaths bool
}

// path maps a node path (/var/run/aws-node) to where it is on the host.
func (n *Node) path(p string) string {
	if n.hostPaths {
		return p
	}
	return hostDir(n.root, p)
}

func (l *Lab) startNode(ctx context.Context, s nodeSpec) (*Node, error) {
	subnet := l.subnets[l.cfg.Subnets[0].Name]
	if s.cfg.Subnet != "" {
		subnet = l.subnets[s.cfg.Subnet]
	}
	insts, err := l.region.RunInstances(fakeec2.RunInstancesInput{InstanceType: s.cfg.InstanceType, SubnetID: subnet, Tags: fakeec2.Tags{"Name": s.name, "vpclab:node": s.name}})
	if err != nil {
		return nil, err
	}
	n := &Node{Name: s.name, Instance: insts[0], lab: l, root: filepath.Join(l.root, "nodes", s.name), pods: map[string]*Pod{}}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := l.fab.WaitSynced(wctx); err != nil {
		return nil, err
	}
	var ok bool
	if n.netns, ok = l.fab.NodeNamespace(n.Instance.ID); !ok {
		return nil, fmt.Errorf("fabric has no namespace for %s", n.Instance.ID)
	}
	if n.ns, err = netns.GetFromPath(n.netns); err != nil {
		return nil, err
	}
	n.httpc = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: netx.DialContextIn(n.ns), DisableKeepAlives: true}}
	if err := os.MkdirAll(n.root, 0o755); err != nil {
		return nil, err
	}
	if s.cfg.HostPaths {
		// The machine's own directories (the Vagrant cluster: kubelet runs
		// the plugin from the real /opt/cni/bin).
		n.hostPaths, n.mntns = true, "/proc/1/ns/mnt"
		for _, d := range NodeDirs {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, err
			}
		}
	} else {
		n.mntns = filepath.Join(n.root, "mnt")
		if err := newMountNS(n.mntns, n.root); err != nil {
			return nil, err
		}
	}
	l.mu.Lock()
	l.nodes = append(l.nodes, n)
	l.mu.Unlock()
	env := map[string]string{
		"AWS_ACCESS_KEY_ID": "AKIDVPCLABNODE", "AWS_SECRET_ACCESS_KEY": "vpclab", "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
		"AWS_EC2_ENDPOINT": fabric.EC2Endpoint, "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://" + fabric.IMDSAddr,
		"AWS_VPC_K8S_CNI_LOG_FILE": "/var/log/aws-routed-eni/ipamd.log", "AWS_VPC_K8S_CNI_LOGLEVEL": "debug",
	}
	for k, v := range l.cfg.Env {
		env[k] = v
	}
	for k, v := range s.cfg.Env {
		env[k] = v
	}
	n.ipamdLog = filepath.Join(n.path("/var/log/aws-routed-eni"), "ipamd.log")
	if err := n.startIpamd(env); err != nil {
		return nil, err
	}
	install := n.command(filepath.Join(l.cfg.BinDir, "aws-vpc-cni"), "--plugin", filepath.Join(l.cfg.BinDir, "aws-cni"), "--ref-plugins", l.cfg.RefPluginsDir, "--wait", "60s")
	install.Env = []string{"PATH=" + os.Getenv("PATH"), "AWS_VPC_K8S_PLUGIN_LOG_FILE=/var/log/aws-routed-eni/plugin.log"}
	if out, err := install.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(n.ipamdLog)
		return nil, fmt.Errorf("install aws-cni: %v: %s\nipamd log:\n%s", err, strings.TrimSpace(string(out)), tail(string(log), 20))
	}
	n.list, err = libcni.ConfListFromFile(filepath.Join(n.path("/etc/cni/net.d"), "10-aws.conflist"))
	if err != nil {
		return nil, err
	}
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{"/opt/cni/bin"}, filepath.Join(n.root, "cni-cache"), &nodeExec{n: n})
	return n, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// command runs a program on the node: inside its network and mount
// namespaces, so hard-coded paths like /var/run/aws-node work.
func (n *Node) command(prog string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + n.netns, "--mount=" + n.mntns, "--", prog}, args...)...)
}

// Exec runs a command on the node and returns its combined output.
func (n *Node) Exec(ctx context.Context, args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("exec: no command")
	}
	cmd := n.command(args[0], args[1:]...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (n *Node) startIpamd(env map[string]string) error {
	cmd := n.command(filepath.Join(n.lab.cfg.BinDir, "ipamd"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start ipamd: %w", err)
	}
	n.mu.Lock()
	n.ipamd = cmd
	n.mu.Unlock()
	go func() { _ = cmd.Wait() }()
	return nil
}

// KillIpamd kills the node's ipamd with SIGKILL (a crash).
func (n *Node) KillIpamd() {
	n.mu.Lock()
	cmd := n.ipamd
	n.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

// RestartIpamd kills ipamd and starts it again with the same environment,
// waiting until it serves.
func (n *Node) RestartIpamd(ctx context.Context) error {
	n.mu.Lock()
	env := map[string]string{}
	for _, kv := range n.ipamd.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	n.mu.Unlock()
	n.KillIpamd()
	time.Sleep(100 * time.Millisecond)
	if err := n.startIpamd(env); err != nil {
		return err
	}
	return n.WaitServing(ctx)
}

// WaitServing waits until the node's ipamd answers its health check.
func (n *Node) WaitServing(ctx context.Context) error {
	cmd := n.command(filepath.Join(n.lab.cfg.BinDir, "aws-vpc-cni"), "--plugin", filepath.Join(n.lab.cfg.BinDir, "aws-cni"), "--ref-plugins", "", "--wait", "60s")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("node %s: ipamd not serving: %v: %s", n.Name, err, out)
	}
	return nil
}

// SocketPath is the host path of the node's ipamd socket.
func (n *Node) SocketPath() string {
	return filepath.Join(n.path("/var/run/aws-node"), "ipamd.sock")
}

// IpamdLog returns the node's ipamd log.
func (n *Node) IpamdLog() string {
	b, _ := os.ReadFile(n.ipamdLog)
	return string(b)
}

// NetNS returns the node's network namespace path.
func (n *Node) NetNS() string { return n.netns }

// MountNS returns the node's mount namespace path (for nsenter --mount).
func (n *Node) MountNS() string { return n.mntns }

// HTTPGet fetches a URL from inside the node's network namespace.
func (n *Node) HTTPGet(url string) ([]byte, error) {
	resp, err := n.httpc.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return b, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, err
}

// Metrics returns the node's ipamd Prometheus metrics text.
func (n *Node) Metrics() (string, error) {
	b, err := n.HTTPGet("http://127.0.0.1:61678/metrics")
	return string(b), err
}

func (n *Node) stop() error {
	n.KillIpamd()
	n.mu.Lock()
	pods := make([]*Pod, 0, len(n.pods))
	for _, p := range n.pods {
		pods = append(pods, p)
	}
	n.mu.Unlock()
	var errs []error
	for _, p := range pods {
		errs = append(errs, netx.DeleteNamed(p.nsName))
	}
	_ = n.ns.Close()
	return errors.Join(errs...)
}

// Pod is a pod sandbox on a node.
type Pod struct {
	Namespace   string
	Name        string
	ContainerID string
	IP          netip.Addr
	node        *Node
	nsName      string
}

// NetNS returns the pod's network namespace path.
func (p *Pod) NetNS() string { return netx.Path(p.nsName) }

// Node returns the pod's node.
func (p *Pod) Node() *Node { return p.node }

func (p *Pod) rt() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: p.ContainerID, NetNS: p.NetNS(), IfName: "eth0", Args: [][2]string{
		{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", p.Namespace}, {"K8S_POD_NAME", p.Name}, {"K8S_POD_INFRA_CONTAINER_ID", p.ContainerID}}}
}

// AddPod creates a pod sandbox and runs the node's CNI configuration
// (aws-cni, then portmap) on it through libcni.
func (n *Node) AddPod(ctx context.Context, namespace, name string) (*Pod, error) {
	key := namespace + "/" + name
	n.mu.Lock()
	if _, dup := n.pods[key]; dup {
		n.mu.Unlock()
		return nil, fmt.Errorf("pod %s already on node %s", key, n.Name)
	}
	h := sha1.Sum([]byte(n.Name + "/" + key))
	p := &Pod{Namespace: namespace, Name: name, ContainerID: hex.EncodeToString(h[:]), node: n, nsName: fmt.Sprintf("%s-pod-%s", n.lab.cfg.Name, hex.EncodeToString(h[:6]))}
	n.pods[key] = p
	n.mu.Unlock()
	fail := func(err error) (*Pod, error) {
		n.mu.Lock()
		delete(n.pods, key)
		n.mu.Unlock()
		_ = netx.DeleteNamed(p.nsName)
		return nil, err
	}
	pns, err := netx.CreateNamed(p.nsName)
	if err != nil {
		return fail(err)
	}
	pns.Close()
	res, err := n.cni.AddNetworkList(ctx, n.list, p.rt())
	if err != nil {
		return fail(fmt.Errorf("add pod %s on %s: %w", key, n.Name, err))
	}
	ip, err := resultIP(res)
	if err != nil {
		_ = n.cni.DelNetworkList(ctx, n.list, p.rt())
		return fail(err)
	}
	p.IP = ip
	return p, nil
}

// DelPod runs CNI DEL for the pod and removes its sandbox.
func (n *Node) DelPod(ctx context.Context, p *Pod) error {
	if err := n.cni.DelNetworkList(ctx, n.list, p.rt()); err != nil {
		return fmt.Errorf("delete pod %s/%s on %s: %w", p.Namespace, p.Name, n.Name, err)
	}
	n.mu.Lock()
	delete(n.pods, p.Namespace+"/"+p.Name)
	n.mu.Unlock()
	return netx.DeleteNamed(p.nsName)
}

// Pods lists the node's pods.
func (n *Node) Pods() []*Pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*Pod, 0, len(n.pods))
	for _, p := range n.pods {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Namespace+out[i].Name < out[j].Namespace+out[j].Name })
	return out
}

// Exec runs a command inside the pod's network namespace.
func (p *Pod) Exec(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", p.nsName}, args...)...).CombinedOutput()
	return string(out), err
}

// Ping sends one echo request from the pod and waits up to 2 s.
func (p *Pod) Ping(ctx context.Context, dst string) error {
	out, err := p.Exec(ctx, "ping", "-c", "1", "-W", "2", dst)
	if err != nil {
		return fmt.Errorf("ping %s from %s/%s (%s): %v: %s", dst, p.Namespace, p.Name, p.IP, err, strings.TrimSpace(out))
	}
	return nil
}
