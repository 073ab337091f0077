package fabric_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/cilium/ebpf"
	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/fakeec2/imds"
	"github.com/vpclab/vpclab/internal/labtest"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/internal/vlan"
)

// uniqueName returns a fabric name no parallel spec shares.
func uniqueName() string { return labtest.Name("t", 7) }

// world is the harness's world with the fabric specs' own helpers.
type world struct{ *labtest.World }

type worldOpts struct {
	vlan     vlan.Datapath
	internet bool
	seed     uint64
}

func newWorld(o worldOpts) *world {
	GinkgoHelper()
	return &world{labtest.NewWorld(GinkgoT(), "t", labtest.WorldOptions{Seed: o.seed, Internet: o.internet, VLAN: o.vlan})}
}

func (w *world) sync() { w.Sync(GinkgoT()) }

func (w *world) run(typ string) types.Instance {
	GinkgoHelper()
	out, err := w.EC2.RunInstances(context.Background(), &ec2.RunInstancesInput{InstanceType: types.InstanceType(typ), SubnetId: &w.Subnet,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), ImageId: aws.String("ami-12345678")})
	Expect(err).NotTo(HaveOccurred())
	return out.Instances[0]
}

func (w *world) createENI(mod func(*ec2.CreateNetworkInterfaceInput)) types.NetworkInterface {
	GinkgoHelper()
	in := &ec2.CreateNetworkInterfaceInput{SubnetId: &w.Subnet}
	if mod != nil {
		mod(in)
	}
	out, err := w.EC2.CreateNetworkInterface(context.Background(), in)
	Expect(err).NotTo(HaveOccurred())
	return *out.NetworkInterface
}

func (w *world) attach(eni, inst string, dev int32) string {
	GinkgoHelper()
	out, err := w.EC2.AttachNetworkInterface(context.Background(), &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: &eni, InstanceId: &inst, DeviceIndex: &dev})
	Expect(err).NotTo(HaveOccurred())
	return *out.AttachmentId
}

func (w *world) assign(eni string, n int32) []string {
	GinkgoHelper()
	out, err := w.EC2.AssignPrivateIpAddresses(context.Background(), &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: &eni, SecondaryPrivateIpAddressCount: &n})
	Expect(err).NotTo(HaveOccurred())
	var ips []string
	for _, a := range out.AssignedPrivateIpAddresses {
		ips = append(ips, *a.PrivateIpAddress)
	}
	return ips
}

func (w *world) nodeNS(inst string) string {
	GinkgoHelper()
	p, ok := w.Fabric.NodeNamespace(inst)
	Expect(ok).To(BeTrue(), "no namespace for %s", inst)
	return filepath.Base(p)
}

func (w *world) routerNS() string {
	GinkgoHelper()
	p, ok := w.Fabric.RouterNamespace(w.VPC)
	Expect(ok).To(BeTrue())
	return filepath.Base(p)
}

// sh runs a command inside a named namespace and returns its output.
var sh = labtest.InNetns

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
	n, err := ns.GetNS(path)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(n.Close)
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: netx.DialContextIn(n), DisableKeepAlives: true}}
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

// defaultGroup is the world VPC's default security group.
func (w *world) defaultGroup() string {
	GinkgoHelper()
	out, err := w.EC2.DescribeSecurityGroups(context.Background(), &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{
		{Name: aws.String("vpc-id"), Values: []string{w.VPC}}, {Name: aws.String("group-name"), Values: []string{"default"}}}})
	Expect(err).NotTo(HaveOccurred())
	Expect(out.SecurityGroups).To(HaveLen(1))
	return *out.SecurityGroups[0].GroupId
}

// authorize adds one rule to a group (peer: a CIDR, or a group id) and
// waits for the fabric; it returns the rule's id.
func (w *world) authorize(group string, egress bool, proto string, from, to int32, peer string) string {
	GinkgoHelper()
	perm := types.IpPermission{IpProtocol: &proto, FromPort: &from, ToPort: &to}
	if strings.HasPrefix(peer, "sg-") {
		perm.UserIdGroupPairs = []types.UserIdGroupPair{{GroupId: &peer}}
	} else {
		perm.IpRanges = []types.IpRange{{CidrIp: &peer}}
	}
	var rules []types.SecurityGroupRule
	if egress {
		out, err := w.EC2.AuthorizeSecurityGroupEgress(context.Background(), &ec2.AuthorizeSecurityGroupEgressInput{GroupId: &group, IpPermissions: []types.IpPermission{perm}})
		Expect(err).NotTo(HaveOccurred())
		rules = out.SecurityGroupRules
	} else {
		out, err := w.EC2.AuthorizeSecurityGroupIngress(context.Background(), &ec2.AuthorizeSecurityGroupIngressInput{GroupId: &group, IpPermissions: []types.IpPermission{perm}})
		Expect(err).NotTo(HaveOccurred())
		rules = out.SecurityGroupRules
	}
	Expect(rules).To(HaveLen(1))
	w.sync()
	return *rules[0].SecurityGroupRuleId
}

// branchPath builds the node side of a branch ENI's path as the CNI
// plugin does: a VLAN link on the trunk's link with the branch's MAC and
// address, and a route table 100+vid for traffic from it.
func branchPath(w *world, nodeNS, trunkLink, mac, ip string, vid int) {
	GinkgoHelper()
	h, err := netx.Handle(mustNS(nodeNS))
	Expect(err).NotTo(HaveOccurred())
	defer h.Close()
	parent, err := h.LinkByName(trunkLink)
	Expect(err).NotTo(HaveOccurred())
	hw, _ := net.ParseMAC(mac)
	d, err := vlan.New(w.Fabric.Datapath())
	Expect(err).NotTo(HaveOccurred())
	name := fmt.Sprintf("vlan.eth.%d", vid)
	_, err = d.Add(h, parent, vlan.Link{Name: name, VID: vid, MAC: hw, MTU: fabric.MTU, Tag: w.Name})
	Expect(err).NotTo(HaveOccurred())
	table := strconv.Itoa(100 + vid)
	mustSh(nodeNS, "ip", "addr", "add", ip+"/32", "dev", name)
	mustSh(nodeNS, "ip", "route", "add", "10.0.0.1", "dev", name, "table", table)
	mustSh(nodeNS, "ip", "route", "add", "default", "via", "10.0.0.1", "dev", name, "table", table)
	mustSh(nodeNS, "ip", "rule", "add", "from", ip, "lookup", table)
}
