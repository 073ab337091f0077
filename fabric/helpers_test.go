package fabric_test

import (
	"context"
	"fmt"
	"github.com/vpclab/vpclab/fakeec2/imds"
	"github.com/vpclab/vpclab/fakeec2/model"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/cilium/ebpf"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netns"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/internal/testutil"
	"github.com/vpclab/vpclab/internal/vlan"
)

// uniqueName returns a fabric name no parallel spec shares.
func uniqueName() string { return testutil.Name("t", 7) }

// world is a region served over HTTP (for the SDK) with a fabric on it.
type world struct {
	name   string
	region *model.Region
	srv    *fakeec2.Server
	ec2    *ec2.Client
	fab    *fabric.Fabric
	vpc    string
	subnet string
}

type worldOpts struct {
	vlan     vlan.Datapath
	internet bool
	seed     uint64
}

func newWorld(o worldOpts) *world {
	GinkgoHelper()
	w := &world{name: uniqueName()}
	w.region = model.NewRegion(model.Options{Seed: o.seed})
	w.srv = fakeec2.NewServer(w.region, fakeec2.ServerOptions{})
	hs := httptest.NewServer(w.srv)
	DeferCleanup(hs.Close)
	DeferCleanup(w.srv.Close)
	w.ec2 = ec2.New(ec2.Options{Region: "us-west-2", BaseEndpoint: aws.String(hs.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "secret", ""),
		HTTPClient:  testutil.BufferedClient{}, Retryer: retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = 1 })})
	ctx := context.Background()
	v, err := w.ec2.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16")})
	Expect(err).NotTo(HaveOccurred())
	w.vpc = *v.Vpc.VpcId
	sn, err := w.ec2.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: &w.vpc, CidrBlock: aws.String("10.0.0.0/24")})
	Expect(err).NotTo(HaveOccurred())
	w.subnet = *sn.Subnet.SubnetId
	w.fab, err = fabric.New(fabric.Config{Name: w.name, Region: w.region, IMDS: w.srv.IMDS(), EC2: w.srv, Internet: o.internet, VLAN: o.vlan})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		Expect(w.fab.Close()).To(Succeed())
		Expect(netx.ListNamed(w.name + "-")).To(BeEmpty())
	})
	return w
}

func (w *world) sync() {
	GinkgoHelper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	Expect(w.fab.WaitSynced(ctx)).To(Succeed())
}

func (w *world) run(typ string) types.Instance {
	GinkgoHelper()
	out, err := w.ec2.RunInstances(context.Background(), &ec2.RunInstancesInput{InstanceType: types.InstanceType(typ), SubnetId: &w.subnet,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), ImageId: aws.String("ami-12345678")})
	Expect(err).NotTo(HaveOccurred())
	return out.Instances[0]
}

func (w *world) createENI(mod func(*ec2.CreateNetworkInterfaceInput)) types.NetworkInterface {
	GinkgoHelper()
	in := &ec2.CreateNetworkInterfaceInput{SubnetId: &w.subnet}
	if mod != nil {
		mod(in)
	}
	out, err := w.ec2.CreateNetworkInterface(context.Background(), in)
	Expect(err).NotTo(HaveOccurred())
	return *out.NetworkInterface
}

func (w *world) attach(eni, inst string, dev int32) string {
	GinkgoHelper()
	out, err := w.ec2.AttachNetworkInterface(context.Background(), &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: &eni, InstanceId: &inst, DeviceIndex: &dev})
	Expect(err).NotTo(HaveOccurred())
	return *out.AttachmentId
}

func (w *world) assign(eni string, n int32) []string {
	GinkgoHelper()
	out, err := w.ec2.AssignPrivateIpAddresses(context.Background(), &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: &eni, SecondaryPrivateIpAddressCount: &n})
	Expect(err).NotTo(HaveOccurred())
	var ips []string
	for _, a := range out.AssignedPrivateIpAddresses {
		ips = append(ips, *a.PrivateIpAddress)
	}
	return ips
}

func (w *world) nodeNS(inst string) string {
	GinkgoHelper()
	p, ok := w.fab.NodeNamespace(inst)
	Expect(ok).To(BeTrue(), "no namespace for %s", inst)
	return filepath.Base(p)
}

func (w *world) routerNS() string {
	GinkgoHelper()
	p, ok := w.fab.RouterNamespace(w.vpc)
	Expect(ok).To(BeTrue())
	return filepath.Base(p)
}

// sh runs a command inside a named namespace and returns its output.
var sh = testutil.InNetns

func mustSh(ns string, args ...string) string {
	GinkgoHelper()
	out, err := sh(ns, args...)
	Expect(err).NotTo(HaveOccurred(), "%v in %s: %s", args, ns, out)
	return out
}

func ping(ns, src, dst string) error {
	out, err := sh(ns, "ping", "-c", "1", "-W", "1", "-I", src, dst)
	if err != nil {
		return fmt.Errorf("ping %s -> %s in %s: %v: %s", src, dst, ns, err, out)
	}
	return nil
}

// icmpInEchos reads the namespace's count of echo requests received.
func icmpInEchos(ns string) int {
	GinkgoHelper()
	out := mustSh(ns, "cat", "/proc/net/snmp")
	var head []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "Icmp:" {
			continue
		}
		if head == nil {
			head = f
			continue
		}
		for i, k := range head {
			if k == "InEchos" {
				n, _ := strconv.Atoi(f[i])
				return n
			}
		}
	}
	Fail("no Icmp InEchos in /proc/net/snmp")
	return 0
}

func rxPackets(ns, link string) int {
	GinkgoHelper()
	out := mustSh(ns, "cat", "/sys/class/net/"+link+"/statistics/rx_packets")
	n, err := strconv.Atoi(strings.TrimSpace(out))
	Expect(err).NotTo(HaveOccurred())
	return n
}

// httpIn returns an HTTP client whose connections start inside ns.
func httpIn(path string, timeout time.Duration) *http.Client {
	GinkgoHelper()
	ns, err := netns.GetFromPath(path)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(ns.Close)
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: netx.DialContextIn(ns), DisableKeepAlives: true}}
}

// imdsGet does the IMDSv2 flow from inside a namespace.
func imdsGet(c *http.Client, path string) (string, error) {
	req, _ := http.NewRequest(http.MethodPut, "http://"+fabric.IMDSAddr+"/latest/api/token", nil)
	req.Header.Set(imds.TokenTTLHeader, "60")
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	tok, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("token: status %d", resp.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodGet, "http://"+fabric.IMDSAddr+"/latest/meta-data/"+path, nil)
	req.Header.Set(imds.TokenHeader, string(tok))
	resp, err = c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("GET %s: status %d", path, resp.StatusCode)
	}
	return string(b), nil
}

// labPrograms lists loaded BPF programs whose name starts with the tag.
func labPrograms(tag string) []string {
	GinkgoHelper()
	var out []string
	id := ebpf.ProgramID(0)
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return out
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		info, err := p.Info()
		p.Close()
		if err == nil && strings.HasPrefix(info.Name, tag+"_") {
			out = append(out, info.Name)
		}
	}
}

// kernelHasVLAN probes with iproute2, independently of package vlan.
func kernelHasVLAN() bool {
	name := uniqueName() + "-probe"
	if exec.Command("ip", "netns", "add", name).Run() != nil {
		return false
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	if _, err := sh(name, "ip", "link", "add", "p0", "type", "veth", "peer", "name", "p1"); err != nil {
		return false
	}
	_, err := sh(name, "ip", "link", "add", "link", "p0", "name", "p0.3", "type", "vlan", "id", "3")
	return err == nil
}
