package plugin_test

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/labtest"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/lab"
	"github.com/vpclab/vpclab/plugin"
)

// trunkNode is an m5.large with a trunk ENI on eth1 whose aws-cni talks to
// a fake ipamd answering chosen pods with branch ENIs.
type trunkNode struct {
	*node
	f       *labtest.FakeIPAM
	trunk   model.NetworkInterface
	trunkIx int32
	podSG   string
	peer    model.Instance
}

func newTrunkNode(mode string) *trunkNode {
	GinkgoHelper()
	c := newCluster()
	t := &trunkNode{node: &node{c: c, inst: c.host("m5.large"), dir: GinkgoT().TempDir()}, peer: c.host("t3.small")}
	_, t.nsName, t.ns = c.Namespace(GinkgoT(), t.inst)
	var err error
	t.trunk, err = c.Region.CreateNetworkInterface(model.CreateNetworkInterfaceInput{SubnetID: c.Subnet, InterfaceType: "trunk"})
	Expect(err).NotTo(HaveOccurred())
	_, err = c.Region.AttachNetworkInterface(model.AttachNetworkInterfaceInput{ENIID: t.trunk.ID, InstanceID: t.inst.ID, DeviceIndex: 1})
	Expect(err).NotTo(HaveOccurred())
	g, err := c.Region.CreateSecurityGroup(model.CreateSecurityGroupInput{VPCID: c.VPC, Name: "pod", Description: "branch pods"})
	Expect(err).NotTo(HaveOccurred())
	t.podSG = g.ID
	_, err = c.Region.AuthorizeRules(g.ID, false, []model.SGRule{{Protocol: "icmp", FromPort: -1, ToPort: -1, CIDR: netip.MustParsePrefix("10.0.0.0/16")}})
	Expect(err).NotTo(HaveOccurred())
	// The VPC's other hosts (default group) admit the branch pods' group.
	for _, v := range c.Region.VPCs() {
		if v.ID == c.VPC {
			_, err = c.Region.AuthorizeRules(v.DefaultGroupID, false, []model.SGRule{{Protocol: "-1", FromPort: -1, ToPort: -1, RefGroupID: g.ID}})
			Expect(err).NotTo(HaveOccurred())
		}
	}
	c.Sync(GinkgoT())
	h, err := netx.Handle(t.ns)
	Expect(err).NotTo(HaveOccurred())
	defer h.Close()
	l, err := h.LinkByName("eth1")
	Expect(err).NotTo(HaveOccurred())
	t.trunkIx = int32(l.Attrs().Index)
	t.f = labtest.ServeFakeIPAM(GinkgoT(), filepath.Join(t.dir, "ipamd.sock"))
	t.installMode(mode)
	return t
}

func (t *trunkNode) installMode(mode string) {
	GinkgoHelper()
	t.podSGMode = mode
	t.install(filepath.Join(t.dir, "ipamd.sock"))
}

// branchPod creates a branch ENI in the pod group, associates it with the
// trunk on vid, and tells the fake ipamd to answer the pod with it.
func (t *trunkNode) branchPod(name string, vid int) (*pod, model.NetworkInterface) {
	GinkgoHelper()
	b, err := t.c.Region.CreateNetworkInterface(model.CreateNetworkInterfaceInput{SubnetID: t.c.Subnet, InterfaceType: "branch", SecurityGroups: []string{t.podSG}})
	Expect(err).NotTo(HaveOccurred())
	_, err = t.c.Region.AssociateTrunkInterface(model.AssociateTrunkInput{BranchID: b.ID, TrunkID: t.trunk.ID, VlanID: vid})
	Expect(err).NotTo(HaveOccurred())
	t.c.Sync(GinkgoT())
	return t.answer(name, b, vid), b
}

// answer makes the fake ipamd answer the named pod with branch b on vid.
func (t *trunkNode) answer(name string, b model.NetworkInterface, vid int) *pod {
	GinkgoHelper()
	t.f.SetBranch(name, labtest.BranchPod{IP: b.PrivateIP.String(), VlanID: int32(vid), MAC: b.MAC, SubnetGW: "10.0.0.1", ParentIfIndex: t.trunkIx})
	return t.newPod(name)
}

// nsPing pings dst once from a namespace.
func nsPing(nsName, dst string) error {
	out, err := sh(nsName, "ping", "-c", "1", "-W", "1", dst)
	if err != nil {
		return fmt.Errorf("ping %s from %s: %w: %s", dst, nsName, err, out)
	}
	return nil
}

// onTrunk captures the frames on the router's side of the trunk while
// action runs.
func (t *trunkNode) onTrunk(action func()) []string {
	GinkgoHelper()
	link, ok := t.c.Fabric.RouterLinkName(t.trunk.ID)
	Expect(ok).To(BeTrue())
	router, _ := t.c.Fabric.RouterNamespace(t.c.VPC)
	cmd := exec.Command("ip", "netns", "exec", filepath.Base(router), "tcpdump", "-e", "-n", "-l", "-i", link)
	stdout, err := cmd.StdoutPipe()
	Expect(err).NotTo(HaveOccurred())
	stderr, err := cmd.StderrPipe()
	Expect(err).NotTo(HaveOccurred())
	Expect(cmd.Start()).To(Succeed())
	ready := bufio.NewScanner(stderr)
	for ready.Scan() && !strings.Contains(ready.Text(), "listening on") {
	}
	lines := make(chan []string, 1)
	go func() {
		var got []string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			got = append(got, sc.Text())
		}
		lines <- got
	}()
	action()
	time.Sleep(300 * time.Millisecond)
	_ = cmd.Process.Signal(os.Interrupt)
	got := <-lines
	_ = cmd.Wait()
	return got
}

var _ = Describe("branch ENI pods (security groups for pods)", Label("pod-eni", "security-groups"), func() {
	It("wires a pod to its VLAN on the trunk; its traffic meets the branch ENI's groups, not the node's; DEL works from prevResult alone", func() {
		t := newTrunkNode("strict")
		p, b := t.branchPod("sgp", 5)
		p.mustAdd()
		Expect(p.ip).To(Equal(b.PrivateIP.String()))
		veth := plugin.HostVethName("vlan", "default", "sgp")
		Expect(mustSh(t.nsName, "ip", "-d", "link", "show", "vlan.eth.5")).To(ContainSubstring(b.MAC))
		Expect(mustSh(t.nsName, "ip", "rule")).To(And(ContainSubstring("10:\tfrom all iif vlan.eth.5 lookup 105"), ContainSubstring("10:\tfrom all iif "+veth+" lookup 105")))
		Expect(mustSh(t.nsName, "ip", "route", "show", "table", "105")).To(And(
			ContainSubstring("default via 10.0.0.1 dev vlan.eth.5"), ContainSubstring(p.ip+" dev "+veth+" scope link")))

		Expect(p.check()).To(Succeed())
		mustSh(t.nsName, "ip", "rule", "del", "priority", "10", "iif", "vlan.eth.5")
		Expect(p.check()).To(MatchError(ContainSubstring("rule 'iif vlan.eth.5 lookup 105'")))
		mustSh(t.nsName, "ip", "rule", "add", "priority", "10", "iif", "vlan.eth.5", "lookup", "105")

		// Out through the VPC on VLAN 5: the trunk carries the echo tagged.
		frames := t.onTrunk(func() { Expect(p.ping(t.peer.PrivateIP.String())).To(Succeed()) })
		Expect(frames).To(ContainElement(And(ContainSubstring("vlan 5,"), ContainSubstring(p.ip+" > "+t.peer.PrivateIP.String()+": ICMP echo request"))), "%s", strings.Join(frames, "\n"))

		// The branch's group admits ICMP from the VPC; revoking that drops
		// the peer's pings to the pod while the node (default group) still
		// answers the peer.
		peerNS := t.c.Name + "-" + t.peer.ID
		Expect(nsPing(peerNS, p.ip)).To(Succeed())
		rules := t.c.Region.SecurityGroupRules()
		for _, r := range rules {
			if r.GroupID == t.podSG && !r.Egress {
				_, err := t.c.Region.RevokeRules(t.podSG, false, nil, []string{r.ID})
				Expect(err).NotTo(HaveOccurred())
			}
		}
		t.c.Sync(GinkgoT())
		Expect(nsPing(peerNS, p.ip)).NotTo(Succeed(), "the branch's group no longer admits ICMP")
		Expect(nsPing(peerNS, t.inst.PrivateIP.String())).To(Succeed(), "the node's group does")

		Expect(p.del()).To(Succeed())
		Expect(t.f.Dels).To(Equal(0), "a branch pod's DEL never asks ipamd")
		Expect(mustSh(t.nsName, "ip", "-o", "link", "show")).NotTo(ContainSubstring("vlan.eth.5"))
		Expect(mustSh(t.nsName, "ip", "rule")).NotTo(ContainSubstring("lookup 105"))
		Expect(mustSh(t.nsName, "tc", "filter", "show", "dev", "eth1", "ingress")).NotTo(ContainSubstring("pref 5 "), "the VLAN's filter on the trunk is gone")
		Expect(p.del()).To(Succeed(), "a second DEL is fine")
	})

	It("strict mode sends pod-to-pod traffic on one node through the VPC; standard mode keeps it on the node", func() {
		t := newTrunkNode("strict")
		p5, b5 := t.branchPod("s5", 5)
		p6, b6 := t.branchPod("s6", 6)
		p5.mustAdd()
		p6.mustAdd()
		frames := t.onTrunk(func() { Expect(p5.ping(p6.ip)).To(Succeed()) })
		Expect(frames).To(ContainElement(And(ContainSubstring("vlan 6,"), ContainSubstring(p5.ip+" > "+p6.ip+": ICMP echo request"))),
			"the router delivered the echo to VLAN 6:\n%s", strings.Join(frames, "\n"))
		Expect(p5.del()).To(Succeed())
		Expect(p6.del()).To(Succeed())

		t.installMode("standard")
		q5, q6 := t.answer("t5", b5, 5), t.answer("t6", b6, 6)
		q5.mustAdd()
		q6.mustAdd()
		Expect(q5.check()).To(Succeed())
		Expect(mustSh(t.nsName, "ip", "link", "show")).To(ContainSubstring(plugin.HostVethName("eni", "default", "t5")), "standard mode uses the normal prefix")
		Expect(mustSh(t.nsName, "ip", "rule")).To(And(ContainSubstring("1536:\tfrom "+q5.ip+" lookup 105"), Not(ContainSubstring("10:\t"))))
		frames = t.onTrunk(func() { Expect(q5.ping(q6.ip)).To(Succeed()) })
		Expect(frames).NotTo(ContainElement(ContainSubstring(q5.ip+" > "+q6.ip)), "node-local, not through the VPC:\n%s", strings.Join(frames, "\n"))
		Expect(q5.ping(t.peer.PrivateIP.String())).To(Succeed())
		Expect(q5.del()).To(Succeed())
		Expect(q6.del()).To(Succeed())
		Expect(mustSh(t.nsName, "ip", "rule")).NotTo(Or(ContainSubstring("lookup 105"), ContainSubstring("lookup 106")))
	})

	It("refuses VLAN ids out of range or mapping to a reserved table, releasing the address and leaving nothing", func() {
		t := newTrunkNode("strict")
		for i, vid := range []int32{4095, 153, -3} {
			name := fmt.Sprintf("bad%d", i)
			t.f.SetBranch(name, labtest.BranchPod{IP: "10.0.3.3", VlanID: vid, MAC: "02:00:00:00:00:09", SubnetGW: "10.0.0.1", ParentIfIndex: t.trunkIx})
			before := t.f.Dels
			_, err := t.newPod(name).add()
			Expect(err).To(MatchError(ContainSubstring("VLAN id")), "vid %d", vid)
			Expect(t.f.Dels).To(Equal(before+1), "the address is released (SetupNSFailed)")
		}
		Expect(mustSh(t.nsName, "ip", "-o", "link", "show")).NotTo(Or(ContainSubstring("vlan.eth."), ContainSubstring(" vlan")))
	})
})

var _ = Describe("branch ENI pods and the real VPC CNI's plugin", Label("pod-eni", "upstream"), func() {
	It("upstream aws-cni's DEL tears down a branch pod vpclab's ADD made, from the prevResult alone (the dummy interface is named as upstream names it)", func() {
		b, err := lab.BuildCNI(context.Background(), lab.CNI{Kind: lab.CNIUpstream, Version: lab.UpstreamVersion}, GinkgoWriter.Printf)
		Expect(err).NotTo(HaveOccurred())
		t := newTrunkNode("strict")
		p, _ := t.branchPod("up", 5)
		p.mustAdd()
		Expect(mustSh(t.nsName, "ip", "-o", "link", "show")).To(ContainSubstring("vlan.eth.5"))

		// The same conflist and result cache, upstream's aws-cni on the path.
		upDir := filepath.Join(t.dir, "upstream-bin")
		Expect(os.MkdirAll(upDir, 0o755)).To(Succeed())
		for _, f := range []string{filepath.Join(b.AppDir, "aws-cni"), filepath.Join(t.dir, "bin", "portmap")} {
			data, err := os.ReadFile(f)
			Expect(err).NotTo(HaveOccurred())
			Expect(os.WriteFile(filepath.Join(upDir, filepath.Base(f)), data, 0o755)).To(Succeed())
		}
		up := libcni.NewCNIConfigWithCacheDir([]string{upDir}, filepath.Join(t.dir, "cache"), nil)
		Expect(t.inNode(func() error { return up.DelNetworkList(context.Background(), t.list, p.rt()) })).To(Succeed())
		Expect(t.f.Dels).To(Equal(0), "upstream found the VLAN id in vpclab's prevResult and did not ask ipamd")
		Expect(mustSh(t.nsName, "ip", "-o", "link", "show")).NotTo(ContainSubstring("vlan.eth.5"))
		Expect(mustSh(t.nsName, "ip", "rule")).NotTo(ContainSubstring("lookup 105"))
	})
})
