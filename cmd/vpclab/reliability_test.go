package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/lab"
)

var _ = Describe("labs never destroy each other", Label("reliability"), func() {
	It("gc --name leaves a running demo alone, and the demo finishes", func() {
		name := suiteLabName()
		demo := start("demo", "--name", name)
		ownerPID(name)
		code, out, errs := vl("gc", "--name", name)
		Expect(code).To(Equal(0), errs)
		Expect(out).To(ContainSubstring("is alive"))
		Expect(demo.wait(3*time.Minute)).To(Equal(0), demo.output())
		Expect(demo.output()).To(ContainSubstring("invariants hold"))
		expectClean(name)
	})

	It("gc --name leaves a running scenario alone", func() {
		file := writeFile("slow.yaml", `name: slow
lab:
  vpcCidr: 10.0.0.0/16
  subnets: [{name: a, cidr: 10.0.0.0/24}]
  nodes: [{name: node, instanceType: t3.medium}]
  env: {VPCLAB_POOL_INTERVAL: 100ms}
steps:
  - addPods: 1
  - {name: one pod, expect: {pods: 1}}
  - sleep: 4s
  - {name: still one, expect: {pods: 1}}
`)
		sc := start("scenario", "run", file)
		sc.waitFor("in lab ", time.Minute)
		name := strings.Fields(strings.SplitN(sc.output(), "in lab ", 2)[1])[0]
		ownerPID(name)
		code, out, _ := vl("gc", "--name", name)
		Expect(code).To(Equal(0))
		Expect(out).To(ContainSubstring("is alive"))
		Expect(sc.wait(2*time.Minute)).To(Equal(0), sc.output())
		Expect(sc.output()).To(ContainSubstring("PASS slow"))
		expectClean(name)
	})

	It("gc leaves a lab owned by a test process alone, and removes it once that process is gone", func() {
		ctx := context.Background()
		cfg := lab.Default()
		cfg.Name, cfg.BinDir, cfg.Owner = suiteLabName(), *bins, "test"
		cfg.Nodes[0].Count = 1
		l, err := lab.New(ctx, cfg, nil)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { _ = l.Close() })
		code, out, _ := vl("gc", "--name", cfg.Name)
		Expect(code).To(Equal(0))
		Expect(out).To(ContainSubstring("is alive (owned by pid " + strconv.Itoa(os.Getpid()) + " (test))"))
		_, err = l.Node("node").AddPod(ctx, "default", "still-works")
		Expect(err).NotTo(HaveOccurred())
		Expect(lab.GC(cfg.Name, "")).To(MatchError(ContainSubstring("owned by")))
		Expect(l.Close()).To(Succeed())
		expectClean(cfg.Name)
	})

	It("gc --name removes a lab whose supervisor was killed; status and down say what happened", func() {
		name := suiteLabName()
		code, out, errs := vl("up", "--name", name, "--nodes", "1")
		Expect(code).To(Equal(0), out+errs)
		Expect(out).To(ContainSubstring("vpclab status --name " + name))
		Expect(out).To(ContainSubstring("vpclab down --name " + name))
		Expect(out).To(ContainSubstring("/usr/bin/aws --endpoint-url"))
		Expect(out).To(ContainSubstring("--region us-west-2"))
		DeferCleanup(func() { vl("gc", "--name", name) })
		Expect(syscall.Kill(ownerPID(name), syscall.SIGKILL)).To(Succeed())
		Eventually(func() bool { _, alive, _ := lab.ReadOwner(lab.PathsFor(name, "")); return alive }, 5*time.Second).Should(BeFalse())
		for _, cmd := range []string{"status", "down"} {
			code, _, errs := vl(cmd, "--name", name)
			Expect(code).To(Equal(1))
			Expect(strings.Split(strings.TrimSpace(errs), "\n")).To(HaveLen(1))
			Expect(errs).To(ContainSubstring("supervisor is gone"))
			Expect(errs).To(ContainSubstring("vpclab gc --name " + name))
			Expect(errs).NotTo(ContainSubstring("connection refused"))
		}
		code, out, _ = vl("gc", "--name", name)
		Expect(code).To(Equal(0))
		Expect(out).To(ContainSubstring("removed leftovers of lab " + name))
		expectClean(name)
	})

	It("refuses pods add while the lab is still coming up, with a clear message", func() {
		name := suiteLabName()
		// ipamd's start-up call is slowed, so bring-up takes ≥ 5 s.
		file := writeFile("slow.yaml", `vpcCidr: 10.0.0.0/16
subnets: [{name: a, cidr: 10.0.0.0/24}]
nodes: [{name: node, instanceType: m5.large}]
faults: [{action: DescribeNetworkInterfaces, latency: 5s}]
`)
		up := start("up", "-f", file, "--name", name)
		DeferCleanup(func() { vl("down", "--name", name); vl("gc", "--name", name) })
		up.waitFor("fabric up", time.Minute)
		code, _, errs := vl("pods", "add", "default/early", "--name", name)
		Expect(code).To(Equal(1))
		Expect(errs).To(ContainSubstring("still coming up"))
		Expect(up.wait(2*time.Minute)).To(Equal(0), up.output())
		code, out, errs := vl("pods", "--name", name, "add", "default/late")
		Expect(code).To(Equal(0), errs)
		Expect(out).To(ContainSubstring("default/late on node"))
		code, _, _ = vl("down", "--name", name)
		Expect(code).To(Equal(0))
		expectClean(name)
	})
})

var _ = Describe("bad input fails fast, in one line, leaving nothing", Label("reliability"), func() {
	DescribeTable("up refuses",
		func(args []string, yaml, want string) {
			name := suiteLabName()
			if yaml != "" {
				args = append(args, "-f", writeFile("lab.yaml", yaml))
			}
			t0 := time.Now()
			code, out, errs := vl(append([]string{"up", "--name", name}, args...)...)
			Expect(time.Since(t0)).To(BeNumerically("<", 10*time.Second))
			Expect(code).To(Equal(2), out+errs)
			Expect(strings.Split(strings.TrimSpace(errs), "\n")).To(HaveLen(1), errs)
			Expect(errs).To(ContainSubstring(want))
			Expect(errs).NotTo(ContainSubstring("panic"))
			expectClean(name)
		},
		Entry("an AZ outside the region", nil, "vpcCidr: 10.0.0.0/16\nsubnets: [{name: a, cidr: 10.0.0.0/24, az: us-east-1a}]\nnodes: [{name: n, instanceType: m5.large}]\n", `az "us-east-1a": not an availability zone of region us-west-2`),
		Entry("20 nodes in a /28", nil, "vpcCidr: 10.0.0.0/16\nsubnets: [{name: tiny, cidr: 10.0.0.0/28}]\nnodes: [{name: n, instanceType: t3.nano, count: 20}]\n", "11 usable addresses and cannot hold 20 nodes"),
		Entry("a bad aws-node value", []string{"--env", "WARM_IP_TARGET=abc"}, "", `WARM_IP_TARGET="abc"`),
		Entry("duplicate node names", nil, "vpcCidr: 10.0.0.0/16\nsubnets: [{name: a, cidr: 10.0.0.0/24}]\nnodes: [{name: n, instanceType: m5.large, count: 2}, {name: n-1, instanceType: m5.large}]\n", `node name "n-1" is already used`),
		Entry("--nodes 0", []string{"--nodes", "0"}, "", "--nodes 0: want 1..200"),
		Entry("a subnet with host bits", []string{"--subnet-cidr", "192.168.4.1/24"}, "", "--subnet-cidr 192.168.4.1/24: host bits set"),
		Entry("a bad restart policy", []string{"--ipamd-restart", "sometimes"}, "", "--ipamd-restart"),
	)

	It("--subnet-cidr moves the lab's other subnets out of the way instead of naming one the user never typed", func() {
		cfg, err := lab.Overrides{Name: "x", SubnetCIDR: "192.168.0.0/18"}.Config()
		Expect(err).NotTo(HaveOccurred())
		Expect(cfg.Subnets[0].CIDR).To(Equal("192.168.0.0/18"))
		Expect(cfg.Subnets).To(HaveLen(3))
		Expect(cfg.Validate()).To(Succeed())
		_, err = lab.Overrides{Name: "x", SubnetCIDR: "10.0.0.0/24"}.Config()
		Expect(err).To(MatchError(ContainSubstring("--subnet-cidr 10.0.0.0/24: not inside vpcCidr 192.168.0.0/16")))
	})

	It("a bring-up that fails after creating things (ipamd exits) says why at once and leaves nothing", func() {
		name := suiteLabName()
		// Valid for the lab, fatal for ipamd: no instance metadata there.
		file := writeFile("lab.yaml", "vpcCidr: 10.0.0.0/16\nsubnets: [{name: a, cidr: 10.0.0.0/24}]\nnodes: [{name: n, instanceType: m5.large, count: 2}]\nenv: {AWS_EC2_METADATA_SERVICE_ENDPOINT: \"http://127.0.0.1:1\"}\n")
		t0 := time.Now()
		code, out, errs := vl("up", "--name", name, "-f", file)
		Expect(time.Since(t0)).To(BeNumerically("<", 20*time.Second), "noticed at once, not after the installer's 60 s")
		Expect(code).To(Equal(1), out+errs)
		Expect(strings.Split(strings.TrimSpace(errs), "\n")).To(HaveLen(1), errs)
		Expect(errs).To(ContainSubstring("ipamd exited during start-up"))
		Expect(errs).To(ContainSubstring("127.0.0.1:1"))
		Expect(errs).To(ContainSubstring("and 1 more nodes failed"))
		expectClean(name)
	})

	It("refuses pod names that are not Kubernetes names", func() {
		for _, ref := range []string{"ns/a b", "ns/" + strings.Repeat("a", 300), "Bad/x", "ns/-x"} {
			code, _, errs := vl("pods", "add", ref, "--name", "nolab")
			Expect(code).To(Equal(2), ref)
			Expect(errs).To(ContainSubstring("DNS-1123"))
		}
		Expect(lab.ValidatePodName("default", "web-0.a")).To(Succeed())
	})
})

var _ = Describe("an interrupt at any moment leaves nothing", Label("reliability"), func() {
	DescribeTable("up --foreground",
		func(after string) {
			name := suiteLabName()
			up := start("up", "--foreground", "--name", name, "--nodes", "2")
			up.waitFor(after, 2*time.Minute)
			Expect(up.cmd.Process.Signal(os.Interrupt)).To(Succeed())
			up.wait(time.Minute)
			expectClean(name)
		},
		Entry("as the region comes up", "region "),
		Entry("as the fabric comes up", "fabric up"),
		Entry("as the first node is up", "ipamd serving"),
		Entry("when it is running", "running in the foreground"),
	)

	DescribeTable("demo",
		func(after string) {
			name := suiteLabName()
			demo := start("demo", "--name", name)
			demo.waitFor(after, 2*time.Minute)
			Expect(demo.cmd.Process.Signal(os.Interrupt)).To(Succeed())
			demo.wait(time.Minute)
			expectClean(name)
		},
		Entry("during bring-up", "bringing up"),
		Entry("as nodes come up", "ipamd serving"),
		Entry("while pods are added", "pods get addresses"),
		Entry("during throttling", "== throttling"),
		Entry("during exhaustion", "== exhaustion"),
	)

	It("up (in the background) during bring-up", func() {
		name := suiteLabName()
		up := start("up", "--name", name, "--nodes", "2")
		up.waitFor("fabric up", 2*time.Minute)
		Expect(up.cmd.Process.Signal(os.Interrupt)).To(Succeed())
		Expect(up.wait(time.Minute)).NotTo(Equal(0))
		Expect(up.output()).To(ContainSubstring("interrupted"))
		expectClean(name)
	})
})

var _ = Describe("a lab's processes", Label("reliability"), func() {
	It("Close kills processes others started in the lab's namespaces before deleting them", func() {
		ctx := context.Background()
		cfg := lab.Default()
		cfg.Name, cfg.BinDir, cfg.Owner = suiteLabName(), *bins, "test"
		cfg.Nodes[0].Count = 1
		l, err := lab.New(ctx, cfg, nil)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { _ = l.Close() })
		n := l.Node("node")
		// A user's own process on the node (a debugger, a second ipamd).
		sleeper := exec.Command("nsenter", "--net="+n.NetNS(), "--mount="+n.MountNS(), "--", "sleep", "600")
		Expect(sleeper.Start()).To(Succeed())
		exited := make(chan error, 1)
		go func() { exited <- sleeper.Wait() }()
		Expect(l.Close()).To(Succeed())
		Eventually(exited, 5*time.Second).Should(Receive())
		expectClean(cfg.Name)
	})

	It("status shows a dead ipamd with its last log line; ipamd restart and kill work; the lab restarts it unless told never", func() {
		name := suiteLabName()
		code, out, errs := vl("up", "--name", name, "--nodes", "1", "--ipamd-restart", "never")
		Expect(code).To(Equal(0), out+errs)
		DeferCleanup(func() { vl("down", "--name", name); vl("gc", "--name", name) })
		code, out, _ = vl("ipamd", "kill", "node", "--name", name)
		Expect(code).To(Equal(0))
		Expect(out).To(ContainSubstring("EXITED"))
		status := func() lab.Status {
			_, out, _ := vl("status", "-o", "json", "--name", name)
			var s lab.Status
			Expect(json.Unmarshal([]byte(out), &s)).To(Succeed(), out)
			return s
		}
		s := status()
		Expect(s.Nodes[0].Ipamd.State).To(Equal("exited"))
		Expect(s.Nodes[0].Ipamd.Exit).To(ContainSubstring("killed"))
		Expect(s.Nodes[0].Ipamd.LastLog).NotTo(BeEmpty())
		Consistently(func() string { return status().Nodes[0].Ipamd.State }, 2*time.Second, 200*time.Millisecond).Should(Equal("exited"))
		_, table, _ := vl("status", "--name", name)
		Expect(table).To(ContainSubstring("EXITED"))
		code, out, errs = vl("ipamd", "restart", "node", "--name", name)
		Expect(code).To(Equal(0), errs)
		Expect(out).To(ContainSubstring("running"))
		code, _, errs = vl("pods", "add", "default/after", "--name", name)
		Expect(code).To(Equal(0), errs)
		code, _, _ = vl("ipamd", "kill", "node", "--signal", "BOGUS", "--name", name)
		Expect(code).To(Equal(2))
		mustCLI("down", "--name", name)

		// The default policy restarts it after a second, as a kubelet would.
		name2 := suiteLabName()
		code, out, errs = vl("up", "--name", name2, "--nodes", "1")
		Expect(code).To(Equal(0), out+errs)
		DeferCleanup(func() { vl("down", "--name", name2); vl("gc", "--name", name2) })
		_, out, _ = vl("ipamd", "kill", "node", "--name", name2)
		Expect(out).To(ContainSubstring("EXITED"))
		Eventually(func() string {
			_, out, _ := vl("status", "-o", "json", "--name", name2)
			var s lab.Status
			_ = json.Unmarshal([]byte(out), &s)
			if len(s.Nodes) == 0 {
				return ""
			}
			return s.Nodes[0].Ipamd.State + strconv.Itoa(s.Nodes[0].Ipamd.Restarts)
		}, 10*time.Second, 200*time.Millisecond).Should(Equal("running1"))
		mustCLI("down", "--name", name2)
		expectClean(name)
		expectClean(name2)
	})
})

var _ = Describe("the lab's control surfaces let in only root", Label("reliability"), func() {
	It("refuses non-root and pods; the host EC2 endpoint is the Query API only; cross-origin requests are refused", func() {
		name := suiteLabName()
		code, out, errs := vl("up", "--name", name, "--nodes", "1")
		Expect(code).To(Equal(0), out+errs)
		DeferCleanup(func() { vl("down", "--name", name); vl("gc", "--name", name) })
		p := lab.PathsFor(name, "")
		st, err := os.Stat(p.Socket())
		Expect(err).NotTo(HaveOccurred())
		Expect(st.Mode().Perm()).To(Equal(os.FileMode(0o600)))
		// Not root: the socket cannot be opened; and were its mode changed,
		// the peer's uid is still refused.
		addFault := func() error {
			curl := asNobody(exec.Command("curl", "-sSf", "--max-time", "5", "--unix-socket", p.Socket(), "-X", "POST", "-d", `[{"action":"*","code":"X"}]`, "http://lab/_fake/v1/faults"))
			b, err := curl.CombinedOutput()
			GinkgoWriter.Printf("curl as nobody: %v %s\n", err, b)
			return err
		}
		Expect(addFault()).To(HaveOccurred())
		Expect(os.Chmod(p.Socket(), 0o666)).To(Succeed())
		Expect(addFault()).To(HaveOccurred())
		Expect(os.Chmod(p.Socket(), 0o600)).To(Succeed())
		// Root: it works.
		code, _, errs = vl("faults", "list", "-o", "json", "--name", name)
		Expect(code).To(Equal(0), errs)

		c, err := lab.Dial(name, "")
		Expect(err).NotTo(HaveOccurred())
		s, err := c.Status(context.Background())
		Expect(err).NotTo(HaveOccurred())
		// The host's EC2 endpoint has no control API…
		b, _ := exec.Command("curl", "-sS", "--max-time", "5", "-X", "POST", "-d", `[{"action":"*","code":"X"}]`, s.EC2Endpoint+"/_fake/v1/faults").CombinedOutput()
		Expect(string(b)).NotTo(ContainSubstring(`"id"`))
		Expect(string(b)).To(ContainSubstring("<Code>"))
		// …and a page's cross-origin POST is refused.
		b, _ = exec.Command("curl", "-sS", "--max-time", "5", "-H", "Origin: http://evil.example", "-H", "Content-Type: text/plain", "-d", "Action=DescribeVpcs&Version=2016-11-15", s.EC2Endpoint+"/").CombinedOutput()
		Expect(string(b)).To(ContainSubstring("Cross-origin requests are refused"))
		// From a pod: the EC2 API answers, the control API does not exist.
		code, _, errs = vl("pods", "add", "default/probe", "--name", name)
		Expect(code).To(Equal(0), errs)
		code, out, _ = vl("exec", "default/probe", "--name", name, "--", "curl", "-sS", "--max-time", "5", "-X", "POST", "-d", `{"action":"*","code":"X"}`, "http://169.254.169.250/_fake/v1/faults")
		_ = code
		Expect(out).NotTo(ContainSubstring(`"id"`))
		Expect(out).To(ContainSubstring("<Code>"))
		code, out, _ = vl("exec", "default/probe", "--name", name, "--", "curl", "-sS", "--max-time", "5", "http://169.254.169.250/?Action=DescribeVpcs&Version=2016-11-15")
		Expect(out).To(ContainSubstring("DescribeVpcsResponse"))
		rules, err := c.Faults(context.Background())
		Expect(err).NotTo(HaveOccurred())
		Expect(rules).To(BeEmpty(), "no request from outside root's socket added a fault")
		mustCLI("down", "--name", name)
		expectClean(name)
	})
})

var _ = Describe("the CLI's help and output", Label("reliability"), func() {
	It("prints every command's usage with its flags for --help, exit 0", func() {
		for _, c := range [][]string{{"up"}, {"down"}, {"gc"}, {"demo"}, {"status"}, {"pods"}, {"pods", "add"}, {"pods", "list"}, {"exec"}, {"ping"},
			{"events"}, {"faults"}, {"faults", "add"}, {"throttle", "set"}, {"metrics"}, {"ipamd"}, {"ipamd", "kill"}, {"max-pods"}, {"scenario"}, {"scenario", "run"}} {
			code, out, errs := vl(append(c, "--help")...)
			Expect(code).To(Equal(0), "%v: %s", c, errs)
			Expect(out).To(ContainSubstring("usage: vpclab "+c[0]), "%v", c)
		}
		_, out, _ := vl("up", "--help")
		Expect(out).To(ContainSubstring("-instance-type"))
		Expect(out).To(ContainSubstring("--name"))
	})

	It("events -o table says OK for successful calls; faults and pods list -o json; --name before or after the command", func() {
		name := suiteLabName()
		code, out, errs := vl("--name", name, "up", "--nodes", "1")
		Expect(code).To(Equal(0), out+errs)
		DeferCleanup(func() { vl("down", "--name", name); vl("gc", "--name", name) })
		_, out, _ = vl("events", "-o", "table", "--name", name)
		Expect(out).NotTo(ContainSubstring("<nil>"))
		Expect(out).To(MatchRegexp(`DescribeNetworkInterfaces\s+OK`))
		mustCLI("faults", "--name", name, "add", "--action", "CreateTags", "--code", "RequestLimitExceeded")
		_, out, _ = vl("faults", "list", "-o", "json", "--name", name)
		var rules []map[string]any
		Expect(json.Unmarshal([]byte(out), &rules)).To(Succeed(), out)
		Expect(rules).To(HaveLen(1))
		mustCLI("pods", "--name", name, "add", "default/j")
		_, out, _ = vl("--name", name, "pods", "list", "-o", "json")
		var pods []lab.PodStatus
		Expect(json.Unmarshal([]byte(out), &pods)).To(Succeed(), out)
		Expect(pods).To(HaveLen(1))
		Expect(pods[0].Name).To(Equal("j"))
		mustCLI("down", "--name", name)
		expectClean(name)
	})

	It("README's set-up commands need no sudo", func() {
		b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
		Expect(err).NotTo(HaveOccurred())
		setup := strings.SplitN(strings.SplitN(string(b), "## Set-up", 2)[1], "```", 3)[1]
		Expect(setup).NotTo(ContainSubstring("sudo "))
	})
})
