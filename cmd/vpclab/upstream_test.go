package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/lab"
)

// inNamespace lists the processes (pid and command line) inside the network namespace whose
// link is ns ("net:[4026532...]").
func inNamespace(ns string) []string {
	var out []string
	procs, _ := os.ReadDir("/proc")
	for _, e := range procs {
		if l, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "net")); err == nil && l == ns {
			cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			out = append(out, e.Name()+" "+strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " ")))
		}
	}
	return out
}

var _ = Describe("vpclab up --cni (the real VPC CNI)", Label("upstream"), func() {
	It("up --cni upstream@"+lab.UpstreamVersion+": two pods reach each other and the VPC, EC2 shows 2 ENIs and 18 addresses, status names the version, down leaves nothing", func() {
		name := suiteLabName()
		DeferCleanup(func() { _, _, _ = vl("down", "--name", name) })
		out := mustCLI("up", "--name", name, "--nodes", "1", "--instance-type", "m5.large", "--cni", "upstream@"+lab.UpstreamVersion)
		Expect(out).To(ContainSubstring("installed by its own entrypoint"))
		mustCLI("pods", "add", "default/a", "--name", name)
		mustCLI("pods", "add", "default/b", "--name", name)
		mustCLI("ping", "default/a", "default/b", "--name", name)

		var st lab.Status
		Expect(json.Unmarshal([]byte(mustCLI("status", "-o", "json", "--name", name)), &st)).To(Succeed())
		n := st.Nodes[0]
		Expect(n.CNI).To(Equal(lab.CNIStatus{Implementation: "upstream", Spec: "upstream@" + lab.UpstreamVersion, Version: lab.UpstreamVersion, Binaries: n.CNI.Binaries}))
		mustCLI("ping", "default/a", n.PrivateIP, "--name", name)

		Eventually(func() [2]int {
			cmd := exec.Command("/usr/bin/aws", "--endpoint-url", st.EC2Endpoint, "--region", st.Region, "--output", "json", "ec2", "describe-network-interfaces",
				"--filters", "Name=attachment.instance-id,Values="+n.InstanceID)
			cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=x", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
			b, err := cmd.Output()
			if err != nil {
				return [2]int{-1, -1}
			}
			var r struct {
				NetworkInterfaces []struct {
					PrivateIpAddresses []struct{ Primary bool }
				}
			}
			Expect(json.Unmarshal(b, &r)).To(Succeed())
			secondary := 0
			for _, e := range r.NetworkInterfaces {
				for _, a := range e.PrivateIpAddresses {
					if !a.Primary {
						secondary++
					}
				}
			}
			return [2]int{len(r.NetworkInterfaces), secondary}
		}, "60s", "500ms").Should(Equal([2]int{2, 18}))

		// vpclab imds reads the node's metadata from inside it, as aws-node does.
		Expect(strings.TrimSpace(mustCLI("imds", "node", "meta-data/local-ipv4", "--name", name))).To(Equal(n.PrivateIP))
		// A crash of the real aws-node is a crash: the lab restarts it as a
		// kubelet would, and the node serves pods again.
		Expect(mustCLI("ipamd", "kill", "node", "--name", name)).To(ContainSubstring("EXITED"))
		Eventually(func() string {
			var s lab.Status
			_ = json.Unmarshal([]byte(mustCLI("status", "-o", "json", "--name", name)), &s)
			return fmt.Sprintf("%s %d", s.Nodes[0].Ipamd.State, s.Nodes[0].Ipamd.Restarts)
		}, "60s", "500ms").Should(Equal("running 1"))
		mustCLI("pods", "add", "default/c", "--retry", "60s", "--name", name)
		mustCLI("ping", "default/c", "default/a", "--name", name)
		Expect(json.Unmarshal([]byte(mustCLI("status", "-o", "json", "--name", name)), &st)).To(Succeed())
		n = st.Nodes[0]

		netns, err := os.Readlink(filepath.Join("/proc", fmt.Sprint(n.Ipamd.PID), "ns", "net"))
		Expect(err).NotTo(HaveOccurred())
		// aws-node's entrypoint and aws-k8s-agent (the agent's own short-lived
		// children, iptables and the like, come and go).
		Eventually(func() []string { return inNamespace(netns) }, "10s", "100ms").Should(
			ConsistOf(HaveSuffix("aws-vpc-cni"), HaveSuffix("aws-k8s-agent")))
		mustCLI("down", "--name", name)
		expectClean(name)
		Eventually(func() []string { return inNamespace(netns) }, "10s", "100ms").Should(BeEmpty())
	})

	It("up --cni path:DIR builds a checkout (the module cache's copy of the source)", func() {
		dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/aws/amazon-vpc-cni-k8s@"+lab.UpstreamVersion).Output()
		Expect(err).NotTo(HaveOccurred())
		name := suiteLabName()
		DeferCleanup(func() { _, _, _ = vl("down", "--name", name) })
		out := mustCLI("up", "--name", name, "--nodes", "1", "--cni", "path:"+strings.TrimSpace(string(dir)))
		Expect(out).To(ContainSubstring("installed by its own entrypoint"))
		mustCLI("pods", "add", "default/a", "--name", name)
		mustCLI("down", "--name", name)
		expectClean(name)
	})

	It("refuses a bad directory, an unknown version, a checkout that does not build: one line, exit 2, nothing left", func() {
		broken := GinkgoT().TempDir()
		Expect(os.WriteFile(filepath.Join(broken, "go.mod"), []byte("module github.com/aws/amazon-vpc-cni-k8s\n\ngo 1.24\n"), 0o644)).To(Succeed())
		Expect(os.MkdirAll(filepath.Join(broken, "cmd", "aws-k8s-agent"), 0o755)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(broken, "cmd", "aws-k8s-agent", "main.go"), []byte("package main\n\nfunc main() { undefined() }\n"), 0o644)).To(Succeed())
		for _, tc := range []struct{ cni, says string }{
			{"path:/nonexistent/dir", "no go.mod in /nonexistent/dir"},
			{"path:" + GinkgoT().TempDir(), "no go.mod"},
			{"bin:" + GinkgoT().TempDir(), "lacks aws-vpc-cni"},
			{"upstream@v9.9.9", "not on the Go module proxy"},
			{"upstream@latest", "want upstream@vX.Y.Z"},
			{"path:" + broken, "go build"},
		} {
			name := suiteLabName()
			code, _, errs := vl("up", "--name", name, "--cni", tc.cni)
			Expect(code).To(Equal(2), tc.cni)
			Expect(strings.Count(strings.TrimSpace(errs), "\n")).To(BeZero(), "one line for %s: %s", tc.cni, errs)
			Expect(errs).To(ContainSubstring(tc.says), tc.cni)
			expectClean(name)
		}
		_, err := os.Stat(filepath.Join(lab.CacheDir(), "cni", "v9.9.9"))
		Expect(os.IsNotExist(err)).To(BeTrue(), "nothing cached for an unknown version")
	})
})
