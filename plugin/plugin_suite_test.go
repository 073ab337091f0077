package plugin_test

import (
	"context"
	"fmt"
	"github.com/vpclab/vpclab/fakeec2/model"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	cniversion "github.com/containernetworking/cni/pkg/version"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netns"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/internal/testutil"
	"github.com/vpclab/vpclab/internal/vlan"
	"github.com/vpclab/vpclab/plugin"
)

func TestPlugin(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the plugin tests need root (network namespaces)")
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "plugin")
}

var binDir string

var _ = SynchronizedBeforeSuite(func() []byte {
	dir, err := testutil.Build("ipamd", "aws-cni", "aws-vpc-cni")
	Expect(err).NotTo(HaveOccurred())
	return []byte(dir)
}, func(b []byte) { binDir = string(b) })

func uniqueName() string { return testutil.Name("p", 7) }

// cluster is a region with a fabric (and its internet host).
type cluster struct {
	name   string
	region *model.Region
	srv    *fakeec2.Server
	fab    *fabric.Fabric
	vpc    string
	subnet string
}

func newCluster() *cluster {
	GinkgoHelper()
	c := &cluster{name: uniqueName()}
	c.region = model.NewRegion(model.Options{Seed: 13})
	c.srv = fakeec2.NewServer(c.region, fakeec2.ServerOptions{})
	DeferCleanup(c.srv.Close)
	v, err := c.region.CreateVPC(model.CreateVPCInput{CIDR: netip.MustParsePrefix("10.0.0.0/16")})
	Expect(err).NotTo(HaveOccurred())
	c.vpc = v.ID
	s, err := c.region.CreateSubnet(model.CreateSubnetInput{VPCID: v.ID, CIDR: netip.MustParsePrefix("10.0.0.0/22")})
	Expect(err).NotTo(HaveOccurred())
	c.subnet = s.ID
	c.fab, err = fabric.New(fabric.Config{Name: c.name, Region: c.region, IMDS: c.srv.IMDS(), EC2: c.srv, VLAN: vlan.BPF{}, Internet: true})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(c.fab.Close()).To(Succeed()) })
	return c
}

func (c *cluster) sync() {
	GinkgoHelper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	Expect(c.fab.WaitSynced(ctx)).To(Succeed())
}

// host launches an instance with no CNI (a plain VPC host).
func (c *cluster) host(typ string) model.Instance {
	GinkgoHelper()
	insts, err := c.region.RunInstances(model.RunInstancesInput{InstanceType: typ, SubnetID: c.subnet})
	Expect(err).NotTo(HaveOccurred())
	c.sync()
	return insts[0]
}

// node is an instance running ipamd with aws-cni installed.
type node struct {
	c       *cluster
	inst    model.Instance
	ns      netns.NsHandle
	nsName  string
	dir     string
	cni     *libcni.CNIConfig
	list    *libcni.NetworkConfigList
	confDir string
}

func (c *cluster) node(env ...string) *node {
	GinkgoHelper()
	return c.nodeOfType("m5.large", env...)
}

func (c *cluster) nodeOfType(typ string, env ...string) *node {
	GinkgoHelper()
	n := &node{c: c, inst: c.host(typ), dir: GinkgoT().TempDir()}
	p, ok := c.fab.NodeNamespace(n.inst.ID)
	Expect(ok).To(BeTrue())
	n.nsName = filepath.Base(p)
	var err error
	n.ns, err = netns.GetFromPath(p)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(n.ns.Close)
	sock := filepath.Join(n.dir, "ipamd.sock")
	cmd := exec.Command("ip", "netns", "exec", n.nsName, filepath.Join(binDir, "ipamd"))
	cmd.Env = testutil.IpamdEnv(n.dir, append([]string{"VPCLAB_POOL_INTERVAL=100ms", "VPCLAB_IP_COOLDOWN=0s"}, env...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	Expect(cmd.Start()).To(Succeed())
	DeferCleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	n.confDir = filepath.Join(n.dir, "net.d")
	o := plugin.InstallOptions{Plugin: filepath.Join(binDir, "aws-cni"), BinDir: filepath.Join(n.dir, "bin"), ConfDir: n.confDir,
		RefPluginsDir: "/usr/lib/cni", Socket: sock, Checkpoint: filepath.Join(n.dir, "ipam.json"), Wait: 30 * time.Second,
		CNIVersion: "1.0.0", VethPrefix: "eni", MTU: 9001, PodSGMode: "strict", LogFile: filepath.Join(n.dir, "plugin.log"), LogLevel: "debug"}
	Expect(plugin.Install(context.Background(), o)).To(Succeed(), func() string { b, _ := os.ReadFile(filepath.Join(n.dir, "ipamd.log")); return string(b) })
	n.list, err = libcni.ConfListFromFile(filepath.Join(n.confDir, plugin.ConflistName))
	Expect(err).NotTo(HaveOccurred())
	// An explicit exec: libcni's lazy default is set without a lock, a
	// data race under concurrent ADDs.
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{o.BinDir}, filepath.Join(n.dir, "cache"),
		&invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: GinkgoWriter}, PluginDecoder: cniversion.PluginDecoder{}})
	return n
}

// pod is a container network namespace on a node.
type pod struct {
	n    *node
	name string
	path string
	ip   string
	cid  string
}

func (n *node) newPod(name string) *pod {
	GinkgoHelper()
	nsName := n.c.name + "-pod-" + name
	Expect(exec.Command("ip", "netns", "add", nsName).Run()).To(Succeed())
	DeferCleanup(func() { _ = netx.DeleteNamed(nsName) })
	return &pod{n: n, name: name, path: netx.Path(nsName), cid: "cid-" + name}
}

func (p *pod) rt() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: p.cid, NetNS: p.path, IfName: "eth0", Args: [][2]string{
		{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", p.name}, {"K8S_POD_INFRA_CONTAINER_ID", p.cid}}}
}

// inNode runs f on a thread inside the node's namespace, as a runtime on
// the node would run plugins.
func (n *node) inNode(f func() error) error { return netx.Do(n.ns, f) }

func (p *pod) add() (types.Result, error) {
	var res types.Result
	err := p.n.inNode(func() (err error) {
		res, err = p.n.cni.AddNetworkList(context.Background(), p.n.list, p.rt())
		return err
	})
	return res, err
}

func (p *pod) mustAdd() {
	GinkgoHelper()
	res, err := p.add()
	Expect(err).NotTo(HaveOccurred())
	r, err := current.NewResultFromResult(res)
	Expect(err).NotTo(HaveOccurred())
	Expect(r.IPs).NotTo(BeEmpty())
	p.ip = r.IPs[0].Address.IP.String()
	Expect(r.IPs[0].Address.String()).To(Equal(p.ip + "/32"))
}

func (p *pod) del() error {
	return p.n.inNode(func() error { return p.n.cni.DelNetworkList(context.Background(), p.n.list, p.rt()) })
}

func (p *pod) check() error {
	return p.n.inNode(func() error { return p.n.cni.CheckNetworkList(context.Background(), p.n.list, p.rt()) })
}

// sh runs a command inside a named namespace and returns its output.
var sh = testutil.InNetns

func (p *pod) ping(dst string) error {
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(p.path), "ping", "-c", "1", "-W", "2", dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from pod %s (%s): %v: %s", dst, p.name, p.ip, err, out)
	}
	return nil
}

// hostState is a fingerprint of what the plugin creates on the node: host
// veths (prefix eni), the per-pod rules (priorities 512 and 1536) and the
// routes through host veths.
func (n *node) hostState() string {
	GinkgoHelper()
	links, _ := sh(n.nsName, "ip", "-o", "link", "show")
	rules, _ := sh(n.nsName, "ip", "rule")
	routes, _ := sh(n.nsName, "ip", "route", "show", "table", "all")
	var out []string
	for _, l := range strings.Split(links, "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], "eni") {
			out = append(out, "link "+strings.SplitN(f[1], "@", 2)[0])
		}
	}
	for _, l := range strings.Split(rules, "\n") {
		if strings.HasPrefix(l, "512:") || strings.HasPrefix(l, "1536:") {
			out = append(out, "rule "+l)
		}
	}
	for _, l := range strings.Split(routes, "\n") {
		if strings.Contains(l, " dev eni") {
			out = append(out, "route "+l)
		}
	}
	return strings.Join(out, "\n")
}
