package lab

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/lab/k8s"
)

// ErrPodExists says a pod of that name is already on the node.
var ErrPodExists = errors.New("pod exists")

// ErrKubernetesPods says the lab runs Kubernetes, whose pods come from the
// API server, not from pods add.
var ErrKubernetesPods = errors.New("pods are Kubernetes pods")

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

var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// ValidatePodName checks a pod's namespace and name as Kubernetes does: the
// namespace is a DNS-1123 label (≤ 63), the name a DNS-1123 subdomain (≤ 253).
func ValidatePodName(namespace, name string) error {
	if len(namespace) > 63 || !dns1123Label.MatchString(namespace) {
		return fmt.Errorf("pod namespace %q: want a DNS-1123 label (lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit)", trim(namespace))
	}
	if len(name) > 253 || !dns1123Subdomain.MatchString(name) {
		return fmt.Errorf("pod name %q: want a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', at most 253, starting and ending with a letter or digit)", trim(name))
	}
	return nil
}

func trim(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// AddPod creates a pod sandbox and runs the node's CNI configuration
// (aws-cni, then portmap) on it through libcni.
func (n *Node) AddPod(ctx context.Context, namespace, name string) (*Pod, error) {
	t0 := time.Now()
	p, err := n.addPod(ctx, namespace, name)
	if !errors.Is(err, ErrPodExists) && !errors.Is(err, ErrKubernetesPods) { // refused before any CNI ran
		n.recordPodOp("ADD", namespace+"/"+name, t0, err)
	}
	return p, err
}

// recordPodOp puts a pod operation on the lab's timeline.
func (n *Node) recordPodOp(op, pod string, t0 time.Time, err error) {
	o := PodOp{T: time.Now(), Node: n.Name, Pod: pod, Op: op, LatencyMs: float64(time.Since(t0).Microseconds()) / 1000}
	if err != nil {
		o.Err = err.Error()
	}
	n.lab.rec.podOp(o)
}

func (n *Node) addPod(ctx context.Context, namespace, name string) (*Pod, error) {
	if err := ValidatePodName(namespace, name); err != nil {
		return nil, err
	}
	if n.lab.kube != nil {
		return nil, fmt.Errorf("lab %s runs Kubernetes: %w (vpclab kubectl run %s --image %s --overrides '{\"spec\":{\"nodeName\":\"%s\"}}')", n.lab.cfg.Name, ErrKubernetesPods, name, k8s.AgnhostImage, n.Name)
	}
	key := namespace + "/" + name
	n.mu.Lock()
	if _, dup := n.pods[key]; dup {
		n.mu.Unlock()
		return nil, fmt.Errorf("pod %s already on node %s: %w", key, n.Name, ErrPodExists)
	}
	if n.stopping {
		n.mu.Unlock()
		return nil, fmt.Errorf("node %s is stopping", n.Name)
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
	list, err := n.conflist()
	if err != nil {
		return fail(err)
	}
	res, err := n.cni.AddNetworkList(ctx, list, p.rt())
	if err != nil {
		// A runtime calls DEL after a failed ADD, so nothing the ADD got
		// half-way (an address, rules) is left behind.
		_ = n.cni.DelNetworkList(context.WithoutCancel(ctx), list, p.rt())
		return fail(fmt.Errorf("add pod %s on %s: %w", key, n.Name, err))
	}
	ip, err := resultIP(res)
	if err != nil {
		_ = n.cni.DelNetworkList(ctx, list, p.rt())
		return fail(err)
	}
	p.IP = ip
	return p, nil
}

// AddPodRetry adds a pod the way a kubelet creates a sandbox: a failed ADD
// (followed by its DEL) is retried with Retry's back-off until timeout; the
// last error is returned with the number of attempts.
func (n *Node) AddPodRetry(ctx context.Context, namespace, name string, timeout time.Duration) (*Pod, error) {
	return n.AddPodAttempts(ctx, namespace, name, timeout, nil)
}

// AddPodAttempts is AddPodRetry telling onFail (optional) of every failed
// attempt, as Retry does.
func (n *Node) AddPodAttempts(ctx context.Context, namespace, name string, timeout time.Duration, onFail func(n int, err error, wait time.Duration)) (*Pod, error) {
	if err := ValidatePodName(namespace, name); err != nil {
		return nil, err
	}
	var p *Pod
	err := Retry(ctx, timeout, func() (bool, error) {
		var err error
		p, err = n.AddPod(ctx, namespace, name)
		return err != nil && !errors.Is(err, ErrPodExists) && !errors.Is(err, ErrKubernetesPods), err
	}, onFail)
	return p, err
}

// Retry runs attempt the way a kubelet retries a pod's sandbox: after a
// failure that attempt says is worth retrying, it waits 100 ms, doubling up
// to 2 s, and tries again, the last time when timeout is up. onFail
// (optional) hears of every failed attempt and the wait before the next
// (0: none). The last error is returned with the number of attempts.
func Retry(ctx context.Context, timeout time.Duration, attempt func() (retry bool, err error), onFail func(n int, err error, wait time.Duration)) error {
	deadline := time.Now().Add(timeout)
	wait := 100 * time.Millisecond
	for n := 1; ; n++ {
		retry, err := attempt()
		if err == nil {
			return nil
		}
		next := min(wait, time.Until(deadline))
		last := !retry || ctx.Err() != nil || next <= 0
		if onFail != nil {
			if last {
				next = 0
			}
			onFail(n, err, next)
		}
		if last {
			return fmt.Errorf("%w (%d attempts in %s)", err, n, timeout)
		}
		select {
		case <-time.After(next):
		case <-ctx.Done():
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// DelPod runs CNI DEL for the pod and removes its sandbox.
func (n *Node) DelPod(ctx context.Context, p *Pod) error {
	t0 := time.Now()
	err := n.delPod(ctx, p)
	n.recordPodOp("DEL", p.Namespace+"/"+p.Name, t0, err)
	return err
}

func (n *Node) delPod(ctx context.Context, p *Pod) error {
	list, err := n.conflist()
	if err != nil {
		return err
	}
	if err := n.cni.DelNetworkList(ctx, list, p.rt()); err != nil {
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
