package lab

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/ipamd"
	"github.com/vpclab/vpclab/lab/k8s"
)

// KubernetesConfig turns a lab into a Kubernetes cluster: a control plane
// reachable from the VPC (as EKS's endpoint ENIs are) and from the host by
// kubeconfig, containerd and a kubelet on every node, aws-node as a
// DaemonSet.
type KubernetesConfig struct {
	// Version is the Kubernetes version: the pinned one (k8s.KubeVersion)
	// unless empty.
	Version string `yaml:"version" json:"version,omitempty"`
	// MaxPods is every kubelet's --max-pods, as EKS's bootstrap lets one
	// set it (--use-max-pods false); 0: EKS's value for the instance type
	// (vpclab max-pods).
	MaxPods int `yaml:"maxPods" json:"maxPods,omitempty"`
	// SecurityGroupsForPods runs the real VPC Resource Controller in the
	// control plane and aws-node with ENABLE_POD_ENI=true: pods a
	// SecurityGroupPolicy selects get branch ENIs with its groups.
	SecurityGroupsForPods bool `yaml:"securityGroupsForPods" json:"securityGroupsForPods,omitempty"`
	// ENIConfigs are custom networking's ENIConfig objects, created before
	// aws-node starts (with AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true a node
	// uses the one its labels name, else "default").
	ENIConfigs []ENIConfig `yaml:"eniConfigs" json:"eniConfigs,omitempty"`
}

// ENIConfig is one ENIConfig (crd.k8s.amazonaws.com/v1alpha1): where
// custom networking puts the ENIs of the nodes that name it.
type ENIConfig struct {
	Name string `yaml:"name" json:"name"`
	// Subnet is the name of one of the lab's subnets (in the zone of the
	// nodes that use it).
	Subnet string `yaml:"subnet" json:"subnet"`
	// SecurityGroups are security group ids, or "default" for the VPC's
	// default group; none: the node's primary ENI's groups.
	SecurityGroups []string `yaml:"securityGroups" json:"securityGroups,omitempty"`
}

// kube is a lab's Kubernetes control plane and the host's way to it.
type kube struct {
	dir        string // the lab's k8s directory: PKI, configs, etcd data, logs
	ca         *k8s.CA
	cp         model.Instance // the control-plane instance (its ENI is the endpoint)
	cpNS       ns.NetNS
	proxy      net.Listener // the apiserver on host loopback
	kubeconfig string       // the admin kubeconfig (host)
	endpoint   string       // https://<control-plane IP> (the VPC's view)

	awsNodeTars []string // the aws-node images every node imports

	mu    sync.Mutex
	procs []*exec.Cmd
}

// hostSysctls are the host settings a kubelet or kube-proxy changes
// globally; a Kubernetes lab puts them back when it closes.
var hostSysctls = []string{"vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops", "net.ipv4.conf.all.route_localnet"}

// startKubernetes records the host settings Kubernetes changes, starts
// the control plane and writes the aws-node images for the nodes' CNI.
func (l *Lab) startKubernetes(ctx context.Context, specs []nodeSpec, progress Progress) error {
	l.sysctls = map[string]string{}
	for _, k := range hostSysctls {
		if b, err := os.ReadFile(filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))); err == nil {
			l.sysctls[k] = strings.TrimSpace(string(b))
		}
	}
	if err := os.MkdirAll(l.kubeDir(), 0o755); err != nil {
		return err
	}
	if err := l.startControlPlane(ctx, progress); err != nil {
		return err
	}
	if l.sgpEnabled() {
		if err := l.startResourceController(ctx, progress); err != nil {
			return err
		}
	}
	tars, err := l.prepareAWSNodeImages(specs[0].build)
	if err != nil {
		return fmt.Errorf("aws-node images: %w", err)
	}
	l.kube.awsNodeTars = tars
	return nil
}

// restoreSysctls puts back the host settings Kubernetes mode changed.
func (l *Lab) restoreSysctls() error {
	var errs []error
	for k, v := range l.sysctls {
		p := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
		if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) != v {
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("restore %s=%s: %w", k, v, err))
			}
		}
	}
	return errors.Join(errs...)
}

// kubeDir is where a lab's cluster files live.
func (l *Lab) kubeDir() string { return filepath.Join(l.paths.Root(), "k8s") }

// Kubeconfig is the admin kubeconfig of a Kubernetes lab ("" otherwise).
func (l *Lab) Kubeconfig() string {
	if l.kube == nil {
		return ""
	}
	return l.kube.kubeconfig
}

// startControlPlane launches the control-plane instance, writes the
// cluster's PKI and starts etcd, the apiserver, the controller manager
// and the scheduler inside the instance's namespace.
func (l *Lab) startControlPlane(ctx context.Context, progress Progress) error {
	insts, err := l.region.RunInstances(model.RunInstancesInput{InstanceType: "m5.large", SubnetID: l.subnets[l.cfg.Subnets[0].Name],
		Tags: model.Tags{"Name": l.cfg.Name + "-control-plane", "vpclab:role": "control-plane"}})
	if err != nil {
		return fmt.Errorf("control plane instance: %w", err)
	}
	k := &kube{dir: l.kubeDir(), cp: insts[0]}
	l.kube = k
	wctx, cancel := context.WithTimeout(ctx, l.cfg.slow(time.Minute))
	defer cancel()
	if err := l.fab.WaitSynced(wctx); err != nil {
		return err
	}
	path, ok := l.fab.NodeNamespace(k.cp.ID)
	if !ok {
		return fmt.Errorf("fabric has no namespace for the control plane %s", k.cp.ID)
	}
	if k.cpNS, err = ns.GetNS(path); err != nil {
		return err
	}
	ip := k.cp.PrivateIP.String()
	k.endpoint = "https://" + ip
	if err := k.writePKI(ip); err != nil {
		return fmt.Errorf("cluster PKI: %w", err)
	}
	if err := k.serveProxy(); err != nil {
		return err
	}
	if err := k.startEtcdAndAPIServer(ctx, path, ip, l.cfg.slow(90*time.Second)); err != nil {
		return err
	}
	progress("Kubernetes %s control plane at %s (in the VPC), %s (host); kubeconfig %s", k8s.KubeVersion, k.endpoint, "https://"+k.proxy.Addr().String(), k.kubeconfig)
	return nil
}

// writePKI writes the CA, the apiserver's serving certificate, the
// components' client certificates and their kubeconfigs.
func (k *kube) writePKI(ip string) error {
	pki := filepath.Join(k.dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}
	var err error
	if k.ca, err = k8s.NewCA("vpclab-" + filepath.Base(filepath.Dir(k.dir))); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(pki, "ca.crt"), k.ca.PEM, 0o644); err != nil {
		return err
	}
	serving, err := k.ca.Issue("kube-apiserver", nil, ip, "127.0.0.1", k8s.APIServiceIP, "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc."+k8s.ClusterDomain)
	if err != nil {
		return err
	}
	if err := serving.Write(pki, "apiserver"); err != nil {
		return err
	}
	if err := k8s.ServiceAccountKey(pki); err != nil {
		return err
	}
	clients := []struct{ name, cn, group, server string }{
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters", ""},
		{"admin", "kubernetes-admin", "system:masters", "host"},
		{"controller-manager", "system:kube-controller-manager", "", "https://127.0.0.1"},
		{"scheduler", "system:kube-scheduler", "", "https://127.0.0.1"},
		{"kube-proxy", "system:kube-proxy", "system:node-proxier", "https://" + ip},
	}
	for _, c := range clients {
		var groups []string
		if c.group != "" {
			groups = []string{c.group}
		}
		p, err := k.ca.Issue(c.cn, groups)
		if err != nil {
			return err
		}
		if err := p.Write(pki, c.name); err != nil {
			return err
		}
		if c.server != "" && c.server != "host" {
			if err := os.WriteFile(filepath.Join(k.dir, c.name+".conf"), k8s.Kubeconfig(c.server, k.ca.PEM, c.cn, p), 0o600); err != nil {
				return err
			}
		}
	}
	return nil
}

// serveProxy serves the apiserver on a host loopback port (TCP relayed
// into the control plane's namespace) and writes the admin kubeconfig for
// it.
func (k *kube) serveProxy() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	k.proxy = ln
	dial := netx.DialContextIn(k.cpNS)
	target := net.JoinHostPort(k.cp.PrivateIP.String(), strconv.Itoa(k8s.APIPort))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				up, err := dial(ctx, "tcp", target)
				cancel()
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	pki := filepath.Join(k.dir, "pki")
	cert, err := os.ReadFile(filepath.Join(pki, "admin.crt"))
	if err != nil {
		return err
	}
	key, err := os.ReadFile(filepath.Join(pki, "admin.key"))
	if err != nil {
		return err
	}
	k.kubeconfig = filepath.Join(k.dir, "admin.conf")
	return os.WriteFile(k.kubeconfig, k8s.Kubeconfig("https://"+ln.Addr().String(), k.ca.PEM, "kubernetes-admin", k8s.Pair{Cert: cert, Key: key}), 0o600)
}

// startEtcdAndAPIServer starts etcd and the apiserver, waits up to wait
// for the apiserver's readiness, then starts the controller manager and the
// scheduler.
func (k *kube) startEtcdAndAPIServer(ctx context.Context, nsPath, ip string, wait time.Duration) error {
	pki := filepath.Join(k.dir, "pki")
	p := func(f string) string { return filepath.Join(pki, f) }
	if err := k.start(nsPath, "etcd", "--data-dir", filepath.Join(k.dir, "etcd"), "--listen-client-urls", "http://127.0.0.1:2379", "--listen-peer-urls", "http://127.0.0.1:2380"); err != nil {
		return err
	}
	if err := k.start(nsPath, "kube-apiserver", "--etcd-servers", "http://127.0.0.1:2379", "--bind-address", "0.0.0.0", "--secure-port", strconv.Itoa(k8s.APIPort),
		"--advertise-address", ip, "--service-cluster-ip-range", k8s.ServiceCIDR, "--tls-cert-file", p("apiserver.crt"), "--tls-private-key-file", p("apiserver.key"),
		"--client-ca-file", p("ca.crt"), "--kubelet-client-certificate", p("apiserver-kubelet-client.crt"), "--kubelet-client-key", p("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority", p("ca.crt"), "--kubelet-preferred-address-types", "InternalIP,Hostname",
		"--service-account-issuer", "https://kubernetes.default.svc."+k8s.ClusterDomain, "--service-account-key-file", p("sa.pub"), "--service-account-signing-key-file", p("sa.key"),
		"--authorization-mode", "Node,RBAC", "--allow-privileged", "--profiling=false", "--enable-priority-and-fairness=false", "--endpoint-reconciler-type", "lease"); err != nil {
		return err
	}
	if err := k.waitReady(ctx, wait); err != nil {
		return err
	}
	if err := k.start(nsPath, "kube-controller-manager", "--kubeconfig", filepath.Join(k.dir, "controller-manager.conf"),
		"--authentication-kubeconfig", filepath.Join(k.dir, "controller-manager.conf"), "--authorization-kubeconfig", filepath.Join(k.dir, "controller-manager.conf"),
		"--service-account-private-key-file", p("sa.key"), "--root-ca-file", p("ca.crt"), "--use-service-account-credentials",
		"--leader-elect=false", "--bind-address", "127.0.0.1",
		"--profiling=false"); err != nil {
		return err
	}
	return k.start(nsPath, "kube-scheduler", "--kubeconfig", filepath.Join(k.dir, "scheduler.conf"), "--authentication-kubeconfig", filepath.Join(k.dir, "scheduler.conf"),
		"--authorization-kubeconfig", filepath.Join(k.dir, "scheduler.conf"), "--leader-elect=false", "--bind-address", "127.0.0.1", "--profiling=false")
}

// start runs a control-plane component in the control plane's network
// namespace; its output goes to <dir>/<component>.log.
func (k *kube) start(nsPath, component string, args ...string) error {
	return k.startProg(nsPath, component, nil, k8s.Bin("kube"), append([]string{component}, args...)...)
}

// startProg runs prog with args (and env added to the lab's) in the
// control plane's network namespace; its output goes to <dir>/<name>.log.
func (k *kube) startProg(nsPath, name string, env []string, prog string, args ...string) error {
	component := name
	logf, err := os.OpenFile(filepath.Join(k.dir, name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", append([]string{"--net=" + nsPath, "--", prog}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", component, err)
	}
	go func() { _ = cmd.Wait() }()
	k.mu.Lock()
	k.procs = append(k.procs, cmd)
	k.mu.Unlock()
	return nil
}

// waitReady waits up to wait for the apiserver's /readyz.
func (k *kube) waitReady(ctx context.Context, wait time.Duration) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(k.ca.PEM)
	cert, err := tls.LoadX509KeyPair(filepath.Join(k.dir, "pki", "admin.crt"), filepath.Join(k.dir, "pki", "admin.key"))
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: netx.DialContextIn(k.cpNS),
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	deadline := time.Now().Add(wait)
	var last error
	for time.Now().Before(deadline) {
		resp, err := c.Get(k.endpoint + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("readyz: %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("kube-apiserver not ready after %s (%v); see %s", wait, last, filepath.Join(k.dir, "kube-apiserver.log"))
}

// Kubectl runs the lab's kubectl (the pinned build) with the admin
// kubeconfig; stdin may be nil.
func (l *Lab) Kubectl(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	if l.kube == nil {
		return nil, fmt.Errorf("lab %s is not a Kubernetes lab (vpclab up --kubernetes)", l.cfg.Name)
	}
	cmd := exec.CommandContext(ctx, k8s.Bin("kube"), append([]string{"kubectl", "--kubeconfig", l.kube.kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// KubePod is a pod as the API shows it, and whether its address is one
// of its node's ENIs' in EC2. Node is the lab's name for its node,
// KubeNode the Kubernetes one (the instance's private DNS name).
type KubePod struct {
	Namespace, Name, Node, KubeNode, Phase, IP string
	HostNetwork                                bool
	// Terminating: deleted, still holding its sandbox (and address) until
	// the kubelet has torn it down.
	Terminating bool
	Restarts    int
	// OnNodeENIs: the pod's IP is a secondary address or inside a prefix
	// of an ENI attached to its node's instance, as EC2 says.
	OnNodeENIs bool
	// PodENI is the VPC Resource Controller's pod-eni annotation (a branch
	// ENI pod), "" for other pods.
	PodENI string
}

// KubePods lists the pods (every namespace) that selector (a label
// selector, "" for all) picks, terminating ones included.
func (l *Lab) KubePods(ctx context.Context, selector string) ([]KubePod, error) {
	args := []string{"get", "pods", "-A", "-o", "json"}
	if selector != "" {
		args = append(args, "-l", selector)
	}
	b, err := l.Kubectl(ctx, nil, args...)
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Namespace, Name   string
				DeletionTimestamp *string
				Annotations       map[string]string
			}
			Spec struct {
				NodeName    string
				HostNetwork bool
			}
			Status struct {
				Phase, PodIP      string
				ContainerStatuses []struct{ RestartCount int }
			}
		}
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("kubectl get pods: %w", err)
	}
	var out []KubePod
	for _, it := range list.Items {
		p := KubePod{Namespace: it.Metadata.Namespace, Name: it.Metadata.Name, Node: it.Spec.NodeName, KubeNode: it.Spec.NodeName, Phase: it.Status.Phase,
			IP: it.Status.PodIP, HostNetwork: it.Spec.HostNetwork, Terminating: it.Metadata.DeletionTimestamp != nil,
			PodENI: it.Metadata.Annotations[ipamd.PodENIAnnotation]}
		for _, c := range it.Status.ContainerStatuses {
			p.Restarts += c.RestartCount
		}
		if n := l.nodeByKubeName(p.KubeNode); n != nil {
			p.Node = n.Name
			if ip, err := netip.ParseAddr(p.IP); err == nil {
				p.OnNodeENIs = l.onInstanceENIs(n.Instance.ID, ip)
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// onInstanceENIs says whether ip is a secondary address or inside a prefix
// of an ENI attached to the instance, as EC2 says.
func (l *Lab) onInstanceENIs(instance string, ip netip.Addr) bool {
	for _, e := range l.region.NetworkInterfaces() {
		if e.Attachment == nil || e.Attachment.InstanceID != instance {
			continue
		}
		if slices.Contains(e.SecondaryIPs, ip) || slices.ContainsFunc(e.Prefixes, func(p netip.Prefix) bool { return p.Contains(ip) }) {
			return true
		}
	}
	return false
}

// KubeEvents counts the cluster's events of a reason (FailedCreatePodSandBox,
// …), each event's repeat count included.
func (l *Lab) KubeEvents(ctx context.Context, reason string) (int, error) {
	b, err := l.Kubectl(ctx, nil, "get", "events", "-A", "--field-selector", "reason="+reason, "-o", "json")
	if err != nil {
		return 0, err
	}
	var list struct {
		Items []struct{ Count int }
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return 0, fmt.Errorf("kubectl get events: %w", err)
	}
	n := 0
	for _, e := range list.Items {
		n += max(e.Count, 1)
	}
	return n, nil
}

// stop kills the control plane (etcd last would make the apiserver hang;
// SIGKILL makes order moot) and closes the host relay.
func (k *kube) stop() {
	if k.proxy != nil {
		_ = k.proxy.Close()
	}
	k.mu.Lock()
	procs := k.procs
	k.procs = nil
	k.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		if procs[i].Process != nil {
			_ = syscall.Kill(-procs[i].Process.Pid, syscall.SIGKILL)
		}
	}
	if k.cpNS != nil {
		_ = k.cpNS.Close()
	}
}
