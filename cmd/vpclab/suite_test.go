package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/internal/labtest"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/lab"
)

// TestVpclab runs the Ginkgo specs of the CLI (the reliability suite).
func TestVpclab(t *testing.T) { labtest.Suite(t, "vpclab CLI", true) }

// bins holds vpclab and the node binaries, as make build does.
var bins = labtest.Binaries("vpclab", "ipamd", "aws-cni", "aws-vpc-cni", "egress-cni", labtest.RefPlugins)

// vl runs vpclab to completion.
func vl(args ...string) (int, string, string) {
	GinkgoHelper()
	cmd := exec.Command(filepath.Join(*bins, "vpclab"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		Expect(err).NotTo(HaveOccurred())
	}
	return code, out.String(), errb.String()
}

// mustCLI runs vpclab and expects exit code 0.
func mustCLI(args ...string) string {
	GinkgoHelper()
	code, out, errs := vl(args...)
	Expect(code).To(Equal(0), "vpclab %v:\n%s%s", args, out, errs)
	return out
}

// proc is a vpclab started in the background, with default signal
// handling (as from a terminal, unlike a shell's & job), whose output is
// collected.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
	err  error
}

func start(args ...string) *proc {
	GinkgoHelper()
	p := &proc{cmd: exec.Command(filepath.Join(*bins, "vpclab"), args...), done: make(chan struct{})}
	r, w, err := os.Pipe()
	Expect(err).NotTo(HaveOccurred())
	p.cmd.Stdout, p.cmd.Stderr = w, w
	Expect(p.cmd.Start()).To(Succeed())
	w.Close()
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	DeferCleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitFor waits until the output contains s.
func (p *proc) waitFor(s string, timeout time.Duration) {
	GinkgoHelper()
	Eventually(p.output, timeout, 20*time.Millisecond).Should(ContainSubstring(s), "the process's output so far")
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	GinkgoHelper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		Fail(fmt.Sprintf("vpclab %v still running after %s:\n%s", p.cmd.Args[1:], timeout, p.output()))
	}
	return p.cmd.ProcessState.ExitCode()
}

// leftovers lists everything of lab name still on the machine: named
// namespaces, mounts, state files, and processes run from the suite's
// binaries.
func leftovers(name string) []string {
	var out []string
	ns, _ := netx.ListNamed(name + "-")
	for _, n := range ns {
		out = append(out, "netns "+n)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, filepath.Join(lab.DefaultStateDir, name)+" ") || strings.Contains(l, filepath.Join(lab.DefaultStateDir, name)+"/") {
			out = append(out, "mount "+l)
		}
	}
	p := lab.PathsFor(name, "")
	for _, f := range []string{p.Root(), p.Socket(), p.Owner(), p.ConfigFile(), p.Log()} {
		if _, err := os.Stat(f); err == nil {
			out = append(out, "file "+f)
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, e := range procs {
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err == nil && strings.HasPrefix(exe, *bins+"/") && !strings.HasSuffix(exe, "/vpclab") {
			out = append(out, fmt.Sprintf("process %s %s", e.Name(), exe))
		}
	}
	return out
}

// expectClean waits (briefly: teardown is asynchronous in the kernel)
// until nothing of lab name is left.
func expectClean(name string) {
	GinkgoHelper()
	Eventually(func() []string { return leftovers(name) }, 10*time.Second, 100*time.Millisecond).Should(BeEmpty())
}

func suiteLabName() string { return labtest.Name("r", 6) }

// writeFile writes a file under a spec's temp dir.
func writeFile(name, body string) string {
	GinkgoHelper()
	p := filepath.Join(GinkgoT().TempDir(), name)
	Expect(os.WriteFile(p, []byte(body), 0o644)).To(Succeed())
	return p
}

// ownerPID returns the pid owning a lab, once one does.
func ownerPID(name string) int {
	GinkgoHelper()
	var pid int
	Eventually(func() bool {
		o, alive, _ := lab.ReadOwner(lab.PathsFor(name, ""))
		pid = o.PID
		return alive
	}, 30*time.Second, 20*time.Millisecond).Should(BeTrue(), "lab %s never got an owner", name)
	return pid
}

// asNobody runs a command as uid/gid 65534.
func asNobody(cmd *exec.Cmd) *exec.Cmd {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	return cmd
}
