package plugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/plugin"
)

var _ = Describe("pods wired by aws-cni through libcni", func() {
	It("reach pods on the same and another node, a VPC host and the internet; secondary-ENI pods egress via their ENI", func() {
		c := newCluster()
		a, b := c.node(), c.node()
		peer := c.host("t3.small")
		a1, a2, b1 := a.newPod("a1"), a.newPod("a2"), b.newPod("b1")
		a1.mustAdd()
		a2.mustAdd()
		b1.mustAdd()
		for _, p := range []*pod{a1, a2, b1} {
			Expect(c.Region.CheckInvariants()).To(Succeed())
			owner := ""
			for _, e := range c.Region.NetworkInterfaces() {
				for _, ip := range e.SecondaryIPs {
					if ip.String() == p.ip {
						owner = e.Attachment.InstanceID
					}
				}
			}
			Expect(owner).To(Equal(p.n.inst.ID), "pod %s's address %s must be a secondary IP of its node", p.name, p.ip)
		}
		Expect(a1.ping(a2.ip)).To(Succeed())
		Expect(a1.ping(b1.ip)).To(Succeed())
		Expect(a1.ping(peer.PrivateIP.String())).To(Succeed())
		Expect(b1.ping(fabric.InternetHostAddr)).To(Succeed())

		// Fill the primary ENI (9 addresses); the next pod lands on eth1.
		var second *pod
		for i := 0; i < 12 && second == nil; i++ {
			p := a.newPod(fmt.Sprintf("f%d", i))
			p.mustAdd()
			for _, e := range c.Region.NetworkInterfaces() {
				if e.Attachment != nil && e.Attachment.DeviceIndex == 1 && e.Attachment.InstanceID == a.inst.ID {
					for _, ip := range e.SecondaryIPs {
						if ip.String() == p.ip {
							second = p
						}
					}
				}
			}
		}
		Expect(second).NotTo(BeNil(), "no pod landed on the secondary ENI")
		var eni2 string
		for _, e := range c.Region.NetworkInterfaces() {
			if e.Attachment != nil && e.Attachment.DeviceIndex == 1 && e.Attachment.InstanceID == a.inst.ID {
				eni2 = e.ID
			}
		}
		rlink, ok := c.Fabric.RouterLinkName(eni2)
		Expect(ok).To(BeTrue())
		router, _ := c.Fabric.RouterNamespace(c.VPC)
		rx := func() int {
			out, err := sh(filepath.Base(router), "cat", "/sys/class/net/"+rlink+"/statistics/rx_packets")
			Expect(err).NotTo(HaveOccurred())
			n, _ := strconv.Atoi(strings.TrimSpace(out))
			return n
		}
		before := rx()
		Expect(second.ping(peer.PrivateIP.String())).To(Succeed())
		Expect(rx()).To(BeNumerically(">", before), "the echo left through the secondary ENI (the VPC saw it on that ENI's link)")
		Expect(second.ping(b1.ip)).To(Succeed())
	})
})

var _ = Describe("DEL and CHECK", func() {
	It("DEL is idempotent; CHECK passes after ADD and names what is broken", func() {
		c := newCluster()
		n := c.node()
		clean := n.hostState()
		p := n.newPod("chk")
		p.mustAdd()
		Expect(p.check()).To(Succeed())
		host := plugin.HostVethName("eni", "default", "chk")
		_, err := sh(n.nsName, "ip", "route", "del", p.ip+"/32", "dev", host)
		Expect(err).NotTo(HaveOccurred())
		err = p.check()
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("host route " + p.ip + "/32 dev " + host + " missing"))
		Expect(p.del()).To(Succeed())
		Expect(p.del()).To(Succeed())
		// The runtime removes the sandbox after DEL; the veth goes with it.
		Expect(exec.Command("ip", "netns", "del", filepath.Base(p.path)).Run()).To(Succeed())
		Eventually(n.hostState, 5*time.Second).Should(Equal(clean), "nothing left behind after DEL")
		Expect(p.del()).To(Succeed(), "DEL with the netns gone")
	})

	It("STATUS reports ipamd's health and GC releases what the runtime forgot", func() {
		c := newCluster()
		n := c.node()
		keep, lost := n.newPod("keep"), n.newPod("lost")
		keep.mustAdd()
		lost.mustAdd()
		// STATUS and GC are CNI 1.1: a list of aws-cni alone at 1.1.0.
		var pl map[string]any
		b, _ := os.ReadFile(filepath.Join(n.confDir, plugin.ConflistName))
		var m map[string]any
		Expect(json.Unmarshal(b, &m)).To(Succeed())
		pl = m["plugins"].([]any)[0].(map[string]any)
		lb, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "aws-cni", "plugins": []any{pl}})
		list11, err := libcni.ConfListFromBytes(lb)
		Expect(err).NotTo(HaveOccurred())
		Expect(n.inNode(func() error { return n.cni.GetStatusNetworkList(bgCtx(), list11) })).To(Succeed())
		// GC as a runtime sends it (libcni would first DEL what its own
		// cache knows; the plugin's GC is what catches the rest).
		gc := map[string]any{"cniVersion": "1.1.0", "name": "aws-cni", "cni.dev/valid-attachments": []types.GCAttachment{{ContainerID: keep.cid, IfName: "eth0"}}}
		for k, v := range pl {
			if _, set := gc[k]; !set {
				gc[k] = v
			}
		}
		gb, _ := json.Marshal(gc)
		code, out := runPlugin(n, string(gb), map[string]string{"CNI_COMMAND": "GC", "CNI_PATH": filepath.Join(n.dir, "bin")})
		Expect(code).To(BeZero(), out)
		_, err = sh(n.nsName, "ip", "link", "show", plugin.HostVethName("eni", "default", "lost"))
		Expect(err).To(HaveOccurred(), "GC removed the forgotten pod's veth")
		_, err = sh(n.nsName, "ip", "link", "show", plugin.HostVethName("eni", "default", "keep"))
		Expect(err).NotTo(HaveOccurred(), "GC kept the valid pod")
		b, _ = os.ReadFile(filepath.Join(n.dir, "ipam.json"))
		Expect(string(b)).To(ContainSubstring(keep.cid))
		Expect(string(b)).NotTo(ContainSubstring(lost.cid))
		// STATUS fails once ipamd is gone.
		bad := map[string]any{}
		for k, v := range pl {
			bad[k] = v
		}
		bad["ipamdSocket"] = filepath.Join(n.dir, "gone.sock")
		lb, _ = json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "aws-cni", "plugins": []any{bad}})
		down, err := libcni.ConfListFromBytes(lb)
		Expect(err).NotTo(HaveOccurred())
		err = n.inNode(func() error { return n.cni.GetStatusNetworkList(bgCtx(), down) })
		Expect(err).To(MatchError(ContainSubstring("ipamd is not reachable")))
	})
})

// runPlugin executes aws-cni directly, as a runtime would, in the node.
func runPlugin(n *node, stdin string, env map[string]string) (int, string) {
	cmd := exec.Command("ip", "netns", "exec", n.nsName, filepath.Join(*bins, "aws-cni"))
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return code, out.String()
}

var _ = Describe("the installer", func() {
	It("copies the plugin first and writes the conflist only once ipamd answers, as aws-node's entrypoint", func() {
		dir := GinkgoT().TempDir()
		bin, conf := filepath.Join(dir, "bin"), filepath.Join(dir, "net.d")
		cmd := exec.Command(filepath.Join(*bins, "aws-vpc-cni"), "--plugin", filepath.Join(*bins, "aws-cni"), "--bin-dir", bin, "--conf-dir", conf,
			"--ref-plugins", "", "--socket", filepath.Join(dir, "no-ipamd.sock"), "--wait", "300ms")
		out, err := cmd.CombinedOutput()
		Expect(err).To(HaveOccurred(), "no ipamd: %s", out)
		Expect(string(out)).To(ContainSubstring("not healthy within 300ms"))
		Expect(filepath.Join(bin, "aws-cni")).To(BeARegularFile(), "copied before the wait")
		Expect(filepath.Join(conf, plugin.ConflistName)).NotTo(BeAnExistingFile())
	})
})

var _ = Describe("egress-cni", func() {
	run := func(cmd, stdin string) (int, string) {
		c := exec.Command(filepath.Join(*bins, "egress-cni"))
		c.Env = []string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=cid-e", "CNI_NETNS=/var/run/netns/none", "CNI_IFNAME=eth0", "CNI_PATH=/nonexistent"}
		c.Stdin = strings.NewReader(stdin)
		var out bytes.Buffer
		c.Stdout = &out
		err := c.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), out.String()
		}
		Expect(err).NotTo(HaveOccurred())
		return 0, out.String()
	}
	conf := func(enabled string, prev bool) string {
		m := map[string]any{"cniVersion": "0.4.0", "name": "aws-cni", "type": "egress-cni", "enabled": enabled}
		if prev {
			m["prevResult"] = map[string]any{"cniVersion": "0.4.0", "interfaces": []any{map[string]any{"name": "eni1a2b", "mac": "aa:bb:cc:dd:ee:ff"}},
				"ips": []any{map[string]any{"version": "4", "address": "10.0.0.7/32", "interface": 0}}}
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	It("disabled, as aws-node writes it for IPv4, hands aws-cni's result on and tears down nothing", func() {
		code, out := run("ADD", conf("false", true))
		Expect(code).To(BeZero(), out)
		Expect(out).To(And(ContainSubstring(`"address": "10.0.0.7/32"`), ContainSubstring(`"cniVersion": "0.4.0"`)))
		code, out = run("DEL", conf("false", true))
		Expect(code).To(BeZero(), out)
	})
	It("answers enabled=true, a missing prevResult and a bad value with CNI errors", func() {
		for _, tc := range []struct{ name, stdin, want string }{
			{"enabled", conf("true", true), "--cni upstream@VERSION"},
			{"no prevResult", conf("false", false), "chained after aws-cni"},
			{"bad enabled", conf("yes", true), `enabled \"yes\"`},
			{"bad JSON", `{"cniVersion":`, "network config"},
		} {
			code, out := run("ADD", tc.stdin)
			Expect(code).NotTo(BeZero(), tc.name)
			var e types.Error
			Expect(json.Unmarshal([]byte(out), &e)).To(Succeed(), "%s: %q is not a CNI error", tc.name, out)
			Expect(e.Code).NotTo(BeZero(), tc.name)
			Expect(e.Msg+" "+e.Details).To(ContainSubstring(strings.ReplaceAll(tc.want, `\"`, `"`)), tc.name)
		}
	})
})

var _ = Describe("bad input", func() {
	It("answers 20 malformed configurations or arguments with a CNI error and leaves nothing behind", func() {
		c := newCluster()
		n := c.node()
		p := n.newPod("bad")
		good := func() map[string]any {
			var m map[string]any
			b, _ := os.ReadFile(filepath.Join(n.confDir, plugin.ConflistName))
			_ = json.Unmarshal(b, &m)
			pl := m["plugins"].([]any)[0].(map[string]any)
			pl["cniVersion"] = "1.0.0"
			return pl
		}
		js := func(m map[string]any) string { b, _ := json.Marshal(m); return string(b) }
		with := func(k string, v any) string { m := good(); m[k] = v; return js(m) }
		without := func(k string) string { m := good(); delete(m, k); return js(m) }
		env := func(cmd string, mod map[string]string) map[string]string {
			e := map[string]string{"CNI_COMMAND": cmd, "CNI_CONTAINERID": "cid-bad", "CNI_NETNS": p.path, "CNI_IFNAME": "eth0", "CNI_PATH": filepath.Join(n.dir, "bin"),
				"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bad;K8S_POD_INFRA_CONTAINER_ID=cid-bad"}
			for k, v := range mod {
				if v == "-" {
					delete(e, k)
				} else {
					e[k] = v
				}
			}
			return e
		}
		gone := n.newPod("gone")
		Expect(exec.Command("ip", "netns", "del", filepath.Base(gone.path)).Run()).To(Succeed())
		cases := []struct {
			name  string
			stdin string
			env   map[string]string
		}{
			{"bad JSON", `{"cniVersion":`, env("ADD", nil)},
			{"not an object", `[1,2]`, env("ADD", nil)},
			{"empty stdin", ``, env("ADD", nil)},
			{"missing name", without("name"), env("ADD", nil)},
			{"unknown cniVersion", with("cniVersion", "9.9.9"), env("ADD", nil)},
			{"cniVersion not a string", with("cniVersion", 1), env("ADD", nil)},
			{"mtu not a number", with("mtu", "lots"), env("ADD", nil)},
			{"mtu too small", with("mtu", "100"), env("ADD", nil)},
			{"mtu wrong type", with("mtu", 9001), env("ADD", nil)},
			{"vethPrefix too long", with("vethPrefix", "toolong"), env("ADD", nil)},
			{"vethPrefix eth", with("vethPrefix", "eth"), env("ADD", nil)},
			{"bad podSGEnforcingMode", with("podSGEnforcingMode", "loose"), env("ADD", nil)},
			{"missing CNI_NETNS", with("name", "aws-cni"), env("ADD", map[string]string{"CNI_NETNS": "-"})},
			{"netns gone", with("name", "aws-cni"), env("ADD", map[string]string{"CNI_NETNS": gone.path})},
			{"missing CNI_CONTAINERID", with("name", "aws-cni"), env("ADD", map[string]string{"CNI_CONTAINERID": "-"})},
			{"missing CNI_IFNAME", with("name", "aws-cni"), env("ADD", map[string]string{"CNI_IFNAME": "-"})},
			{"unknown CNI_COMMAND", with("name", "aws-cni"), env("FROB", nil)},
			{"bad CNI_ARGS", with("name", "aws-cni"), env("ADD", map[string]string{"CNI_ARGS": "K8S_POD_NAME"})},
			{"unknown CNI_ARGS key without IgnoreUnknown", with("name", "aws-cni"), env("ADD", map[string]string{"CNI_ARGS": "FOO=bar"})},
			{"ipamd down", with("ipamdSocket", filepath.Join(n.dir, "nope.sock")), env("ADD", nil)},
		}
		Expect(cases).To(HaveLen(20))
		clean := n.hostState()
		for _, tc := range cases {
			code, out := runPlugin(n, tc.stdin, tc.env)
			Expect(code).NotTo(BeZero(), "%s: exit code", tc.name)
			var e types.Error
			Expect(json.Unmarshal([]byte(out), &e)).To(Succeed(), "%s: stdout %q is not a CNI error", tc.name, out)
			Expect(e.Code).NotTo(BeZero(), "%s: %q", tc.name, out)
			Expect(e.Msg).NotTo(BeEmpty(), "%s", tc.name)
			Expect(n.hostState()).To(Equal(clean), "%s left something behind", tc.name)
		}
	})
})

var _ = Describe("concurrency", func() {
	It("50 concurrent ADDs then 50 DELs: all succeed, no address twice, nothing left", func() {
		c := newCluster()
		n := c.nodeOfType("m5.4xlarge", "WARM_IP_TARGET=5", "MINIMUM_IP_TARGET=60")
		n.waitSecondaries(60)
		clean := n.hostState()
		pods := make([]*pod, 50)
		for i := range pods {
			pods[i] = n.newPod(fmt.Sprintf("m%d", i))
		}
		var wg sync.WaitGroup
		errs := make([]error, len(pods))
		for i, p := range pods {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = p.add()
			}()
		}
		wg.Wait()
		for i, p := range pods {
			Expect(errs[i]).NotTo(HaveOccurred(), "ADD %s", p.name)
		}
		out, _ := sh(n.nsName, "ip", "-4", "route", "show", "table", "main")
		seen := map[string]string{}
		for _, p := range pods {
			host := plugin.HostVethName("eni", "default", p.name)
			var ip string
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, "dev "+host+" ") {
					ip = strings.Fields(l)[0]
				}
			}
			Expect(ip).NotTo(BeEmpty(), "no host route for %s", p.name)
			Expect(seen).NotTo(HaveKey(ip), "address %s given to %s and %s", ip, seen[ip], p.name)
			seen[ip] = p.name
		}
		for i, p := range pods {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = p.del()
			}()
		}
		wg.Wait()
		for i, p := range pods {
			Expect(errs[i]).NotTo(HaveOccurred())
			Expect(exec.Command("ip", "netns", "del", filepath.Base(p.path)).Run()).To(Succeed())
		}
		Eventually(n.hostState, 10*time.Second).Should(Equal(clean))
	})
})

// waitSecondaries waits until the node's ENIs hold at least min secondary
// addresses (ipamd's pool is warm).
func (n *node) waitSecondaries(min int) {
	GinkgoHelper()
	Eventually(func() int {
		t := 0
		for _, e := range n.c.Region.NetworkInterfaces() {
			if e.Attachment != nil && e.Attachment.InstanceID == n.inst.ID {
				t += len(e.SecondaryIPs)
			}
		}
		return t
	}, 30*time.Second).Should(BeNumerically(">=", min))
}

// rawDumpInterruptions counts, until stop closes, how many plain (not
// interruption-safe) link dumps inside n the kernel flags as interrupted:
// evidence that the churn around it is the churn the safe wrappers exist for.
func rawDumpInterruptions(n ns.NetNS, stop <-chan struct{}) *atomic.Int64 {
	var hits atomic.Int64
	go func() {
		_ = n.Do(func(ns.NetNS) error {
			for {
				select {
				case <-stop:
					return nil
				default:
				}
				if _, err := netlink.LinkList(); errors.Is(err, netlink.ErrDumpInterrupted) {
					hits.Add(1)
				}
			}
		})
	}()
	return &hits
}

var _ = Describe("churn", func() {
	It("200 ADD/DEL cycles from 25 workers while the fabric reconciles: no failure, no interrupted dump, nothing left", func() {
		c := newCluster()
		n := c.nodeOfType("m5.4xlarge", "WARM_IP_TARGET=5", "MINIMUM_IP_TARGET=60")
		other := c.host("m5.large")
		n.waitSecondaries(60)
		c.Sync(GinkgoT())
		clean := n.hostState()

		// EC2 changes the fabric must make real meanwhile: addresses come
		// and go on another instance's ENI (routes and neighbours in the
		// router namespace).
		stop := make(chan struct{})
		var bg sync.WaitGroup
		bg.Add(1)
		go func() {
			defer bg.Done()
			eni := other.PrimaryENI
			for {
				select {
				case <-stop:
					return
				default:
				}
				addrs, _, err := c.Region.AssignPrivateIPs(model.AssignPrivateIPsInput{ENIID: eni, Count: 2})
				if err == nil {
					_ = c.Region.UnassignPrivateIPs(eni, addrs, nil)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
		raw := rawDumpInterruptions(n.ns, stop)

		const workers, cycles = 25, 200
		jobs := make(chan int)
		var mu sync.Mutex
		var failures []string
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			p := n.newPod(fmt.Sprintf("churn%d", w))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range jobs {
					p.cid = fmt.Sprintf("cid-churn-%d", i)
					if _, err := p.add(); err != nil {
						mu.Lock()
						failures = append(failures, fmt.Sprintf("ADD %d: %v", i, err))
						mu.Unlock()
						continue
					}
					if err := p.del(); err != nil {
						mu.Lock()
						failures = append(failures, fmt.Sprintf("DEL %d: %v", i, err))
						mu.Unlock()
					}
				}
				Expect(exec.Command("ip", "netns", "del", filepath.Base(p.path)).Run()).To(Succeed())
			}()
		}
		for i := 0; i < cycles; i++ {
			jobs <- i
		}
		close(jobs)
		wg.Wait()
		close(stop)
		bg.Wait()
		AddReportEntry("raw link dumps interrupted during the churn", raw.Load())
		Expect(failures).To(BeEmpty())
		c.Sync(GinkgoT()) // fails on any fabric reconcile error
		Eventually(n.hostState, 10*time.Second).Should(Equal(clean))
		log, err := os.ReadFile(filepath.Join(n.dir, "ipamd.log"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(log)).NotTo(ContainSubstring("incomplete or inconsistent"))
	})
})

func bgCtx() context.Context { return context.Background() }

var _ = Describe("the datapath against a fake ipamd", func() {
	It("lays out a pod on the primary ENI as the VPC CNI does, and DEL removes what ADD made", func() {
		n, f := fakeNode(0, "10.0.0.50")
		clean := n.hostState()
		p := n.newPod("web")
		p.mustAdd()
		Expect(p.ip).To(Equal("10.0.0.50"))
		veth := plugin.HostVethName("eni", "default", "web")
		Expect(mustSh(filepath.Base(p.path), "ip", "-4", "addr", "show", "eth0")).To(ContainSubstring("inet 10.0.0.50/32"))
		Expect(mustSh(filepath.Base(p.path), "ip", "route")).To(And(ContainSubstring("default via 169.254.1.1 dev eth0"), ContainSubstring("169.254.1.1 dev eth0 scope link")))
		Expect(mustSh(filepath.Base(p.path), "ip", "neigh")).To(MatchRegexp(`169\.254\.1\.1 dev eth0 lladdr \S+ PERMANENT`))
		Expect(mustSh(n.nsName, "ip", "route")).To(ContainSubstring("10.0.0.50 dev " + veth + " scope link"))
		Expect(mustSh(n.nsName, "ip", "rule")).To(And(ContainSubstring("512:\tfrom all to 10.0.0.50 lookup main"), Not(ContainSubstring("1536:"))))
		Expect(p.del()).To(Succeed())
		Expect(f.Held()).To(Equal(0))
		Expect(n.hostState()).To(Equal(strings.TrimSpace(clean+"\nlink "+veth)), "the veth goes with the sandbox, the rest with DEL")
	})

	It("steers a pod on a secondary ENI through the ENI's table, and reports an empty pool as a CNI error", func() {
		n, f := fakeNode(2, "10.0.1.7")
		p := n.newPod("db")
		p.mustAdd()
		Expect(mustSh(n.nsName, "ip", "rule")).To(ContainSubstring("1536:\tfrom 10.0.1.7 lookup 3"))
		q := n.newPod("late")
		_, err := q.add()
		Expect(err).To(MatchError(ContainSubstring("failed to assign an IP address")))
		Expect(f.Fails).To(Equal(1))
		Expect(p.del()).To(Succeed())
		Expect(p.del()).To(Succeed(), "a second DEL is fine")
		Expect(mustSh(n.nsName, "ip", "rule")).NotTo(ContainSubstring("10.0.1.7"))
	})
})
