package ipamd_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"github.com/vpclab/vpclab/fakeec2/model"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/internal/testutil"
	"github.com/vpclab/vpclab/internal/vlan"
	"github.com/vpclab/vpclab/ipamd/rpc"
)

func TestIPAMD(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the ipamd tests need root (network namespaces)")
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "ipamd")
}

var ipamdBin string

var _ = SynchronizedBeforeSuite(func() []byte {
	dir, err := testutil.Build("ipamd")
	Expect(err).NotTo(HaveOccurred())
	return []byte(filepath.Join(dir, "ipamd"))
}, func(b []byte) { ipamdBin = string(b) })

func uniqueName() string { return testutil.Name("i", 7) }

// node is one instance of a region with a fabric, and an ipamd on it.
type node struct {
	region *model.Region
	srv    *fakeec2.Server
	fab    *fabric.Fabric
	inst   model.Instance
	subnet model.Subnet
	nsPath string
	dir    string
	cmd    *exec.Cmd
	env    map[string]string
	client rpc.CNIBackendClient
	conn   *grpc.ClientConn
	http   *http.Client
}

type nodeOpts struct {
	typ        string
	subnetCIDR string
	env        map[string]string
}

func newNode(o nodeOpts) *node {
	GinkgoHelper()
	if o.typ == "" {
		o.typ = "m5.large"
	}
	if o.subnetCIDR == "" {
		o.subnetCIDR = "10.0.0.0/24"
	}
	n := &node{dir: GinkgoT().TempDir(), env: o.env}
	n.region = model.NewRegion(model.Options{Seed: 7})
	n.srv = fakeec2.NewServer(n.region, fakeec2.ServerOptions{})
	DeferCleanup(n.srv.Close)
	v, err := n.region.CreateVPC(model.CreateVPCInput{CIDR: netip.MustParsePrefix("10.0.0.0/16")})
	Expect(err).NotTo(HaveOccurred())
	n.subnet, err = n.region.CreateSubnet(model.CreateSubnetInput{VPCID: v.ID, CIDR: netip.MustParsePrefix(o.subnetCIDR)})
	Expect(err).NotTo(HaveOccurred())
	insts, err := n.region.RunInstances(model.RunInstancesInput{InstanceType: o.typ, SubnetID: n.subnet.ID})
	Expect(err).NotTo(HaveOccurred())
	n.inst = insts[0]
	n.fab, err = fabric.New(fabric.Config{Name: uniqueName(), Region: n.region, IMDS: n.srv.IMDS(), EC2: n.srv, VLAN: vlan.BPF{}})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(n.fab.Close()).To(Succeed()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	Expect(n.fab.WaitSynced(ctx)).To(Succeed())
	var ok bool
	n.nsPath, ok = n.fab.NodeNamespace(n.inst.ID)
	Expect(ok).To(BeTrue())
	ns, err := netns.GetFromPath(n.nsPath)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(ns.Close)
	n.http = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: netx.DialContextIn(ns), DisableKeepAlives: true}}
	return n
}

func (n *node) sock() string { return filepath.Join(n.dir, "ipamd.sock") }

// start runs ipamd inside the node namespace and waits until it serves.
func (n *node) start() {
	GinkgoHelper()
	env := testutil.IpamdEnv(n.dir, "AWS_VPC_K8S_CNI_LOGLEVEL=debug",
		"VPCLAB_POOL_INTERVAL=100ms", "VPCLAB_DECREASE_INTERVAL=200ms", "VPCLAB_MIN_ENI_LIFETIME=0s", "VPCLAB_IP_COOLDOWN=0s")
	for k, v := range n.env {
		env = append(env, k+"="+v)
	}
	name := filepath.Base(n.nsPath)
	n.cmd = exec.Command("ip", "netns", "exec", name, ipamdBin)
	n.cmd.Env = env
	n.cmd.Stdout, n.cmd.Stderr = GinkgoWriter, GinkgoWriter
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	Expect(n.cmd.Start()).To(Succeed())
	cmd := n.cmd
	DeferCleanup(func() { n.kill(cmd) })
	conn, err := grpc.NewClient("unix://"+n.sock(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(conn.Close)
	n.conn, n.client = conn, rpc.NewCNIBackendClient(conn)
	Eventually(func() error {
		if cmd.ProcessState != nil {
			return StopTrying("ipamd exited: " + n.logTail())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if r.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health %v", r.Status)
		}
		return nil
	}, 30*time.Second, 50*time.Millisecond).Should(Succeed(), func() string { return n.logTail() })
}

func (n *node) kill(cmd *exec.Cmd) {
	if cmd.Process == nil || cmd.ProcessState != nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_, _ = cmd.Process.Wait()
}

func (n *node) logTail() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "ipamd.log"))
	lines := strings.Split(string(b), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}

func (n *node) add(container string) (*rpc.AddNetworkReply, error) {
	return n.client.AddNetwork(context.Background(), &rpc.AddNetworkRequest{
		K8S_POD_NAME: "pod-" + container, K8S_POD_NAMESPACE: "default", K8S_POD_INFRA_CONTAINER_ID: container,
		Netns: "/var/run/netns/x", IfName: "eth0", NetworkName: "aws-cni", ContainerID: container})
}

// mustAdd adds a pod the way a kubelet does: a refused ADD (the pool is
// refilled asynchronously) is retried until a deadline; only then does it
// fail. Specs about the refusal itself call add.
func (n *node) mustAdd(container string) string {
	GinkgoHelper()
	var r *rpc.AddNetworkReply
	var err error
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		r, err = n.add(container)
		if (err == nil && r.Success) || time.Now().After(deadline) {
			break
		}
	}
	Expect(err).NotTo(HaveOccurred(), func() string { return n.logTail() })
	Expect(r.Success).To(BeTrue(), func() string { return "AddNetwork " + container + " failed for 20 s\n" + n.logTail() })
	return r.IPAllocationMetadata[0].IPv4Addr
}

func (n *node) del(container string) (*rpc.DelNetworkReply, error) {
	return n.client.DelNetwork(context.Background(), &rpc.DelNetworkRequest{
		K8S_POD_NAME: "pod-" + container, K8S_POD_NAMESPACE: "default", K8S_POD_INFRA_CONTAINER_ID: container,
		IfName: "eth0", NetworkName: "aws-cni", ContainerID: container, Reason: "PodDeleted"})
}

// metric reads one unlabelled awscni_* value from inside the node.
func (n *node) metric(name string) float64 {
	GinkgoHelper()
	resp, err := n.http.Get("http://127.0.0.1:61678/metrics")
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	Fail("no metric " + name)
	return 0
}

// sumMetric adds every series of a labelled metric whose labels contain sel.
func (n *node) sumMetric(name, sel string) float64 {
	GinkgoHelper()
	resp, err := n.http.Get("http://127.0.0.1:61678/metrics")
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	total := 0.0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name+"{") && strings.Contains(l, sel) {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			total += v
		}
	}
	return total
}

// enis returns the ENIs EC2 has attached to the node, with their address
// counts (primary included) and prefixes.
func (n *node) enis() map[string][2]int {
	out := map[string][2]int{}
	for _, e := range n.region.NetworkInterfaces() {
		if e.Attachment != nil && e.Attachment.InstanceID == n.inst.ID {
			out[e.ID] = [2]int{1 + len(e.SecondaryIPs), len(e.Prefixes)}
		}
	}
	return out
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func getJSON(n *node, url string, v any) {
	GinkgoHelper()
	resp, err := n.http.Get(url)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	Expect(resp.StatusCode).To(Equal(200))
	Expect(json.NewDecoder(resp.Body).Decode(v)).To(Succeed())
}

// runOnce runs ipamd with extra env and returns its stderr (it must exit).
func runOnce(n *node, extra ...string) string {
	GinkgoHelper()
	cmd := exec.Command("ip", "netns", "exec", filepath.Base(n.nsPath), ipamdBin)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "AWS_VPC_K8S_CNI_LOG_FILE=stderr"}, extra...)
	out, err := cmd.CombinedOutput()
	Expect(err).To(HaveOccurred(), "ipamd should have refused to start")
	return string(out)
}
