package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/lab"
	"github.com/vpclab/vpclab/lab/k8s"
)

// Kubernetes mode: a control plane, a kubelet and containerd on every
// node, aws-node as a DaemonSet (make kubernetes builds what it runs).

// kubeLab brings up a Kubernetes lab of nodes × typ running cni.
func kubeLab(nodes int, typ string, cni lab.CNI) *lab.Lab {
	GinkgoHelper()
	if cni.IsUpstream() {
		_, err := buildUpstream()
		Expect(err).NotTo(HaveOccurred())
	}
	cfg := lab.Default()
	cfg.Name, cfg.BinDir, cfg.CNI = labName(), *bins, cni
	cfg.Nodes[0].Count, cfg.Nodes[0].InstanceType = nodes, typ
	cfg.Kubernetes = &lab.KubernetesConfig{}
	l, err := lab.New(context.Background(), cfg, GinkgoWriter.Printf)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(l.Close()).To(Succeed()) })
	return l
}

// kubectl runs the lab's kubectl and returns its output.
func kubectl(l *lab.Lab, args ...string) string {
	GinkgoHelper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := l.Kubectl(ctx, nil, args...)
	Expect(err).NotTo(HaveOccurred())
	return string(out)
}

// apply applies a manifest.
func apply(l *lab.Lab, manifest string) {
	GinkgoHelper()
	_, err := l.Kubectl(context.Background(), []byte(manifest), "apply", "-f", "-")
	Expect(err).NotTo(HaveOccurred())
}

// podsOf lists the pods with label app=app that are not being deleted.
func podsOf(l *lab.Lab, app string) []lab.KubePod {
	GinkgoHelper()
	all, err := l.KubePods(context.Background(), "app="+app)
	Expect(err).NotTo(HaveOccurred())
	var out []lab.KubePod
	for _, p := range all {
		if !p.Terminating {
			out = append(out, p)
		}
	}
	return out
}

// running waits until want pods of app run with addresses.
func running(l *lab.Lab, app string, want int, within time.Duration) []lab.KubePod {
	GinkgoHelper()
	var pods []lab.KubePod
	Eventually(func() int {
		pods = podsOf(l, app)
		n := 0
		for _, p := range pods {
			if p.Phase == "Running" && p.IP != "" {
				n++
			}
		}
		if n != len(pods) {
			return -n
		}
		return n
	}).WithTimeout(within).WithPolling(500 * time.Millisecond).Should(Equal(want))
	return pods
}

// deployment is agnhost's HTTP server (netexec) as a Deployment.
func deployment(name string, replicas int, extra string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s}
spec:
  replicas: %[2]d
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: %[3]s
        imagePullPolicy: Never
        args: [netexec, --http-port=8080]
        ports: [{containerPort: 8080}]
%[4]s`, name, replicas, k8s.AgnhostImage, extra)
}

// httpGet is a shell command fetching path from "HOST PORT" with nc.
func httpGet(hostPort, path string) string {
	return fmt.Sprintf(`printf 'GET %s HTTP/1.0\r\n\r\n' | nc -w 5 %s`, path, hostPort)
}

// hostSnapshot is what a Kubernetes lab must leave as it found it.
type hostSnapshot struct {
	sysctls   map[string]string
	mounts    int
	cgroups   []string
	kubeRules int // the host's iptables lines naming KUBE- chains
}

func snapshotHost(name string) hostSnapshot {
	s := hostSnapshot{sysctls: map[string]string{}}
	for _, k := range []string{"vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops", "net.ipv4.conf.all.route_localnet", "net.ipv4.ip_forward"} {
		b, _ := os.ReadFile(filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/")))
		s.sysctls[k] = strings.TrimSpace(string(b))
	}
	b, _ := os.ReadFile("/proc/self/mounts")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, name) {
			s.mounts++
		}
	}
	s.cgroups, _ = filepath.Glob("/sys/fs/cgroup/*/vpclab-" + name + "-*")
	out, _ := exec.Command("iptables-save").Output()
	s.kubeRules = strings.Count(string(out), "KUBE-")
	return s
}

var _ = Describe("Kubernetes mode", Label("kubernetes"), Ordered, func() {
	var l *lab.Lab
	var before hostSnapshot

	BeforeAll(func() {
		Expect(k8s.Built()).To(Succeed(), "make kubernetes builds what Kubernetes mode runs")
		name := labName()
		before = snapshotHost(name)
		cfg := lab.Default()
		cfg.Name, cfg.BinDir = name, *bins
		cfg.Nodes[0].Count, cfg.Nodes[0].InstanceType = 2, "m5.large"
		cfg.Env = map[string]string{"WARM_IP_TARGET": "2", "MINIMUM_IP_TARGET": "4"}
		cfg.Kubernetes = &lab.KubernetesConfig{}
		var err error
		l, err = lab.New(context.Background(), cfg, GinkgoWriter.Printf)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() {
			Expect(l.Close()).To(Succeed())
			after := snapshotHost(name)
			Expect(after.sysctls).To(Equal(before.sysctls), "host sysctls restored")
			Expect(after.mounts).To(Equal(before.mounts), "no mount of the lab left")
			Expect(after.cgroups).To(BeEmpty(), "no cgroup of the lab's kubelets left")
			Expect(after.kubeRules).To(Equal(before.kubeRules), "the kubelets and kube-proxies wrote their KUBE- chains in the nodes' namespaces, not the host's")
		})
	})

	It("registers nodes the EKS way, Ready only once aws-node wrote the conflist, with max pods from the instance type", func() {
		var nodes struct {
			Items []struct {
				Metadata struct {
					Name   string            `json:"name"`
					Labels map[string]string `json:"labels"`
				} `json:"metadata"`
				Spec   struct{ ProviderID string } `json:"spec"`
				Status struct {
					Capacity   map[string]string `json:"capacity"`
					Conditions []struct {
						Type, Status       string
						LastTransitionTime time.Time `json:"lastTransitionTime"`
					} `json:"conditions"`
				} `json:"status"`
			} `json:"items"`
		}
		Expect(json.Unmarshal([]byte(kubectl(l, "get", "nodes", "-o", "json")), &nodes)).To(Succeed())
		Expect(nodes.Items).To(HaveLen(2))
		for _, item := range nodes.Items {
			n := l.Node(item.Metadata.Labels["vpclab.io/node"])
			Expect(n).NotTo(BeNil(), "node %s names its lab node in label vpclab.io/node", item.Metadata.Name)
			Expect(item.Metadata.Name).To(MatchRegexp(`^ip-192-168-\d+-\d+\.us-west-2\.compute\.internal$`))
			Expect(item.Metadata.Name).To(Equal(n.KubeName()), "named after its instance's private DNS name")
			Expect(item.Status.Capacity["pods"]).To(Equal("29"))
			Expect(item.Spec.ProviderID).To(MatchRegexp(`^aws:///us-west-2[a-z]/` + n.Instance.ID + `$`))
			Expect(item.Metadata.Labels).To(HaveKeyWithValue("node.kubernetes.io/instance-type", "m5.large"))
			Expect(item.Metadata.Labels).To(HaveKey("topology.kubernetes.io/zone"))
			st, err := os.Stat(filepath.Join(n.HostPath("/etc/cni/net.d"), "10-aws.conflist"))
			Expect(err).NotTo(HaveOccurred())
			for _, c := range item.Status.Conditions {
				if c.Type == "Ready" {
					Expect(c.Status).To(Equal("True"))
					// The API's times have whole seconds.
					Expect(c.LastTransitionTime.Add(time.Second)).To(BeTemporally(">", st.ModTime()), "Ready before the conflist")
				}
			}
		}
		ds := kubectl(l, "-n", "kube-system", "get", "daemonset", "aws-node", "-o", "jsonpath={.status.numberReady}/{.status.desiredNumberScheduled}")
		Expect(ds).To(Equal("2/2"))
	})

	It("gives a Deployment's pods addresses of their node's ENIs, reachable pod to pod across nodes, through a Service and its DNS name", func() {
		apply(l, deployment("web", 6, `      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, nodeTaintsPolicy: Honor, labelSelector: {matchLabels: {app: web}}}
`))
		apply(l, `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`)
		pods := running(l, "web", 6, 2*time.Minute)
		nodes := map[string]bool{}
		for _, p := range pods {
			Expect(p.OnNodeENIs).To(BeTrue(), "pod %s's %s on %s's ENIs in EC2", p.Name, p.IP, p.Node)
			nodes[p.Node] = true
		}
		Expect(nodes).To(HaveLen(2))
		var a, b lab.KubePod
		for _, p := range pods {
			if p.Node == pods[0].Node {
				a = p
			} else {
				b = p
			}
		}
		// Running is not listening: the server in b may still be starting
		// (no readiness probe), which a loaded machine makes visible as a
		// refused connection — the network answered.
		Eventually(func() string {
			out, _ := l.Kubectl(context.Background(), nil, "exec", a.Name, "--", "sh", "-c", httpGet(b.IP+" 8080", "/hostname"))
			return string(out)
		}).WithTimeout(30 * time.Second).Should(HaveSuffix("\r\n\r\n" + b.Name))
		Eventually(func() string {
			out, _ := l.Kubectl(context.Background(), nil, "exec", a.Name, "--", "sh", "-c", httpGet("web.default.svc.cluster.local 80", "/hostname"))
			return string(out)
		}).WithTimeout(30 * time.Second).Should(MatchRegexp(`\r\n\r\nweb-[a-z0-9]+-[a-z0-9]+$`))
		Expect(kubectl(l, "logs", a.Name)).NotTo(BeEmpty())
		Expect(l.CheckInvariants(context.Background())).To(Succeed())
	})

	It("releases a deleted pod's address (ipamd and EC2 agree) and drains a node onto the other", func() {
		kubectl(l, "scale", "deployment/web", "--replicas=2")
		running(l, "web", 2, time.Minute)
		for _, n := range l.Nodes() {
			// Both sides are read on every poll: a pod scaled away can still
			// be listed Running for a while after its sandbox (and address)
			// is gone, so a count taken once may never be met.
			Eventually(func() error {
				if m, p := metricOf(n, "awscni_assigned_ip_addresses"), podsOn(l, n.KubeName()); m != p {
					return fmt.Errorf("ipamd assigned %d addresses, %d pods running", m, p)
				}
				return nil
			}).WithTimeout(30*time.Second).Should(Succeed(), "node %s: assigned = its pods (CoreDNS included)", n.Name)
		}
		kubectl(l, "scale", "deployment/web", "--replicas=4")
		running(l, "web", 4, time.Minute)
		drained := l.Nodes()[1].KubeName()
		kubectl(l, "drain", drained, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=90s")
		pods := running(l, "web", 4, time.Minute)
		for _, p := range pods {
			Expect(p.KubeNode).NotTo(Equal(drained))
			Expect(p.OnNodeENIs).To(BeTrue(), "pod %s's %s on %s's ENIs in EC2", p.Name, p.IP, p.Node)
		}
		kubectl(l, "uncordon", drained)
		Expect(l.CheckInvariants(context.Background())).To(Succeed())
	})

	It("keeps pods Pending while EC2 throttles a scale-up and runs them once the bucket refills, the kubelet's retries visible as events", func() {
		// Counted, not timed: the scale-up's own calls are the ones refused.
		_, err := l.Faults().Add(faults.Rule{Action: "AssignPrivateIpAddresses", Code: "RequestLimitExceeded", Count: 3},
			faults.Rule{Action: "CreateNetworkInterface", Code: "RequestLimitExceeded", Count: 3})
		Expect(err).NotTo(HaveOccurred())
		kubectl(l, "scale", "deployment/web", "--replicas=30")
		pods := running(l, "web", 30, 3*time.Minute)
		for _, p := range pods {
			Expect(p.OnNodeENIs).To(BeTrue(), "pod %s's %s on %s's ENIs in EC2", p.Name, p.IP, p.Node)
		}
		Expect(kubectl(l, "get", "events", "--field-selector", "reason=FailedCreatePodSandBox", "-o", "name")).NotTo(BeEmpty())
		Expect(l.CheckInvariants(context.Background())).To(Succeed())
	})
})

var _ = Describe("Kubernetes mode: vpclab's ipamd reads its Node", Label("kubernetes"), func() {
	It("caps the pool at the node's capacity.pods (kubelet --max-pods 20, prefix delegation): 19 pods hold 2 prefixes and no 3rd comes for WARM_PREFIX_TARGET=1", func() {
		Expect(k8s.Built()).To(Succeed())
		cfg := lab.Default()
		cfg.Name, cfg.BinDir = labName(), *bins
		cfg.Nodes[0].Count, cfg.Nodes[0].InstanceType = 1, "m5.large"
		cfg.Env = map[string]string{"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "1", "VPCLAB_POOL_INTERVAL": "500ms"}
		cfg.Kubernetes = &lab.KubernetesConfig{MaxPods: 20}
		l, err := lab.New(context.Background(), cfg, GinkgoWriter.Printf)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(l.Close()).To(Succeed()) })
		n := l.Nodes()[0]
		Expect(kubectl(l, "get", "node", n.KubeName(), "-o", "jsonpath={.status.capacity.pods}")).To(Equal("20"))
		apply(l, deployment("many", 18, ""))
		running(l, "many", 18, 2*time.Minute)
		// 19 addresses (CoreDNS too) in 2 prefixes: neither wholly free, so
		// WARM_PREFIX_TARGET=1 asks for a 3rd, but 32 ≥ 20.
		Eventually(func() int { return metricOf(n, "awscni_assigned_ip_addresses") }).WithTimeout(30 * time.Second).Should(Equal(19))
		Consistently(func() int { return metricOf(n, "awscni_total_ipv4_prefixes") }).WithTimeout(3 * time.Second).Should(Equal(2))
	})

	It("does not grow the pool of a cordoned node (AWS_MANAGE_ENIS_NON_SCHEDULABLE unset), and grows it once uncordoned", func() {
		Expect(k8s.Built()).To(Succeed())
		cfg := lab.Default()
		cfg.Name, cfg.BinDir = labName(), *bins
		cfg.Nodes[0].Count, cfg.Nodes[0].InstanceType = 1, "m5.large"
		cfg.Env = map[string]string{"WARM_IP_TARGET": "1", "MINIMUM_IP_TARGET": "1", "VPCLAB_POOL_INTERVAL": "500ms"}
		cfg.Kubernetes = &lab.KubernetesConfig{}
		l, err := lab.New(context.Background(), cfg, GinkgoWriter.Printf)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(l.Close()).To(Succeed()) })
		n := l.Nodes()[0]
		// CoreDNS holds one address, one more is warm.
		Eventually(func() int { return metricOf(n, "awscni_total_ip_addresses") }).WithTimeout(time.Minute).Should(Equal(2))
		kubectl(l, "cordon", n.KubeName())
		time.Sleep(3 * time.Second) // ipamd reads its node every 2 s
		// A DaemonSet's pod still lands on a cordoned node and takes the warm address.
		apply(l, strings.Replace(strings.Replace(deployment("ds", 1, ""), "kind: Deployment", "kind: DaemonSet", 1), "  replicas: 1\n", "", 1))
		running(l, "ds", 1, time.Minute)
		Eventually(func() int { return metricOf(n, "awscni_assigned_ip_addresses") }).WithTimeout(30 * time.Second).Should(Equal(2))
		Consistently(func() int { return metricOf(n, "awscni_total_ip_addresses") }).WithTimeout(4*time.Second).Should(Equal(2), "no growth while cordoned")
		kubectl(l, "uncordon", n.KubeName())
		Eventually(func() int { return metricOf(n, "awscni_total_ip_addresses") }).WithTimeout(30*time.Second).Should(Equal(3), "growth once uncordoned")
	})
})

// podsOn counts the pods in phase Running on a node (its Kubernetes name)
// that have addresses of their own (not host-network ones).
func podsOn(l *lab.Lab, node string) int {
	GinkgoHelper()
	pods, err := l.KubePods(context.Background(), "")
	Expect(err).NotTo(HaveOccurred())
	n := 0
	for _, p := range pods {
		if p.KubeNode == node && p.Phase == "Running" && !p.HostNetwork {
			n++
		}
	}
	return n
}

var _ = Describe("Kubernetes mode with the real VPC CNI", Label("kubernetes", "upstream"), func() {
	It("runs upstream's own aws-node manifest: its init container installs, nodes turn Ready, pods get VPC addresses", func() {
		Expect(k8s.Built()).To(Succeed())
		l := kubeLab(1, "m5.large", upstream)
		Expect(kubectl(l, "-n", "kube-system", "get", "daemonset", "aws-node", "-o", "jsonpath={.status.numberReady}")).To(Equal("1"))
		Expect(kubectl(l, "get", "node", "-o", "jsonpath={.items[0].status.capacity.pods}")).To(Equal("29"))
		apply(l, deployment("up", 3, ""))
		for _, p := range running(l, "up", 3, 2*time.Minute) {
			Expect(p.OnNodeENIs).To(BeTrue(), "pod %s's %s on %s's ENIs in EC2", p.Name, p.IP, p.Node)
		}
		Expect(l.CheckInvariants(context.Background())).To(Succeed())
	})
})

var _ = Describe("Kubernetes mode on an existing namespace (the Vagrant VM's shape)", Label("kubernetes"), func() {
	It("makes the namespace the node: its kubelet registers with the instance's address, pods get VPC addresses and their veths there, services answer it, Close leaves it intact", func() {
		Expect(k8s.Built()).To(Succeed())
		cfg := lab.Default()
		cfg.Name, cfg.BinDir = labName(), *bins
		host := cfg.Name + "host"
		Expect(exec.Command("ip", "netns", "add", host).Run()).To(Succeed())
		DeferCleanup(func() { _ = netx.DeleteNamed(host) })
		// What the node OS does (the Vagrant provisioning too).
		Expect(exec.Command("ip", "netns", "exec", host, "sh", "-c", "ip link set lo up && sysctl -qw net.ipv4.ip_forward=1").Run()).To(Succeed())
		cfg.Nodes = []lab.NodeConfig{{Name: "vm", InstanceType: "m5.large", HostNamespace: netx.Path(host), LinkPrefix: "lab"}}
		cfg.Kubernetes = &lab.KubernetesConfig{}
		cfg.TimeScale = 2 // the VM's knob, with deadlines that still hold here
		l, err := lab.New(context.Background(), cfg, GinkgoWriter.Printf)
		Expect(err).NotTo(HaveOccurred())
		closed := false
		DeferCleanup(func() {
			if !closed {
				Expect(l.Close()).To(Succeed())
			}
		})
		vm := l.Node("vm")
		Expect(vm.NetNS()).To(Equal(netx.Path(host)))
		Expect(kubectl(l, "get", "node", vm.KubeName(), "-o", `jsonpath={.status.addresses[?(@.type=="InternalIP")].address} {.status.capacity.pods}`)).
			To(Equal(vm.Instance.PrivateIP.String()+" 29"), "the instance's address, EKS's max pods for m5.large")
		apply(l, deployment("onhost", 2, ""))
		for _, p := range running(l, "onhost", 2, 2*time.Minute) {
			Expect(p.OnNodeENIs).To(BeTrue(), "pod %s at %s: an address of the instance's ENIs", p.Name, p.IP)
		}
		// The namespace's own connections to a service leave from the
		// instance's address (a host keeps its default route; the lab
		// routes the service range out of the primary ENI).
		out, err := exec.Command("ip", "netns", "exec", host, "timeout", "10", "bash", "-c", "echo > /dev/tcp/"+k8s.APIServiceIP+"/443").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "the API's service address from the node's namespace: %s", out)
		links, err := exec.Command("ip", "netns", "exec", host, "ip", "-br", "link").CombinedOutput()
		Expect(err).NotTo(HaveOccurred())
		Expect(string(links)).To(And(ContainSubstring("labeth0"), ContainSubstring("eni")), "the ENI and the pods' host veths are in the namespace")
		closed = true
		Expect(l.Close()).To(Succeed())
		_, err = os.Stat(netx.Path(host))
		Expect(err).NotTo(HaveOccurred(), "the namespace survives")
		links, _ = exec.Command("ip", "netns", "exec", host, "ip", "-br", "link").CombinedOutput()
		Expect(string(links)).NotTo(ContainSubstring("labeth"), "the lab's links are gone from it")
	})
})
