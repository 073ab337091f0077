package lab

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vpclab/vpclab/fakeec2/catalog"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/lab/k8s"
)

// kubeNodeDirs are a Kubernetes node's private directories, besides
// NodeDirs: the kubelet's, containerd's and CNI state, pod logs, the node's
// configuration, and pod network namespaces (so they stay off the host's
// /run/netns).
var kubeNodeDirs = []string{"/var/lib/kubelet", "/var/lib/containerd", "/run/containerd", "/var/log/pods", "/var/log/containers", "/var/lib/cni", "/etc/kubernetes", "/run/netns"}

// kubeMounts are the mounts a Kubernetes node adds to its namespace.
func (n *Node) kubeMounts() [][2]string {
	var out [][2]string
	for _, d := range kubeNodeDirs {
		out = append(out, [2]string{d, hostDir(n.root, d)})
	}
	return out
}

// KubeName is the node's name in Kubernetes, as on an EKS AMI: the
// instance's private DNS name (ip-192-168-0-5.us-west-2.compute.internal);
// its label vpclab.io/node is the lab's name for it.
func (n *Node) KubeName() string {
	return model.PrivateDNSName(n.Instance.PrivateIP, n.lab.cfg.Region)
}

// nodeByKubeName finds the lab node a Kubernetes node name is.
func (l *Lab) nodeByKubeName(name string) *Node {
	for _, n := range l.Nodes() {
		if n.KubeName() == name {
			return n
		}
	}
	return nil
}

// cgroupRoot is the node's kubelet cgroup root: its pods' cgroups live
// below it, apart from other nodes'.
func (n *Node) cgroupRoot() string { return "/vpclab-" + n.lab.cfg.Name + "-" + n.Name }

// startKubeNode makes the node a Kubernetes node: a sysfs of its own
// network namespace, its cgroup root, configuration and credentials, then
// containerd (with the cluster's images imported), the kubelet and
// kube-proxy. The node stays NotReady until aws-node writes the conflist.
func (n *Node) startKubeNode(ctx context.Context) error {
	if n.hostPaths {
		// The machine is the node: its own /sys already shows its links,
		// and the kubelet's and containerd's directories are its own.
		for _, d := range kubeNodeDirs {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
	} else {
		// sysfs shows the mounting process's network namespace: the
		// kubelet must see the node's links, not the host's (cgroups
		// kept).
		stash := filepath.Join(n.root, "cgroup-stash")
		if err := os.MkdirAll(stash, 0o755); err != nil {
			return err
		}
		if out, err := n.command("sh", "-ec", fmt.Sprintf("mount --rbind /sys/fs/cgroup %s; mount -t sysfs sysfs /sys; mount --move %s /sys/fs/cgroup", stash, stash)).CombinedOutput(); err != nil {
			return fmt.Errorf("node sysfs: %v: %s", err, out)
		}
	}
	if n.hostNS {
		if err := n.routeServices(); err != nil {
			return err
		}
	}
	if err := k8s.CreateCgroups(n.cgroupRoot()); err != nil {
		return fmt.Errorf("cgroups: %w", err)
	}
	if err := n.writeKubeFiles(); err != nil {
		return err
	}
	if err := n.startKubeProc("containerd", k8s.Bin("containerd"), "--config", "/etc/kubernetes/containerd.toml"); err != nil {
		return err
	}
	if err := n.waitSocket(ctx, filepath.Join(n.path("/run/containerd"), "containerd.sock")); err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	// What the node needs to turn Ready (the sandbox and aws-node) first;
	// the workloads' images while the kubelet registers and aws-node
	// starts (nothing else is scheduled before the node is Ready, and
	// installAddons waits for them before that).
	if err := n.importImages(ctx, append([]string{k8s.ImageTar("pause")}, n.lab.kube.awsNodeTars...)...); err != nil {
		return err
	}
	n.imagesDone = make(chan error, 1)
	go func() { n.imagesDone <- n.importImages(ctx, k8s.ImageTar("agnhost"), k8s.ImageTar("coredns")) }()
	labels := fmt.Sprintf("topology.kubernetes.io/zone=%s,topology.kubernetes.io/region=%s,node.kubernetes.io/instance-type=%s,vpclab.io/node=%s",
		n.subnetAZ(), n.lab.cfg.Region, n.Instance.Type, n.Name)
	for _, k := range slices.Sorted(maps.Keys(n.labels)) {
		labels += "," + k + "=" + n.labels[k]
	}
	if err := n.startKubeProc("kubelet", k8s.Bin("kube"), "kubelet", "--config", "/etc/kubernetes/kubelet-config.yaml", "--kubeconfig", "/etc/kubernetes/kubelet.conf",
		"--hostname-override", n.KubeName(), "--node-ip", n.Instance.PrivateIP.String(), "--node-labels", labels, "--root-dir", "/var/lib/kubelet"); err != nil {
		return err
	}
	return n.startKubeProc("kube-proxy", k8s.Bin("kube"), "kube-proxy", "--config", "/etc/kubernetes/kube-proxy-config.yaml")
}

// routeServices sends the node's own connections to the cluster's
// services out of its primary ENI, from its primary address, as an EKS
// node's default route does. A hostNamespace node keeps the machine's
// default route (the VM's own NIC): without this route a host-network pod
// (aws-node) reaching the API through its service address would leave
// from the VM's address, which the VPC cannot answer. The route goes with
// the ENI's link when the lab closes.
func (n *Node) routeServices() error {
	s, ok := n.subnet()
	if !ok {
		return fmt.Errorf("node %s: subnet %s not in the region", n.Name, n.Instance.SubnetID)
	}
	router := s.CIDR.Addr().Next().String() // the VPC router, as EC2 places it
	if out, err := n.command("ip", "route", "replace", k8s.ServiceCIDR, "via", router, "src", n.Instance.PrivateIP.String()).CombinedOutput(); err != nil {
		return fmt.Errorf("node %s: route to the cluster's services: %v: %s", n.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// subnet is the node's subnet, as the region has it.
func (n *Node) subnet() (model.Subnet, bool) {
	for _, s := range n.lab.region.Subnets() {
		if s.ID == n.Instance.SubnetID {
			return s, true
		}
	}
	return model.Subnet{}, false
}

// subnetAZ is the zone of the node's subnet.
func (n *Node) subnetAZ() string {
	s, _ := n.subnet()
	return s.AZ
}

// writeKubeFiles writes the node's /etc/kubernetes: credentials (one
// certificate serves as the kubelet's client and serving identity),
// kubeconfigs, and the kubelet's, kube-proxy's and containerd's
// configuration.
func (n *Node) writeKubeFiles() error {
	k := n.lab.kube
	etc := n.path("/etc/kubernetes")
	pki := filepath.Join(etc, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}
	cred, err := k.ca.Issue("system:node:"+n.KubeName(), []string{"system:nodes"}, n.Instance.PrivateIP.String(), n.KubeName())
	if err != nil {
		return err
	}
	if err := cred.Write(pki, "kubelet"); err != nil {
		return err
	}
	proxyCert, err := os.ReadFile(filepath.Join(k.dir, "pki", "kube-proxy.crt"))
	if err != nil {
		return err
	}
	proxyKey, err := os.ReadFile(filepath.Join(k.dir, "pki", "kube-proxy.key"))
	if err != nil {
		return err
	}
	t, ok := catalog.Lookup(n.Instance.Type)
	if !ok {
		return fmt.Errorf("instance type %s not in the catalog", n.Instance.Type)
	}
	prefix := strings.EqualFold(n.envValue("ENABLE_PREFIX_DELEGATION"), "true")
	maxPods := t.MaxPodsFor(prefix, strings.EqualFold(n.envValue(customNetworkingVar), "true"))
	if m := n.lab.cfg.Kubernetes.MaxPods; m > 0 {
		maxPods = m
	}
	files := map[string]string{
		"pki/ca.crt":             string(k.ca.PEM),
		"kubelet.conf":           string(k8s.Kubeconfig(k.endpoint, k.ca.PEM, "system:node:"+n.KubeName(), cred)),
		"kube-proxy.conf":        string(k8s.Kubeconfig(k.endpoint, k.ca.PEM, "system:kube-proxy", k8s.Pair{Cert: proxyCert, Key: proxyKey})),
		"kube-proxy-config.yaml": k8s.KubeProxyConfig(n.KubeName()),
		"containerd.toml":        k8s.ContainerdConfig(),
		"resolv.conf":            k8s.ResolvConf,
		"kubelet-config.yaml": k8s.KubeletConfig(k8s.KubeletOptions{CgroupRoot: n.cgroupRoot(), MaxPods: maxPods,
			ProviderID: fmt.Sprintf("aws:///%s/%s", n.subnetAZ(), n.Instance.ID)}),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(body), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// envValue is a variable of the node's aws-node environment.
func (n *Node) envValue(k string) string {
	for _, kv := range n.env {
		if v, ok := strings.CutPrefix(kv, k+"="); ok {
			return v
		}
	}
	return ""
}

// startKubeProc starts a node process (containerd, kubelet, kube-proxy) in
// the node's namespaces; its output goes to the node's log directory.
func (n *Node) startKubeProc(name, prog string, args ...string) error {
	logf, err := os.OpenFile(n.kubeLog(name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := n.command(prog, args...)
	cmd.Env = []string{"PATH=" + filepath.Dir(k8s.Bin("kube")) + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = cmd.Wait() }()
	n.mu.Lock()
	n.kubeProcs = append(n.kubeProcs, cmd)
	n.mu.Unlock()
	return nil
}

// kubeLog is where a node process's output goes.
func (n *Node) kubeLog(name string) string {
	return filepath.Join(filepath.Dir(n.path("/var/log/aws-routed-eni")), name+".log")
}

// waitSocket waits until a unix socket accepts connections.
func (n *Node) waitSocket(ctx context.Context, path string) error {
	wait := n.lab.cfg.slow(30 * time.Second)
	deadline := time.Now().Add(wait)
	for {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %s: %v", path, wait, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// importImages loads image tarballs into the node's containerd, all at
// once.
func (n *Node) importImages(ctx context.Context, tars ...string) error {
	errs := make([]error, len(tars))
	var wg sync.WaitGroup
	for i, t := range tars {
		wg.Go(func() {
			out, err := n.commandContext(ctx, k8s.Bin("ctr"), "-a", "/run/containerd/containerd.sock", "-n", "k8s.io", "images", "import", t).CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("node %s: import %s: %v: %s", n.Name, filepath.Base(t), err, strings.TrimSpace(string(out)))
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ImportImage loads an image tarball (docker-archive or OCI) into every
// node's containerd.
func (l *Lab) ImportImage(ctx context.Context, tar string) error {
	if l.kube == nil {
		return fmt.Errorf("lab %s is not a Kubernetes lab (vpclab up --kubernetes)", l.cfg.Name)
	}
	for _, n := range l.Nodes() {
		if err := n.importImages(ctx, tar); err != nil {
			return err
		}
	}
	return nil
}

// stopKube kills the node's pods (by cgroup: they are in neither of its
// namespaces) and processes, then removes its cgroups.
func (n *Node) stopKube() error {
	n.mu.Lock()
	procs := n.kubeProcs
	n.kubeProcs = nil
	n.mu.Unlock()
	for _, p := range procs { // the kubelet first, so it restarts nothing
		if p.Process != nil {
			_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
		}
	}
	for i := 0; i < 20 && k8s.KillCgroups(n.cgroupRoot()) > 0; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	var err error
	for i := 0; i < 50; i++ { // a killed process leaves its cgroup shortly after
		if err = k8s.RemoveCgroups(n.cgroupRoot()); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n.hostPaths {
		err = errors.Join(err, releaseHostKubeDirs())
	}
	return err
}

// releaseHostKubeDirs undoes what a node's kubelet and containerd mounted
// in the machine's own directories (a hostPaths node has no mount
// namespace to drop them with): pods' volumes, containers' root
// filesystems, and the pods' network namespaces (containerd's cni-…),
// whose removal also takes their host veths.
func releaseHostKubeDirs() error {
	var errs []error
	for _, d := range []string{"/var/lib/kubelet", "/run/containerd", "/var/lib/containerd"} {
		errs = append(errs, unmountUnder(d))
	}
	sandboxes, err := netx.ListNamed("cni-")
	errs = append(errs, err)
	for _, name := range sandboxes {
		errs = append(errs, netx.DeleteNamed(name))
	}
	return errors.Join(errs...)
}

// ipamdPID finds the node's ipamd in Kubernetes mode (it runs in the
// aws-node pod, in the node's network namespace): vpclab's ipamd or
// upstream's aws-k8s-agent.
func (n *Node) ipamdPID() int {
	var st unix.Stat_t
	if unix.Stat(n.netns, &st) != nil {
		return 0
	}
	for _, pid := range pidsInNamespaces(map[uint64]bool{st.Ino: true}, "net") {
		comm, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
		if c := strings.TrimSpace(string(comm)); c == "ipamd" || c == "aws-k8s-agent" {
			return pid
		}
	}
	return 0
}

// kubeIpamdState reports the ipamd of the node's aws-node pod.
func (n *Node) kubeIpamdState() IpamdState {
	s := IpamdState{State: "stopped", LastLog: n.lastLog()}
	if pid := n.ipamdPID(); pid != 0 {
		s.State, s.PID = "running", pid
		if st, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); err == nil {
			s.Since = st.ModTime()
		}
	}
	return s
}

// signalKubeIpamd signals the ipamd of the node's aws-node pod (the
// kubelet restarts its container if it dies).
func (n *Node) signalKubeIpamd(sig syscall.Signal) error {
	pid := n.ipamdPID()
	if pid == 0 {
		return fmt.Errorf("node %s: no ipamd running in its aws-node pod", n.Name)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("node %s: signal ipamd: %w", n.Name, err)
	}
	return nil
}

// restartKubeIpamd kills the aws-node pod's ipamd and waits until the
// kubelet has restarted it and it serves metrics again.
func (n *Node) restartKubeIpamd(ctx context.Context) error {
	old := n.ipamdPID()
	if err := n.signalKubeIpamd(syscall.SIGKILL); err != nil {
		return err
	}
	deadline := time.Now().Add(n.lab.cfg.slow(2 * time.Minute))
	for {
		if pid := n.ipamdPID(); pid != 0 && pid != old {
			if _, err := n.Metrics(); err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: ipamd not back 2 min after it was killed: %s", n.Name, n.lastLog())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
