package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/model"
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
	bin, err := labtest.Build("ipamd", "aws-cni", "aws-vpc-cni", "egress-cni", labtest.RefPlugins)
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(bin)
	newLab := func(nodes int, typ string) (*lab.Lab, time.Time) { return benchLab(b, bin, nodes, typ, nil) }
	kubectl := func(l *lab.Lab, stdin string, args ...string) string { return benchKubectl(b, l, stdin, args...) }
	waitRunning := func(l *lab.Lab, app string, want int) { benchRunning(b, l, "app="+app, want) }

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

// benchLab brings up a Kubernetes lab (mod, if set, adjusts its config)
// and returns it with the time bring-up began.
func benchLab(b *testing.B, bin string, nodes int, typ string, mod func(*lab.Config)) (*lab.Lab, time.Time) {
	cfg := lab.Default()
	cfg.Name, cfg.BinDir = labtest.Name("kb", 6), bin
	cfg.Nodes[0].Count, cfg.Nodes[0].InstanceType = nodes, typ
	cfg.Kubernetes = &lab.KubernetesConfig{}
	if mod != nil {
		mod(&cfg)
	}
	t0 := time.Now()
	l, err := lab.New(context.Background(), cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	return l, t0
}

// benchKubectl runs kubectl (stdin "" for none) and returns its output.
func benchKubectl(b *testing.B, l *lab.Lab, stdin string, args ...string) string {
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

// benchRunning waits until want pods the selector picks run with addresses.
func benchRunning(b *testing.B, l *lab.Lab, selector string, want int) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		pods, err := l.KubePods(context.Background(), selector)
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
			b.Fatalf("%d of %d pods (%s) running after 5 min", n, want, selector)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkSecurityGroupsForPods prints how long a pod a SecurityGroupPolicy
// selects takes from creation to Running with its own branch ENI (the real
// VPC Resource Controller creating and associating it, the plugin wiring
// the VLAN), next to a plain pod's time on the same node in the same run.
func BenchmarkSecurityGroupsForPods(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("needs root")
	}
	if err := errors.Join(k8s.Built(), k8s.BuiltRC()); err != nil {
		b.Fatal(err)
	}
	bin, err := labtest.Build("ipamd", "aws-cni", "aws-vpc-cni", "egress-cni", labtest.RefPlugins)
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(bin)
	l, _ := benchLab(b, bin, 1, "m5.large", func(c *lab.Config) { c.Kubernetes.SecurityGroupsForPods = true })
	defer l.Close()
	node := l.Nodes()[0]
	for deadline := time.Now().Add(3 * time.Minute); benchKubectl(b, l, "", "get", "node", node.KubeName(), "-o", `jsonpath={.status.allocatable.vpc\.amazonaws\.com/pod-eni}`) != "9"; {
		if time.Now().After(deadline) {
			b.Fatal("the node never advertised its branch ENIs")
		}
		time.Sleep(time.Second)
	}
	g, err := l.Region().CreateSecurityGroup(model.CreateSecurityGroupInput{VPCID: l.VPCID(), Name: "pods", Description: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	benchKubectl(b, l, fmt.Sprintf("apiVersion: vpcresources.k8s.aws/v1beta1\nkind: SecurityGroupPolicy\nmetadata: {name: pods, namespace: default}\nspec: {podSelector: {matchLabels: {role: sgp}}, securityGroups: {groupIds: [%s]}}\n", g.ID), "apply", "-f", "-")
	pod := func(name, labels string) string {
		return fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: %s, labels: {%s}}\nspec: {containers: [{name: c, image: %s, imagePullPolicy: Never, args: [netexec]}]}\n", name, labels, k8s.AgnhostImage)
	}
	var branch, plain []time.Duration
	for i := range 5 {
		t0 := time.Now()
		benchKubectl(b, l, pod(fmt.Sprintf("sgp-%d", i), fmt.Sprintf("role: sgp, bench: sgp-%d", i)), "apply", "-f", "-")
		benchRunning(b, l, fmt.Sprintf("bench=sgp-%d", i), 1)
		branch = append(branch, time.Since(t0))
		t1 := time.Now()
		benchKubectl(b, l, pod(fmt.Sprintf("plain-%d", i), fmt.Sprintf("bench: plain-%d", i)), "apply", "-f", "-")
		benchRunning(b, l, fmt.Sprintf("bench=plain-%d", i), 1)
		plain = append(plain, time.Since(t1))
	}
	pods, err := l.KubePods(context.Background(), "role=sgp")
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range pods {
		if p.PodENI == "" {
			b.Fatalf("pod %s runs without a branch ENI", p.Name)
		}
	}
	med := func(d []time.Duration) float64 {
		slices.Sort(d)
		return d[len(d)/2].Seconds()
	}
	fmt.Printf("BENCH branch_pod_ready_s %.2f s (p50 of 5: SecurityGroupPolicy pod created → Running with its branch ENI; max %.2f s)\n", med(branch), slices.Max(branch).Seconds())
	fmt.Printf("BENCH plain_pod_ready_s %.2f s (p50 of 5: a plain pod on the same node, same run)\n", med(plain))
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
