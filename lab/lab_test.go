package lab_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/lab"
)

var _ = Describe("a lab", func() {
	It("gives nodes the standard paths, wires pods that reach everything, and cleans up", func() {
		ctx := context.Background()
		cfg := testConfig()
		l, err := lab.New(ctx, cfg, GinkgoWriter.Printf)
		Expect(err).NotTo(HaveOccurred())
		closed := false
		DeferCleanup(func() {
			if !closed {
				_ = l.Close()
			}
		})
		Expect(l.Nodes()).To(HaveLen(2))
		a, b := l.Node("node-1"), l.Node("node-2")
		// The node's own directories at the paths aws-node hard-codes.
		out, err := a.Exec(ctx, "ls", "/var/run/aws-node", "/etc/cni/net.d", "/opt/cni/bin")
		Expect(err).NotTo(HaveOccurred(), out)
		for _, f := range []string{"ipamd.sock", "ipam.json", "10-aws.conflist", "aws-cni", "portmap"} {
			Expect(out).To(ContainSubstring(f))
		}
		_, err = os.Stat("/var/run/aws-node/ipamd.sock")
		Expect(os.IsNotExist(err) || err == nil).To(BeTrue())
		Expect(a.SocketPath()).NotTo(Equal(b.SocketPath()))

		a1, err := a.AddPod(ctx, "default", "a1")
		Expect(err).NotTo(HaveOccurred())
		a2, err := a.AddPod(ctx, "default", "a2")
		Expect(err).NotTo(HaveOccurred())
		b1, err := b.AddPod(ctx, "default", "b1")
		Expect(err).NotTo(HaveOccurred())
		peers, err := l.Region().RunInstances(model.RunInstancesInput{InstanceType: "t3.small", SubnetID: l.Region().Subnets()[0].ID})
		Expect(err).NotTo(HaveOccurred())
		Expect(l.CheckInvariants(ctx)).To(Succeed())
		Expect(a1.Ping(ctx, a2.IP.String())).To(Succeed())
		Expect(a1.Ping(ctx, b1.IP.String())).To(Succeed())
		Expect(b1.Ping(ctx, peers[0].PrivateIP.String())).To(Succeed())
		Expect(a2.Ping(ctx, fabric.InternetHostAddr)).To(Succeed())

		// Fill the primary ENI; the next pod lands on the secondary ENI
		// and egresses through it (the VPC sees it on that ENI's link).
		var second *lab.Pod
		var eni2 string
		for i := 0; i < 12 && second == nil; i++ {
			p, err := a.AddPod(ctx, "fill", fmt.Sprintf("f%d", i))
			Expect(err).NotTo(HaveOccurred())
			for _, e := range l.Region().NetworkInterfaces() {
				if e.Attachment != nil && e.Attachment.InstanceID == a.Instance.ID && e.Attachment.DeviceIndex == 1 {
					for _, ip := range e.SecondaryIPs {
						if ip == p.IP {
							second, eni2 = p, e.ID
						}
					}
				}
			}
		}
		Expect(second).NotTo(BeNil())
		router, _ := l.Fabric().RouterNamespace(l.VPCID())
		link, _ := l.Fabric().RouterLinkName(eni2)
		rx := func() int {
			out, err := exec.Command("ip", "netns", "exec", filepath.Base(router), "cat", "/sys/class/net/"+link+"/statistics/rx_packets").Output()
			Expect(err).NotTo(HaveOccurred())
			n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
			return n
		}
		before := rx()
		Expect(second.Ping(ctx, peers[0].PrivateIP.String())).To(Succeed())
		Expect(rx()).To(BeNumerically(">", before))
		Expect(l.CheckInvariants(ctx)).To(Succeed())

		for _, n := range l.Nodes() {
			for _, p := range n.Pods() {
				Expect(n.DelPod(ctx, p)).To(Succeed())
			}
		}
		Expect(l.CheckInvariants(ctx)).To(Succeed())
		Expect(l.Close()).To(Succeed())
		closed = true
		Expect(netx.ListNamed(cfg.Name + "-")).To(BeEmpty())
		_, err = os.Stat(filepath.Join("/run/vpclab", cfg.Name))
		Expect(os.IsNotExist(err)).To(BeTrue())
		mounts, _ := os.ReadFile("/proc/self/mountinfo")
		Expect(string(mounts)).NotTo(ContainSubstring("/run/vpclab/" + cfg.Name))
	})

	It("GC removes what a killed process left: namespaces, mounts, ipamd processes", func() {
		name := uniqueName()
		child := exec.Command(os.Args[0], "-test.run", "^TestLab$")
		child.Env = append(os.Environ(), childEnv+"="+name, "VPCLAB_BIN="+*bins)
		out, _ := child.StdoutPipe()
		child.Stderr = GinkgoWriter
		Expect(child.Start()).To(Succeed())
		DeferCleanup(func() { _ = lab.GC(name, "") })
		sc := bufio.NewScanner(out)
		for sc.Scan() && sc.Text() != "ready" {
		}
		Expect(child.Process.Signal(syscall.SIGKILL)).To(Succeed())
		_ = child.Wait()
		Expect(netx.ListNamed(name + "-")).NotTo(BeEmpty())
		Expect(labNames()).To(ContainElement(name))
		Expect(lab.GC(name, "")).To(Succeed())
		Expect(netx.ListNamed(name + "-")).To(BeEmpty())
		Expect(labNames()).NotTo(ContainElement(name))
		mounts, _ := os.ReadFile("/proc/self/mountinfo")
		Expect(string(mounts)).NotTo(ContainSubstring("/run/vpclab/" + name))
	})

	It("rejects bad configurations before creating anything", func() {
		for _, mod := range []func(*lab.Config){
			func(c *lab.Config) { c.Name = "Bad_Name" },
			func(c *lab.Config) { c.VPCCIDR = "nope" },
			func(c *lab.Config) { c.Subnets[1].CIDR = c.Subnets[0].CIDR },
			func(c *lab.Config) { c.Subnets[0].CIDR = "10.0.0.0/24" },
			func(c *lab.Config) { c.Nodes[0].InstanceType = "m9.huge" },
			func(c *lab.Config) { c.Nodes[0].Subnet = "nowhere" },
		} {
			c := testConfig()
			mod(&c)
			_, err := lab.New(context.Background(), c, nil)
			Expect(err).To(HaveOccurred())
			Expect(netx.ListNamed(c.Name + "-")).To(BeEmpty())
		}
	})
})

var _ = Describe("host mode", func() {
	It("makes an existing namespace the instance: ENI links appear in it, pods work, Close leaves it intact", func() {
		ctx := context.Background()
		host := uniqueName() + "host"
		Expect(exec.Command("ip", "netns", "add", host).Run()).To(Succeed())
		DeferCleanup(func() { _ = netx.DeleteNamed(host) })
		Expect(exec.Command("ip", "netns", "exec", host, "ip", "link", "set", "lo", "up").Run()).To(Succeed())
		// What the node OS does (the Vagrant provisioning sets it too).
		Expect(exec.Command("ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1").Run()).To(Succeed())
		cfg := testConfig()
		cfg.Nodes = []lab.NodeConfig{{Name: "vm", InstanceType: "m5.large", HostNamespace: netx.Path(host), LinkPrefix: "lab"},
			{Name: "other", InstanceType: "m5.large"}}
		l, err := lab.New(ctx, cfg, GinkgoWriter.Printf)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { _ = l.Close() })
		vm := l.Node("vm")
		Expect(vm.NetNS()).To(Equal(netx.Path(host)))
		out, err := exec.Command("ip", "netns", "exec", host, "ip", "-br", "link", "show", "labeth0").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		routes, _ := exec.Command("ip", "netns", "exec", host, "ip", "route").CombinedOutput()
		Expect(string(routes)).NotTo(ContainSubstring("default"), "the host keeps its own default route")
		Expect(string(routes)).To(ContainSubstring("169.254.169.254 via"))
		p, err := vm.AddPod(ctx, "default", "hosted")
		Expect(err).NotTo(HaveOccurred())
		q, err := l.Node("other").AddPod(ctx, "default", "remote")
		Expect(err).NotTo(HaveOccurred())
		Expect(p.Ping(ctx, q.IP.String())).To(Succeed())
		Expect(l.CheckInvariants(ctx)).To(Succeed())
		Expect(l.Close()).To(Succeed())
		_, err = os.Stat(netx.Path(host))
		Expect(err).NotTo(HaveOccurred(), "the host namespace survives")
		out, _ = exec.Command("ip", "netns", "exec", host, "ip", "-br", "link").CombinedOutput()
		Expect(string(out)).NotTo(ContainSubstring("labeth"), "the lab's links are gone from the host")
	})
})

var _ = Describe("one environment per node", func() {
	It("reaches ipamd, the installer and so the conflist and the pods (veth prefix, MTU, the pods' own MTU, cniVersion 0.4.0 with disableCheck, bandwidth and tuning chained)", func() {
		ctx := context.Background()
		cfg := testConfig()
		cfg.Nodes[0].Count = 1
		cfg.Env["AWS_VPC_K8S_CNI_VETHPREFIX"] = "abc"
		cfg.Env["AWS_VPC_ENI_MTU"] = "1500"
		cfg.Env["POD_MTU"] = "1400" // the pods', as aws-node's installer writes it
		cfg.Env["ENABLE_BANDWIDTH_PLUGIN"] = "true"
		cfg.Env["DISABLE_POD_V6"] = "true"
		l, err := lab.New(ctx, cfg, GinkgoWriter.Printf)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(l.Close)
		n := l.Node("node")
		conf, err := n.Exec(ctx, "cat", "/etc/cni/net.d/10-aws.conflist")
		Expect(err).NotTo(HaveOccurred())
		Expect(conf).To(And(ContainSubstring(`"vethPrefix": "abc"`), ContainSubstring(`"mtu": "1400"`),
			ContainSubstring(`"cniVersion": "0.4.0"`), ContainSubstring(`"disableCheck": true`), ContainSubstring(`"type": "egress-cni"`)), "as aws-node writes it")
		portmap, bw, tuning := strings.Index(conf, `"type": "portmap"`), strings.Index(conf, `"type": "bandwidth"`), strings.Index(conf, `"type": "tuning"`)
		Expect(portmap < bw && bw < tuning && portmap > 0).To(BeTrue(), "portmap, then bandwidth (ENABLE_BANDWIDTH_PLUGIN), then tuning (DISABLE_POD_V6), as aws-node chains them:\n"+conf)
		p, err := n.AddPodRetry(ctx, "default", "mtu", 20*time.Second)
		Expect(err).NotTo(HaveOccurred())
		out, err := p.Exec(ctx, "ip", "link", "show", "eth0")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring("mtu 1400"))
		v6, err := p.Exec(ctx, "cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6")
		Expect(err).NotTo(HaveOccurred())
		Expect(strings.TrimSpace(v6)).To(Equal("1"), "DISABLE_POD_V6: tuning turned IPv6 off in the pod")
		links, _ := n.Exec(ctx, "ip", "-o", "link", "show")
		Expect(links).To(ContainSubstring(": abc"))
	})
})
