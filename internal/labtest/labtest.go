// Package labtest is the one test harness of vpclab's suites: the suite
// bootstrap (root check, binaries built once), unique names for kernel
// objects, a world (a region, its server and a fabric) with instances that
// run a real ipamd, and a fake ipamd for the plugin's datapath specs.
package labtest

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	. "github.com/onsi/gomega"
)

// Name returns prefix followed by random [a-z0-9] characters, n in all, so
// parallel tests never share a namespace or lab name.
func Name(prefix string, n int) string {
	const alpha = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, max(n-len(prefix), 1))
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alpha[int(b[i])%len(alpha)]
	}
	return prefix + string(b)
}

// Suite runs a package's Ginkgo specs (with Ginkgo configs, if given);
// root says the suite creates kernel objects and must run as root (it
// fails, not skips, otherwise).
func Suite(t *testing.T, name string, root bool, configs ...any) {
	if root && os.Geteuid() != 0 {
		t.Fatalf("the %s suite needs root (network and mount namespaces)", name)
	}
	RegisterFailHandler(Fail)
	if !RunSpecs(t, name, configs...) {
		fmt.Print(failureDigest(lastReport))
	}
}

// lastReport is the suite's report, kept for failureDigest.
var lastReport types.Report

var _ = ReportAfterSuite("failure digest", func(r types.Report) { lastReport = r })

// failureDigest is each failed spec's name and the first lines of its
// failure, printed after Ginkgo's summary: CI often keeps only the tail of
// the output, where Ginkgo names the failed specs but not why they failed.
func failureDigest(r types.Report) string {
	var b strings.Builder
	for _, s := range r.SpecReports {
		if !s.State.Is(types.SpecStateFailureStates) {
			continue
		}
		fmt.Fprintf(&b, "FAILED %s\n", s.FullText())
		lines := strings.Split(strings.TrimSpace(s.Failure.Message), "\n")
		for i, l := range lines {
			if i == 4 {
				fmt.Fprintf(&b, "    … (%d more lines)\n", len(lines)-i)
				break
			}
			if len(l) > 300 {
				l = l[:300] + "…"
			}
			fmt.Fprintf(&b, "    %s\n", l)
		}
	}
	return b.String()
}

// RefPlugins, given to Build, also builds the CNI project's reference
// plugins (portmap, bandwidth, tuning, loopback, ptp, host-local) from the module
// version go.mod pins, into the cni/ directory beside the commands: where
// the lab and aws-vpc-cni look for them by default.
const RefPlugins = "cni"

// refPlugins are the reference plugins' packages.
var refPlugins = []string{"meta/portmap", "meta/bandwidth", "meta/tuning", "main/loopback", "main/ptp", "ipam/host-local"}

// binPrefix starts the name of every directory Build creates; the building
// process's id follows, so a later Build can tell a leftover of a killed
// run from a live one.
const binPrefix = "vpclab-bin-"

// built lists the directories this process's Build calls created, for
// RemoveBuilt.
var built struct {
	sync.Mutex
	dirs []string
}

// Build compiles the named commands (e.g. "ipamd", "aws-cni", RefPlugins)
// of this module into a new temporary directory and returns it. The
// directory is this process's to remove (RemoveBuilt, or os.RemoveAll); one
// left behind by a process that died is removed by the next Build on this
// machine (each is ~150 MB: a full disk fails every later run).
func Build(cmds ...string) (string, error) {
	sweepStale()
	_, here, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(here), "..", "..")
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", binPrefix, os.Getpid()))
	if err != nil {
		return "", fmt.Errorf("binaries directory: %w", err)
	}
	built.Lock()
	built.dirs = append(built.dirs, dir)
	built.Unlock()
	args := []string{"build", "-o", dir + "/"}
	var ref []string
	for _, c := range cmds {
		if c == RefPlugins {
			ref = []string{"build", "-o", filepath.Join(dir, RefPlugins) + "/"}
			for _, p := range refPlugins {
				ref = append(ref, "github.com/containernetworking/plugins/plugins/"+p)
			}
			continue
		}
		args = append(args, "./cmd/"+c)
	}
	for _, a := range [][]string{args, ref} {
		if len(a) <= 3 {
			continue
		}
		cmd := exec.Command("go", a...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go %s: %v\n%s", strings.Join(a, " "), err, out)
		}
	}
	return dir, nil
}

// RemoveBuilt removes every directory this process's Build calls created;
// a package whose plain tests call Build calls it from TestMain.
func RemoveBuilt() {
	built.Lock()
	defer built.Unlock()
	for _, d := range built.dirs {
		_ = os.RemoveAll(d)
	}
	built.dirs = nil
}

// Main runs a package's tests and then removes the binaries its plain
// tests built (call it from TestMain: os.Exit(labtest.Main(m))).
func Main(m *testing.M) int {
	code := m.Run()
	RemoveBuilt()
	return code
}

// sweepStale removes the binaries directories of processes that no longer
// run (a suite killed by a timeout or a signal never reaches its cleanup).
func sweepStale() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), binPrefix+"*"))
	for _, m := range matches {
		rest := strings.TrimPrefix(filepath.Base(m), binPrefix)
		pid, err := strconv.Atoi(rest[:max(strings.IndexByte(rest, '-'), 0)])
		if err != nil || pid <= 0 {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			_ = os.RemoveAll(m)
		}
	}
}

// Binaries builds the commands once per suite run (on the first parallel
// process) and returns where the directory will be; call it in a package
// level var declaration. The directory is removed after the suite, once
// every parallel process is done with it.
func Binaries(cmds ...string) *string {
	dir := new(string)
	SynchronizedBeforeSuite(func() []byte {
		d, err := Build(cmds...)
		Expect(err).NotTo(HaveOccurred())
		return []byte(d)
	}, func(b []byte) { *dir = string(b) })
	SynchronizedAfterSuite(func() {}, RemoveBuilt)
	return dir
}

// InNetns runs a command inside a named network namespace (ip netns exec)
// and returns its combined output.
func InNetns(ns string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	return string(out), err
}
