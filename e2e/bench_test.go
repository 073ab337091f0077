package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/internal/labtest"
	"github.com/vpclab/vpclab/lab"
	"github.com/vpclab/vpclab/lab/k8s"
)

// kindCreateClusterS is kind's `kind create cluster` with its node image
// cached, as kind's own documentation and issue threads quote it (30–60 s;
// its pods get bridge addresses, not VPC ones): cited, not measured here
// (kind needs Docker, which this machine does not run).
const kindCreateClusterS = "30-60"

// BenchmarkKubernetes measures Kubernetes mode: a one-node cluster from
// nothing to its first pod Running with a VPC address (k8s_cluster_ready_s,
// next to kind's cited figure), a 100-replica Deployment on 4 × m5.xlarge
// (k8s_100_pods_s, with the EC2 mutating calls it took), and the proportional
// memory (PSS) of a 3-node cluster's processes.
func BenchmarkKubernetes(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("needs root")
	}
	if err := k8s.Built(); err != nil {
		b.Fatal(err)
	}
	bin, err := labtest.Build("ipamd", "aws-cni", "aws-vpc-cni", labtest.RefPlugins)
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(bin)
	newLab := func(nodes int, typ string) (*lab.Lab, time.Time) {
		cfg := lab.Default()
		cfg.Name, cfg.BinDir = labtest.Name("kb", 6), bin
		cfg.Nodes[0].Count, cfg.Nodes[0].InstanceType = nodes, typ
		cfg.Kubernetes = &lab.KubernetesConfig{}
		t0 := time.Now()
		l, err := lab.New(context.Background(), cfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		return l, t0
	}
	kubectl := func(l *lab.Lab, stdin string, args ...string) string {
		var in []byte
		if stdin != "" {
			in = []byte(stdin)
		}
		out, err := l.Kubectl(context.Background(), in, args...)
		if err != nil {
			b.Fatal(err)
		}
		return string(out)
	}
	// waitRunning waits until want pods of app run with addresses.
	waitRunning := func(l *lab.Lab, app string, want int) {
		deadline := time.Now().Add(5 * time.Minute)
		for {
			pods, err := l.KubePods(context.Background(), "app="+app)
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for _, p := range pods {
				if p.Phase == "Running" && p.IP != "" {
					n++
				}
			}
			if n == want {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d pods of %s running after 5 min", n, want, app)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	l, t0 := newLab(1, "m5.large")
	kubectl(l, deployment("first", 1, ""), "apply", "-f", "-")
	waitRunning(l, "first", 1)
	ready := time.Since(t0)
	_ = l.Close()
	fmt.Printf("BENCH k8s_cluster_ready_s %.1f s (up --kubernetes --nodes 1 → node and aws-node Ready, first pod Running with a VPC address; kind create cluster: %s s, cited)\n", ready.Seconds(), kindCreateClusterS)

	l, _ = newLab(4, "m5.xlarge")
	before := mutatingCalls(l)
	t1 := time.Now()
	kubectl(l, deployment("hundred", 100, ""), "apply", "-f", "-")
	waitRunning(l, "hundred", 100)
	fmt.Printf("BENCH k8s_100_pods_s %.1f s (100 replicas on 4 × m5.xlarge, ENI scaling included; goal 60 s)\n", time.Since(t1).Seconds())
	fmt.Printf("BENCH k8s_100_pods_ec2_mutating_calls %d\n", mutatingCalls(l)-before)
	_ = l.Close()

	l, _ = newLab(3, "m5.large")
	kubectl(l, deployment("three", 6, ""), "apply", "-f", "-")
	waitRunning(l, "three", 6)
	fmt.Printf("BENCH k8s_3node_pss_mib %.0f MiB (control plane, containerd, kubelets, kube-proxies, aws-node, CoreDNS, 6 pods; goal 1536)\n", float64(labPSS(l))/1024)
	_ = l.Close()
}

// mutatingCalls counts the EC2 calls the lab answered that change state.
func mutatingCalls(l *lab.Lab) int {
	n := 0
	for _, r := range l.Events(ec2query.EventFilter{}) {
		if !r.ReadOnly {
			n++
		}
	}
	return n
}

// labPSS sums the proportional set size (KiB) of the processes a
// Kubernetes lab runs: everything in its nodes' and control plane's
// cgroups or namespaces, found as the descendants of this process plus the
// pods in the kubelets' cgroups.
func labPSS(l *lab.Lab) int {
	self := os.Getpid()
	parents := map[int]int{}
	procs, _ := os.ReadDir("/proc")
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		if len(f) > 2 {
			parents[pid], _ = strconv.Atoi(f[1])
		}
	}
	ours := func(pid int) bool {
		for p := pid; p > 1; p = parents[p] {
			if p == self {
				return true
			}
		}
		return false
	}
	total := 0
	for pid := range parents {
		if pid == self || !(ours(pid) || inLabCgroup(pid, l)) {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
				v, _ := strconv.Atoi(f[1])
				total += v
			}
		}
	}
	return total
}

// inLabCgroup says whether pid is in a cgroup of the lab's kubelets (a pod
// or a containerd shim: they are not this process's descendants).
func inLabCgroup(pid int, l *lab.Lab) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	return err == nil && strings.Contains(string(b), "/vpclab-"+l.Status().Name+"-")
}
