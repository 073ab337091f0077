package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/ipamd"
)

// Node is one simulated instance.
type Node struct {
	Name      string
	Instance  model.Instance
	lab       *Lab
	root      string
	netns     string // path
	mntns     string // path of the bind-mounted mount namespace
	ns        ns.NetNS
	env       []string    // the aws-node environment of every process of the node
	build     CNIBuild    // the node's CNI implementation
	rt        cniRuntime  // how it runs on the node
	kubeProcs []*exec.Cmd // Kubernetes mode: containerd, kubelet, kube-proxy
	// imagesDone gets the result of importing the workloads' images
	// (Kubernetes mode), once.
	imagesDone chan error
	cni        *libcni.CNIConfig
	httpc      *http.Client
	ipamdLog   string
	hostPaths  bool
	hostNS     bool              // an existing namespace (hostNamespace), not one of the fabric's
	labels     map[string]string // Kubernetes node labels (its kubelet's --node-labels)

	mu       sync.Mutex
	pods     map[string]*Pod
	ipamd    *ipamdProc
	restarts int
	stopping bool
}

// nodeSpec is one node to start: its name, declaration and environment.
type nodeSpec struct {
	name  string
	cfg   NodeConfig
	env   map[string]string
	cni   CNI
	build CNIBuild // set once the CNI is built
}

// ipamdProc is one run of a node's ipamd.
type ipamdProc struct {
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{} // closed when the process has exited
	err     error         // its exit status, once done
	stopped bool          // stopped by the lab, not by itself
}

// IpamdState is what a node's ipamd is doing.
type IpamdState struct {
	// State is running, exited or stopped.
	State    string    `json:"state"`
	PID      int       `json:"pid,omitempty"`
	Since    time.Time `json:"since"`
	Restarts int       `json:"restarts"`
	// Exit is the exit status of a process that is no longer running.
	Exit string `json:"exit,omitempty"`
	// LastLog is the last line of the node's ipamd log.
	LastLog string `json:"lastLog,omitempty"`
}

// baseNodeEnv is what every node's processes get besides the config's
// aws-node environment: credentials, the fabric's endpoints, the log file.
func baseNodeEnv() map[string]string {
	return map[string]string{
		"AWS_ACCESS_KEY_ID": "AKIDVPCLABNODE", "AWS_SECRET_ACCESS_KEY": "vpclab", "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
		// Both spellings of the EC2 endpoint: the VPC CNI reads
		// AWS_EC2_ENDPOINT, but some releases (v1.19.x) build their EC2
		// client without it, where only the SDK's own variable works.
		"AWS_EC2_ENDPOINT": fabric.EC2Endpoint, "AWS_ENDPOINT_URL_EC2": fabric.EC2Endpoint, "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://" + fabric.IMDSAddr,
		"AWS_VPC_K8S_CNI_LOG_FILE": "/var/log/aws-routed-eni/ipamd.log", "AWS_VPC_K8S_CNI_LOGLEVEL": "debug",
	}
}

// validateNodeEnv runs ipamd's own configuration loader on a node's
// environment, so a bad value is refused before anything is created, with
// ipamd's own message.
func validateNodeEnv(env map[string]string) error {
	_, err := ipamd.LoadConfig(func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
	return err
}

// HostPath maps a path on the node (/etc/cni/net.d) to where it is on the
// host.
func (n *Node) HostPath(p string) string { return n.path(p) }

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
	insts, err := l.region.RunInstances(model.RunInstancesInput{InstanceType: s.cfg.InstanceType, SubnetID: subnet, Tags: model.Tags{"Name": s.name, "vpclab:node": s.name}})
	if err != nil {
		return nil, err
	}
	n := &Node{Name: s.name, Instance: insts[0], lab: l, root: filepath.Join(l.paths.Root(), "nodes", s.name), pods: map[string]*Pod{}, build: s.build, rt: runtimeFor(s.build), labels: s.cfg.Labels,
		hostNS: s.cfg.HostNamespace != ""}
	wctx, cancel := context.WithTimeout(ctx, l.cfg.slow(time.Minute))
	defer cancel()
	if err := l.fab.WaitSynced(wctx); err != nil {
		return nil, err
	}
	var ok bool
	if n.netns, ok = l.fab.NodeNamespace(n.Instance.ID); !ok {
		return nil, fmt.Errorf("fabric has no namespace for %s", n.Instance.ID)
	}
	if n.ns, err = ns.GetNS(n.netns); err != nil {
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
		mounts := n.rt.mounts(n)
		if l.kube != nil {
			mounts = n.kubeMounts() // the CNI comes as a DaemonSet
		}
		if err := newMountNS(n.mntns, n.root, mounts); err != nil {
			return nil, err
		}
	}
	l.mu.Lock()
	l.nodes = append(l.nodes, n)
	l.mu.Unlock()
	n.env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range n.rt.env(n, s.env) {
		n.env = append(n.env, k+"="+v)
	}
	n.ipamdLog = filepath.Join(n.path("/var/log/aws-routed-eni"), "ipamd.log")
	if l.kube != nil {
		return n, n.startKubeNode(ctx)
	}
	if err := n.rt.initNode(n); err != nil {
		return nil, err
	}
	p, err := n.startIpamd()
	if err != nil {
		return nil, err
	}
	if err := n.rt.ready(ctx, n, p, true); err != nil {
		return nil, err
	}
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{"/opt/cni/bin"}, filepath.Join(n.root, "cni-cache"), &nodeExec{n: n})
	return n, nil
}

// conflist reads the node's 10-aws.conflist, as a runtime does at every
// ADD and DEL (the real VPC CNI's entrypoint rewrites it after a restart).
func (n *Node) conflist() (*libcni.NetworkConfigList, error) {
	l, err := libcni.ConfListFromFile(filepath.Join(n.path("/etc/cni/net.d"), "10-aws.conflist"))
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", n.Name, err)
	}
	return l, nil
}

// install runs the installer (aws-node's entrypoint role): it waits for
// ipamd's health, then installs aws-cni and writes the conflist. An ipamd
// that exits meanwhile fails the install at once, with its last log line.
func (n *Node) install(ctx context.Context, p *ipamdProc) error {
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := n.commandContext(ictx, filepath.Join(n.lab.cfg.BinDir, "aws-vpc-cni"), "--plugin", filepath.Join(n.lab.cfg.BinDir, "aws-cni"), "--ref-plugins", n.lab.cfg.RefPluginsDir, "--wait", "60s")
	cmd.Env = append(append([]string(nil), n.env...), "AWS_VPC_K8S_PLUGIN_LOG_FILE=/var/log/aws-routed-eni/plugin.log")
	type result struct {
		out []byte
		err error
	}
	res := make(chan result, 1)
	go func() {
		out, err := cmd.CombinedOutput()
		res <- result{out, err}
	}()
	select {
	case r := <-res:
		if r.err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("install aws-cni: %v: %s; ipamd log: %s", r.err, strings.TrimSpace(string(r.out)), n.lastLog())
		}
		return nil
	case <-p.done:
		cancel()
		<-res
		return fmt.Errorf("ipamd exited during start-up (%v): %s", p.err, n.lastLog())
	}
}

// command runs a program on the node: inside its network and mount
// namespaces, so hard-coded paths like /var/run/aws-node work.
func (n *Node) command(prog string, args ...string) *exec.Cmd {
	return n.commandContext(context.Background(), prog, args...)
}

func (n *Node) commandContext(ctx context.Context, prog string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + n.netns, "--mount=" + n.mntns, "--", prog}, args...)...)
}

// Exec runs a command on the node and returns its combined output.
func (n *Node) Exec(ctx context.Context, args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("exec: no command")
	}
	out, err := n.commandContext(ctx, args[0], args[1:]...).CombinedOutput()
	return string(out), err
}

// startIpamd starts a new ipamd process with the node's environment; its
// stdout and stderr go to the node's ipamd log.
func (n *Node) startIpamd() (*ipamdProc, error) {
	cmd, logPath := n.rt.command(n)
	cmd.Env = append([]string(nil), n.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("ipamd log: %w", err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopping {
		logf.Close()
		return nil, errors.New("node is stopping")
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start ipamd: %w", err)
	}
	logf.Close() // the child has its own descriptor
	p := &ipamdProc{cmd: cmd, started: time.Now(), done: make(chan struct{})}
	n.ipamd = p
	go func() {
		p.err = cmd.Wait()
		close(p.done)
		n.ipamdExited(p)
	}()
	if lp, ok := n.rt.(interface{ liveness(*Node, *ipamdProc) }); ok {
		go lp.liveness(n, p)
	}
	return p, nil
}

// ipamdExited restarts an ipamd that exited by itself, after the lab's
// restart delay (as a kubelet restarts aws-node), unless the lab says never.
func (n *Node) ipamdExited(p *ipamdProc) {
	n.mu.Lock()
	current := n.ipamd == p && !p.stopped && !n.stopping
	n.mu.Unlock()
	if !current {
		return
	}
	pol := n.lab.cfg.IpamdRestart
	n.lab.log.Warn("ipamd exited", "node", n.Name, "status", fmt.Sprint(p.err), "lastLog", n.lastLog(), "restart", pol.String())
	n.lab.rec.mark(Mark{T: time.Now(), Node: n.Name, Kind: "ipamd exited", Detail: fmt.Sprint(p.err)})
	if pol.Never {
		return
	}
	time.AfterFunc(pol.delay(), func() {
		n.mu.Lock()
		again := n.ipamd == p && !n.stopping
		if again {
			n.restarts++
		}
		n.mu.Unlock()
		if again {
			n.lab.rec.mark(Mark{T: time.Now(), Node: n.Name, Kind: "ipamd restarted"})
			if _, err := n.startIpamd(); err != nil {
				n.lab.log.Error("ipamd restart", "node", n.Name, "err", err)
			}
		}
	})
}

// current returns the node's latest ipamd run.
func (n *Node) current() *ipamdProc {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ipamd
}

// SignalIpamd sends sig to the node's ipamd (its whole process group). A
// process that dies of it is restarted as the lab's restart policy says.
func (n *Node) SignalIpamd(sig syscall.Signal) error {
	if n.lab.kube != nil {
		return n.signalKubeIpamd(sig)
	}
	p := n.current()
	if p == nil || p.cmd.Process == nil {
		return fmt.Errorf("node %s has no ipamd", n.Name)
	}
	select {
	case <-p.done:
		return fmt.Errorf("node %s: ipamd is not running (%v)", n.Name, p.err)
	default:
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		return fmt.Errorf("node %s: signal ipamd: %w", n.Name, err)
	}
	// Report the signal's outcome, not the moment before it.
	select {
	case <-p.done:
	case <-time.After(time.Second):
	}
	return nil
}

// KillIpamd kills the node's ipamd with SIGKILL (a crash) and waits until
// it is gone; the lab's restart policy then applies.
func (n *Node) KillIpamd() {
	if n.lab.kube != nil {
		_ = n.signalKubeIpamd(syscall.SIGKILL)
		return
	}
	p := n.current()
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// stopIpamd kills the node's ipamd for good (the lab is closing).
func (n *Node) stopIpamd() {
	n.killIpamd(true, 5*time.Second)
}

// killIpamd kills the running ipamd so that nothing restarts it (and, if
// forGood, so that nothing starts one again), then waits up to wait for it
// to be gone (0: as long as it takes).
func (n *Node) killIpamd(forGood bool, wait time.Duration) {
	n.mu.Lock()
	if forGood {
		n.stopping = true
	}
	p := n.ipamd
	if p != nil {
		p.stopped = true
	}
	n.mu.Unlock()
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	var timeout <-chan time.Time
	if wait > 0 {
		timeout = time.After(wait)
	}
	select {
	case <-p.done:
	case <-timeout:
	}
}

// RestartIpamd kills ipamd and starts it again with the same environment,
// waiting until it serves.
func (n *Node) RestartIpamd(ctx context.Context) error {
	if n.lab.kube != nil {
		return n.restartKubeIpamd(ctx)
	}
	n.killIpamd(false, 0)
	n.mu.Lock()
	n.restarts++
	n.mu.Unlock()
	n.lab.rec.mark(Mark{T: time.Now(), Node: n.Name, Kind: "ipamd restarted", Detail: "restart asked for"})
	if _, err := n.startIpamd(); err != nil {
		return err
	}
	return n.WaitServing(ctx)
}

// IpamdState reports the node's ipamd.
func (n *Node) IpamdState() IpamdState {
	if n.lab.kube != nil {
		return n.kubeIpamdState()
	}
	n.mu.Lock()
	p, restarts := n.ipamd, n.restarts
	n.mu.Unlock()
	s := IpamdState{State: "stopped", Restarts: restarts, LastLog: n.lastLog()}
	if p == nil {
		return s
	}
	s.Since = p.started
	select {
	case <-p.done:
		s.State, s.Exit = "exited", fmt.Sprint(p.err)
		if p.err == nil {
			s.Exit = "exit status 0"
		}
	default:
		s.State, s.PID = "running", p.cmd.Process.Pid
	}
	return s
}

// lastLog returns the last non-empty line of the node's ipamd log (of the
// aws-node container's output when ipamd wrote nothing yet).
func (n *Node) lastLog() string { return n.rt.lastLog(n) }

func lastLineOf(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, _ := f.Stat()
	off := max(st.Size()-8192, 0)
	b := make([]byte, st.Size()-off)
	_, _ = f.ReadAt(b, off)
	return lastLine(string(b))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// WaitServing waits until the node's ipamd answers its gRPC health check
// on the node's socket, as aws-node's readiness probe does.
func (n *Node) WaitServing(ctx context.Context) error {
	return n.rt.ready(ctx, n, n.current(), false)
}

// waitHealthy waits until vpclab's ipamd answers its gRPC health check.
func (n *Node) waitHealthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	sock := n.SocketPath()
	conn, err := grpc.NewClient("passthrough:///ipamd", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}))
	if err != nil {
		return err
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	p := n.current()
	for {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
		ccancel()
		if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s: ipamd not serving: %v; last log line: %s", n.Name, err, n.lastLog())
		case <-p.done:
			return fmt.Errorf("node %s: ipamd exited (%v): %s", n.Name, p.err, n.lastLog())
		case <-time.After(100 * time.Millisecond):
		}
	}
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
	return n.httpGet(context.Background(), url)
}

func (n *Node) httpGet(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := n.httpc.Do(req)
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
	return n.metricsCtx(context.Background())
}

func (n *Node) metricsCtx(ctx context.Context) (string, error) {
	b, err := n.httpGet(ctx, "http://127.0.0.1:61678/metrics")
	return string(b), err
}

// stop removes the node's pods' namespaces; its ipamd is already gone.
func (n *Node) stop() error {
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
	if n.ns != nil {
		_ = n.ns.Close()
	}
	return errors.Join(errs...)
}

// vethPrefix is the prefix of the node's host veths (aws-node's
// AWS_VPC_K8S_CNI_VETHPREFIX, default eni).
func (n *Node) vethPrefix() string {
	for _, kv := range n.env {
		if v, ok := strings.CutPrefix(kv, "AWS_VPC_K8S_CNI_VETHPREFIX="); ok && v != "" {
			return v
		}
	}
	return "eni"
}
