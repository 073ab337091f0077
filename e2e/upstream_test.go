package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/lab"
)

// The real VPC CNI (lab.UpstreamVersion, built from the Go module proxy
// into vpclab's cache: minutes the first time, seconds after) in lab
// nodes, installed by its own entrypoint.

var upstream = lab.CNI{Kind: lab.CNIUpstream, Version: lab.UpstreamVersion}

var buildUpstream = sync.OnceValues(func() (lab.CNIBuild, error) {
	return lab.BuildCNI(context.Background(), upstream, GinkgoWriter.Printf)
})

// upstreamLab brings up a lab whose nodes run the real VPC CNI.
func upstreamLab(nodes int, typ string, env map[string]string) *lab.Lab {
	GinkgoHelper()
	_, err := buildUpstream()
	Expect(err).NotTo(HaveOccurred())
	cfg := lab.Default()
	cfg.Name, cfg.BinDir, cfg.CNI, cfg.Env = labName(), *bins, upstream, env
	cfg.Nodes[0].Count, cfg.Nodes[0].InstanceType = nodes, typ
	l, err := lab.New(context.Background(), cfg, GinkgoWriter.Printf)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(l.Close()).To(Succeed()) })
	return l
}

// secondaries counts the node's ENIs, secondary IPv4 addresses and
// prefixes as EC2 sees them.
func secondaries(l *lab.Lab, n *lab.Node) (enis, ips, prefixes int) {
	for _, e := range l.Region().NetworkInterfaces() {
		if e.Attachment != nil && e.Attachment.InstanceID == n.Instance.ID {
			enis++
			ips += len(e.SecondaryIPs)
			prefixes += len(e.Prefixes)
		}
	}
	return
}

func metricOf(n *lab.Node, name string) int {
	m, err := n.Metrics()
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(m, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return int(v)
		}
	}
	return -1
}

// swapPlugin makes the node's conflist run bin (copied into the node's
// CNI bin directory as name) instead of its own aws-cni: the other
// implementation's plugin against this node's ipamd.
func swapPlugin(n *lab.Node, bin, name string) {
	GinkgoHelper()
	b, err := os.ReadFile(bin)
	Expect(err).NotTo(HaveOccurred())
	Expect(os.WriteFile(filepath.Join(n.HostPath("/opt/cni/bin"), name), b, 0o755)).To(Succeed())
	conf := filepath.Join(n.HostPath("/etc/cni/net.d"), "10-aws.conflist")
	raw, err := os.ReadFile(conf)
	Expect(err).NotTo(HaveOccurred())
	var list map[string]any
	Expect(json.Unmarshal(raw, &list)).To(Succeed())
	list["plugins"].([]any)[0].(map[string]any)["type"] = name
	out, _ := json.Marshal(list)
	Expect(os.WriteFile(conf, out, 0o644)).To(Succeed())
}

// children lists the processes whose parent is pid.
func children(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, c)
		}
	}
	return out
}

// alive says whether pid is a running process (not gone, not a zombie
// waiting for its parent).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

var _ = Describe("the real VPC CNI in lab nodes", Label("upstream"), func() {
	It("installs itself, keeps m5.large's default pool, wires pods every way, and pairs with vpclab's plugin; teardown leaves nothing", func() {
		ctx := context.Background()
		l := upstreamLab(2, "m5.large", nil)
		n1, n2 := l.Node("node-1"), l.Node("node-2")

		By("its own entrypoint installing the plugins and the conflist")
		raw, err := os.ReadFile(filepath.Join(n1.HostPath("/etc/cni/net.d"), "10-aws.conflist"))
		Expect(err).NotTo(HaveOccurred())
		var list struct{ Plugins []struct{ Type string } }
		Expect(json.Unmarshal(raw, &list)).To(Succeed())
		Expect(list.Plugins).To(HaveLen(3))
		Expect([]string{list.Plugins[0].Type, list.Plugins[1].Type, list.Plugins[2].Type}).To(Equal([]string{"aws-cni", "egress-cni", "portmap"}))
		for _, p := range []string{"aws-cni", "egress-cni", "loopback", "portmap", "bandwidth"} {
			Expect(filepath.Join(n1.HostPath("/opt/cni/bin"), p)).To(BeAnExistingFile())
		}
		st := l.Status()
		Expect(st.Nodes[0].CNI.Implementation).To(Equal("upstream"))
		Expect(st.Nodes[0].CNI.Version).To(Equal(lab.UpstreamVersion))

		By("m5.large defaults: an idle node keeps one ENI of 9; one pod brings a second ENI, 18 addresses")
		Eventually(func() [2]int { e, ips, _ := secondaries(l, n1); return [2]int{e, ips} }, 30*time.Second, 200*time.Millisecond).Should(Equal([2]int{1, 9}))
		a, err := n1.AddPodRetry(ctx, "default", "a", time.Minute)
		Expect(err).NotTo(HaveOccurred())
		b, err := n1.AddPodRetry(ctx, "default", "b", time.Minute)
		Expect(err).NotTo(HaveOccurred())
		c, err := n2.AddPodRetry(ctx, "default", "c", time.Minute)
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() [2]int { e, ips, _ := secondaries(l, n1); return [2]int{e, ips} }, 30*time.Second, 200*time.Millisecond).Should(Equal([2]int{2, 18}))

		By("the connectivity matrix")
		host, err := l.Region().RunInstances(model.RunInstancesInput{InstanceType: "t3.small", SubnetID: n1.Instance.SubnetID})
		Expect(err).NotTo(HaveOccurred())
		Expect(a.Ping(ctx, b.IP.String())).To(Succeed(), "pod↔pod same node")
		Expect(a.Ping(ctx, c.IP.String())).To(Succeed(), "pod↔pod across nodes")
		Expect(c.Ping(ctx, a.IP.String())).To(Succeed())
		Expect(c.Ping(ctx, host[0].PrivateIP.String())).To(Succeed(), "pod→VPC host")
		Expect(a.Ping(ctx, fabric.InternetHostAddr)).To(Succeed(), "pod→internet through upstream's SNAT")
		Expect(l.CheckInvariants(ctx)).To(Succeed())

		By("vpclab's plugin against upstream's ipamd")
		swapPlugin(n2, filepath.Join(*bins, "aws-cni"), "vpclab-aws-cni")
		d, err := n2.AddPodRetry(ctx, "default", "d", time.Minute)
		Expect(err).NotTo(HaveOccurred())
		Expect(d.Ping(ctx, a.IP.String())).To(Succeed())
		Expect(n2.DelPod(ctx, d)).To(Succeed())
		Expect(l.CheckInvariants(ctx)).To(Succeed())

		By("teardown: no process, namespace or mount left")
		var pids []int
		for _, n := range l.Nodes() {
			pid := n.IpamdState().PID
			Expect(pid).NotTo(BeZero())
			pids = append(append(pids, pid), children(pid)...)
		}
		Expect(len(pids)).To(BeNumerically(">=", 4), "entrypoint and aws-k8s-agent per node")
		Expect(l.Close()).To(Succeed())
		for _, pid := range pids {
			Expect(alive(pid)).To(BeFalse(), "pid %d survived", pid)
		}
		left, _ := netx.ListNamed(l.Name() + "-")
		Expect(left).To(BeEmpty())
		mounts, _ := os.ReadFile("/proc/mounts")
		Expect(string(mounts)).NotTo(ContainSubstring("/" + l.Name() + "/"))
	})

	It("WARM_IP_TARGET=2 MINIMUM_IP_TARGET=12: 12 at start, 14 with 12 pods, the pods survive a restart from the checkpoint, 12 after", func() {
		ctx := context.Background()
		l := upstreamLab(1, "m5.large", map[string]string{"WARM_IP_TARGET": "2", "MINIMUM_IP_TARGET": "12"})
		n := l.Nodes()[0]
		total := func() int { _, ips, _ := secondaries(l, n); return ips }
		Eventually(total, 30*time.Second, 200*time.Millisecond).Should(Equal(12))
		var pods []*lab.Pod
		for i := range 12 {
			p, err := n.AddPodRetry(ctx, "default", fmt.Sprintf("p%d", i), time.Minute)
			Expect(err).NotTo(HaveOccurred())
			pods = append(pods, p)
		}
		Eventually(total, 30*time.Second, 200*time.Millisecond).Should(Equal(14))

		By("aws-node restarted: ipamd reads its checkpoint back")
		Expect(n.RestartIpamd(ctx)).To(Succeed())
		Eventually(func() int { return metricOf(n, "awscni_assigned_ip_addresses") }, 30*time.Second, 200*time.Millisecond).Should(Equal(12))
		extra, err := n.AddPodRetry(ctx, "default", "extra", time.Minute)
		Expect(err).NotTo(HaveOccurred())
		for _, p := range pods {
			Expect(extra.IP).NotTo(Equal(p.IP), "an address still held by %s", p.Name)
		}
		Expect(l.CheckInvariants(ctx)).To(Succeed())

		for _, p := range append(pods, extra) {
			Expect(n.DelPod(ctx, p)).To(Succeed())
		}
		// Upstream's fixed timers: 30 s cooldown, then its decrease.
		Eventually(total, 3*time.Minute, time.Second).Should(Equal(12))
	})

	It("prefix delegation with WARM_PREFIX_TARGET=1: one /28 idle, a second once a pod uses the first; DISABLE_TCP_EARLY_DEMUX applied by the init step", func() {
		ctx := context.Background()
		l := upstreamLab(1, "m5.large", map[string]string{"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "1", "DISABLE_TCP_EARLY_DEMUX": "true"})
		n := l.Nodes()[0]
		Expect(n.Exec(ctx, "cat", "/proc/sys/net/ipv4/tcp_early_demux")).To(Equal("0\n"))
		prefixes := func() int { _, _, p := secondaries(l, n); return p }
		Eventually(prefixes, 30*time.Second, 200*time.Millisecond).Should(Equal(1))
		_, err := n.AddPodRetry(ctx, "default", "a", time.Minute)
		Expect(err).NotTo(HaveOccurred())
		Eventually(prefixes, 30*time.Second, 200*time.Millisecond).Should(Equal(2))
		Expect(l.CheckInvariants(ctx)).To(Succeed())
	})

	It("runs both implementations side by side in one region (nodes[].cni), and pairs upstream's plugin with vpclab's ipamd", func() {
		ctx := context.Background()
		b, err := buildUpstream()
		Expect(err).NotTo(HaveOccurred())
		cfg := lab.Default()
		cfg.Name, cfg.BinDir = labName(), *bins
		cfg.Nodes = []lab.NodeConfig{{Name: "own", InstanceType: "m5.large"}, {Name: "up", InstanceType: "m5.large", CNI: upstream}}
		cfg.Env = map[string]string{"VPCLAB_POOL_INTERVAL": "100ms"}
		l, err := lab.New(ctx, cfg, GinkgoWriter.Printf)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(l.Close()).To(Succeed()) })
		n, up := l.Node("own"), l.Node("up")
		Expect(n.CNI().IsUpstream()).To(BeFalse())
		Expect(up.CNI()).To(Equal(upstream))
		a, err := n.AddPodRetry(ctx, "default", "a", time.Minute)
		Expect(err).NotTo(HaveOccurred())
		u, err := up.AddPodRetry(ctx, "default", "u", time.Minute)
		Expect(err).NotTo(HaveOccurred())
		Expect(u.Ping(ctx, a.IP.String())).To(Succeed(), "upstream's pod ↔ vpclab's pod across nodes")
		Expect(a.Ping(ctx, u.IP.String())).To(Succeed())

		swapPlugin(n, filepath.Join(b.AppDir, "aws-cni"), "upstream-aws-cni")
		c, err := n.AddPodRetry(ctx, "default", "c", time.Minute)
		Expect(err).NotTo(HaveOccurred())
		Expect(c.Ping(ctx, a.IP.String())).To(Succeed())
		Expect(c.Ping(ctx, fabric.InternetHostAddr)).To(Succeed())
		Expect(l.CheckInvariants(ctx)).To(Succeed())
		Expect(n.DelPod(ctx, c)).To(Succeed())
		Expect(l.CheckInvariants(ctx)).To(Succeed())
	})
})
