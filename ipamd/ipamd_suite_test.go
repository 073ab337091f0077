package ipamd_test

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/labtest"
	"github.com/vpclab/vpclab/internal/vethname"
	"github.com/vpclab/vpclab/internal/vlan"
	"github.com/vpclab/vpclab/ipamd/rpc"
)

func TestIPAMD(t *testing.T) { labtest.Suite(t, "ipamd", true) }

var bins = labtest.Binaries("ipamd")

// node is one instance of a world with an ipamd on it.
type node struct {
	*labtest.World
	inst   model.Instance
	nsPath string
	dir    string
	env    map[string]string
	ipamd  *labtest.Ipamd
	client rpc.CNIBackendClient
	http   *http.Client
}

type nodeOpts struct {
	typ        string
	subnetCIDR string
	env        map[string]string
}

func newNode(o nodeOpts) *node {
	GinkgoHelper()
	n := &node{World: labtest.NewWorld(GinkgoT(), "i", labtest.WorldOptions{Seed: 7, SubnetCIDR: o.subnetCIDR, VLAN: vlan.BPF{}}), dir: GinkgoT().TempDir(), env: o.env}
	n.inst = n.Launch(GinkgoT(), cmp.Or(o.typ, "m5.large"))
	var nodeNS ns.NetNS
	n.nsPath, _, nodeNS = n.Namespace(GinkgoT(), n.inst)
	n.http = labtest.HTTPIn(nodeNS)
	return n
}

// start runs ipamd inside the node namespace and waits until it serves.
func (n *node) start() {
	GinkgoHelper()
	env := []string{"AWS_VPC_K8S_CNI_LOGLEVEL=debug", "VPCLAB_POOL_INTERVAL=100ms", "VPCLAB_DECREASE_INTERVAL=200ms", "VPCLAB_MIN_ENI_LIFETIME=0s", "VPCLAB_IP_COOLDOWN=0s"}
	for k, v := range n.env {
		env = append(env, k+"="+v)
	}
	n.ipamd = labtest.StartIpamd(GinkgoT(), filepath.Base(n.nsPath), filepath.Join(*bins, "ipamd"), n.dir, env...)
	n.client = rpc.NewCNIBackendClient(n.ipamd.Conn)
}

func (n *node) logTail() string { return n.ipamd.Log() }

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

// podVeth creates the host side of a pod's veth in the node namespace,
// named as aws-cni names it (the pair's other end stays beside it): what
// tells ipamd, when it restores its checkpoint, that the pod still exists.
func (n *node) podVeth(container string) {
	GinkgoHelper()
	host := vethname.Host("eni", "default", "pod-"+container)
	out, err := exec.Command("ip", "-n", filepath.Base(n.nsPath), "link", "add", host, "type", "veth", "peer", "name", "p"+host[3:]).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))
}

// podRules lists the node's per-pod rules (priorities 512 and 1536).
func (n *node) podRules() string {
	GinkgoHelper()
	out, err := exec.Command("ip", "-n", filepath.Base(n.nsPath), "rule").CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "512:") || strings.HasPrefix(l, "1536:") {
			keep = append(keep, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(keep, "\n")
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
	for _, e := range n.Region.NetworkInterfaces() {
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
	cmd := exec.Command("ip", "netns", "exec", filepath.Base(n.nsPath), filepath.Join(*bins, "ipamd"))
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "AWS_VPC_K8S_CNI_LOG_FILE=stderr"}, extra...)
	out, err := cmd.CombinedOutput()
	Expect(err).To(HaveOccurred(), "ipamd should have refused to start")
	return string(out)
}
