package plugin_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	cniversion "github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/labtest"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/internal/vlan"
	"github.com/vpclab/vpclab/plugin"
)

func TestPlugin(t *testing.T) { labtest.Suite(t, "plugin", true) }

var bins = labtest.Binaries("ipamd", "aws-cni", "aws-vpc-cni", "egress-cni", labtest.RefPlugins)

func uniqueName() string { return labtest.Name("p", 7) }

// cluster is a world with its internet host, for nodes and plain hosts.
type cluster struct{ *labtest.World }

func newCluster() *cluster {
	GinkgoHelper()
	return &cluster{labtest.NewWorld(GinkgoT(), "p", labtest.WorldOptions{Seed: 13, SubnetCIDR: "10.0.0.0/22", Internet: true, VLAN: vlan.BPF{}})}
}

// host launches an instance with no CNI (a plain VPC host).
func (c *cluster) host(typ string) model.Instance { return c.Launch(GinkgoT(), typ) }

// node is an instance running ipamd with aws-cni installed.
type node struct {
	c       *cluster
	inst    model.Instance
	ns      ns.NetNS
	nsName  string
	dir     string
	cni     *libcni.CNIConfig
	list    *libcni.NetworkConfigList
	confDir string
	// podSGMode is the conflist's podSGEnforcingMode (strict when empty).
	podSGMode string
}

func (c *cluster) node(env ...string) *node {
	GinkgoHelper()
	return c.nodeOfType("m5.large", env...)
}

func (c *cluster) nodeOfType(typ string, env ...string) *node {
	GinkgoHelper()
	n := &node{c: c, inst: c.host(typ), dir: GinkgoT().TempDir()}
	_, n.nsName, n.ns = c.Namespace(GinkgoT(), n.inst)
	p := labtest.StartIpamd(GinkgoT(), n.nsName, filepath.Join(*bins, "ipamd"), n.dir, append([]string{"VPCLAB_POOL_INTERVAL=100ms", "VPCLAB_IP_COOLDOWN=0s"}, env...)...)
	n.install(p.Socket())
	return n
}

// install puts aws-cni and its conflist in the node's directories, as
// aws-node's entrypoint does.
func (n *node) install(socket string) {
	GinkgoHelper()
	n.confDir = filepath.Join(n.dir, "net.d")
	mode := n.podSGMode
	if mode == "" {
		mode = "strict"
	}
	o := plugin.InstallOptions{Plugin: filepath.Join(*bins, "aws-cni"), BinDir: filepath.Join(n.dir, "bin"), ConfDir: n.confDir,
		RefPluginsDir: filepath.Join(*bins, labtest.RefPlugins), Socket: socket, Checkpoint: filepath.Join(n.dir, "ipam.json"), Wait: 30 * time.Second,
		CNIVersion: "1.0.0", VethPrefix: "eni", MTU: 9001, PodSGMode: mode, LogFile: filepath.Join(n.dir, "plugin.log"), LogLevel: "debug"}
	Expect(plugin.Install(context.Background(), o)).To(Succeed(), func() string { b, _ := os.ReadFile(filepath.Join(n.dir, "ipamd.log")); return string(b) })
	var err error
	n.list, err = libcni.ConfListFromFile(filepath.Join(n.confDir, plugin.ConflistName))
	Expect(err).NotTo(HaveOccurred())
	// An explicit exec: libcni's lazy default is set without a lock, a
	// data race under concurrent ADDs.
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{o.BinDir}, filepath.Join(n.dir, "cache"),
		&invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: GinkgoWriter}, PluginDecoder: cniversion.PluginDecoder{}})
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
	nsName := n.c.Name + "-pod-" + name
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
func (n *node) inNode(f func() error) error {
	return n.ns.Do(func(ns.NetNS) error { return f() })
}

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
var sh = labtest.InNetns

func mustSh(ns string, args ...string) string {
	GinkgoHelper()
	out, err := sh(ns, args...)
	Expect(err).NotTo(HaveOccurred(), "%v in %s: %s", args, ns, out)
	return out
}

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
	routes, _ := sh(n.nsName, "ip", "-4", "route", "show", "table", "all")
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

// fakeNode is a node namespace whose aws-cni talks to a fake ipamd: no
// region, no fabric (the plugin's datapath alone).
func fakeNode(device int32, addrs ...string) (*node, *labtest.FakeIPAM) {
	GinkgoHelper()
	n := &node{dir: GinkgoT().TempDir(), nsName: uniqueName() + "-node"}
	Expect(exec.Command("ip", "netns", "add", n.nsName).Run()).To(Succeed())
	DeferCleanup(func() { _ = netx.DeleteNamed(n.nsName) })
	_, err := sh(n.nsName, "ip", "link", "set", "lo", "up")
	Expect(err).NotTo(HaveOccurred())
	n.ns, err = ns.GetNS(netx.Path(n.nsName))
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(n.ns.Close)
	n.c = &cluster{&labtest.World{Name: n.nsName}}
	f := labtest.ServeFakeIPAM(GinkgoT(), filepath.Join(n.dir, "ipamd.sock"), addrs...)
	f.Device = device
	n.install(filepath.Join(n.dir, "ipamd.sock"))
	return n, f
}
