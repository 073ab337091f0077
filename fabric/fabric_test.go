package fabric_test

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/internal/vlan"
)

var _ = Describe("two instances in one subnet", func() {
	var (
		w          *world
		a, b       types.Instance
		aNS, bNS   string
		eni2       types.NetworkInterface
		bSecondary []string
	)
	BeforeEach(func() {
		w = newWorld(worldOpts{seed: 11})
		a, b = w.run("m5.large"), w.run("m5.large")
		eni2 = w.createENI(nil)
		w.attach(*eni2.NetworkInterfaceId, *b.InstanceId, 1)
		bSecondary = w.assign(*eni2.NetworkInterfaceId, 2)
		w.sync()
		aNS, bNS = w.nodeNS(*a.InstanceId), w.nodeNS(*b.InstanceId)
	})

	It("gives each namespace the ENIs' links, MACs and addresses", func() {
		h, err := netx.Handle(mustNS(aNS))
		Expect(err).NotTo(HaveOccurred())
		defer h.Close()
		eth0, err := h.LinkByName("eth0")
		Expect(err).NotTo(HaveOccurred())
		Expect(eth0.Attrs().HardwareAddr.String()).To(Equal(*a.NetworkInterfaces[0].MacAddress))
		Expect(eth0.Attrs().MTU).To(Equal(fabric.MTU))
		addrs, err := netx.AddrList(h, eth0, netlink.FAMILY_V4)
		Expect(err).NotTo(HaveOccurred())
		Expect(addrs).To(HaveLen(1))
		Expect(addrs[0].IPNet.String()).To(Equal(*a.PrivateIpAddress + "/24"))
		Expect(mustSh(aNS, "ip", "route", "show", "default")).To(ContainSubstring("default via 10.0.0.1 dev eth0"))

		hb, err := netx.Handle(mustNS(bNS))
		Expect(err).NotTo(HaveOccurred())
		defer hb.Close()
		eth1, err := hb.LinkByName("eth1")
		Expect(err).NotTo(HaveOccurred())
		Expect(eth1.Attrs().HardwareAddr.String()).To(Equal(*eni2.MacAddress))
		Expect(eth1.Attrs().MTU).To(Equal(fabric.MTU))
		Expect(eth1.Attrs().OperState).To(Equal(netlink.LinkOperState(netlink.OperUp)))
		a1, _ := hb.AddrList(eth1, netlink.FAMILY_V4)
		Expect(a1).To(BeEmpty(), "a secondary ENI comes up without addresses; the CNI configures it")
	})

	It("delivers a secondary IP to the ENI that owns it, until it is unassigned", func() {
		src := w.assign(*a.NetworkInterfaces[0].NetworkInterfaceId, 1)[0]
		w.sync()
		mustSh(aNS, "ip", "addr", "add", src+"/32", "dev", "eth0")
		dst := bSecondary[0]
		// As the CNI would: the address on eth1, answered through eth1.
		mustSh(bNS, "ip", "addr", "add", dst+"/32", "dev", "eth1")
		mustSh(bNS, "ip", "route", "add", "10.0.0.1", "dev", "eth1", "table", "2")
		mustSh(bNS, "ip", "route", "add", "default", "via", "10.0.0.1", "dev", "eth1", "table", "2")
		mustSh(bNS, "ip", "rule", "add", "from", dst, "lookup", "2")
		rx0, rx1 := rxPackets(bNS, "eth0"), rxPackets(bNS, "eth1")
		Expect(ping(aNS, src, dst)).To(Succeed())
		Expect(rxPackets(bNS, "eth1")).To(BeNumerically(">", rx1), "the echo arrives on eth1")
		Expect(rxPackets(bNS, "eth0")).To(Equal(rx0), "and not on eth0")

		_, err := w.EC2.UnassignPrivateIpAddresses(context.Background(), &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: eni2.NetworkInterfaceId, PrivateIpAddresses: []string{dst}})
		Expect(err).NotTo(HaveOccurred())
		w.sync()
		before := icmpInEchos(bNS)
		Expect(ping(aNS, src, dst)).NotTo(Succeed())
		Expect(icmpInEchos(bNS)).To(Equal(before), "an unassigned address is not delivered")
	})

	It("drops spoofed sources unless the source/destination check is off", func() {
		// An owned source gets through (and resolves B's address).
		Expect(ping(aNS, *a.PrivateIpAddress, *b.PrivateIpAddress)).To(Succeed())
		// B's group admits the whole VPC, so only the check decides (its
		// default rule admits the group's own members' addresses only).
		w.authorize(w.defaultGroup(), false, "-1", -1, -1, "10.0.0.0/16")
		spoof := "10.0.0.200"
		mustSh(aNS, "ip", "addr", "add", spoof+"/32", "dev", "eth0")
		in := icmpInEchos(bNS)
		Expect(ping(aNS, spoof, *b.PrivateIpAddress)).NotTo(Succeed())
		Expect(icmpInEchos(bNS)).To(Equal(in), "a spoofed packet must not reach B")

		_, err := w.EC2.ModifyNetworkInterfaceAttribute(context.Background(), &ec2.ModifyNetworkInterfaceAttributeInput{
			NetworkInterfaceId: a.NetworkInterfaces[0].NetworkInterfaceId, SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(false)}})
		Expect(err).NotTo(HaveOccurred())
		w.sync()
		in = icmpInEchos(bNS)
		_ = ping(aNS, spoof, *b.PrivateIpAddress) // the reply has no way back; the request arrives
		Expect(icmpInEchos(bNS)).To(BeNumerically(">", in))
	})

	It("serves each instance its own IMDS, and the EC2 API, at fixed addresses", func() {
		ca := httpIn(mustPath(w, *a.InstanceId), 5*time.Second)
		Expect(imdsGet(ca, "instance-id")).To(Equal(*a.InstanceId))
		cb := httpIn(mustPath(w, *b.InstanceId), 5*time.Second)
		Expect(imdsGet(cb, "instance-id")).To(Equal(*b.InstanceId))
		Expect(imdsGet(cb, "network/interfaces/macs/")).To(Equal(*b.NetworkInterfaces[0].MacAddress + "/\n" + *eni2.MacAddress + "/"))

		// The SDK, from inside instance A, through the fabric's EC2 address.
		client := ec2.New(ec2.Options{Region: "us-west-2", BaseEndpoint: aws.String(fabric.EC2Endpoint), Credentials: w.EC2.Options().Credentials, HTTPClient: ca})
		out, err := client.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{*a.InstanceId}})
		Expect(err).NotTo(HaveOccurred())
		Expect(*out.Reservations[0].Instances[0].InstanceId).To(Equal(*a.InstanceId))
	})

	It("keeps the IMDSv2 token from a namespace one hop behind when the hop limit is 1", func() {
		pod := w.assign(*a.NetworkInterfaces[0].NetworkInterfaceId, 1)[0]
		w.sync()
		podNS := w.Name + "-pod"
		Expect(exec.Command("ip", "netns", "add", podNS).Run()).To(Succeed())
		DeferCleanup(func() { _ = netx.DeleteNamed(podNS) })
		// A minimal pod: a veth behind instance A, routed by A.
		mustSh(aNS, "ip", "link", "add", "hpod", "type", "veth", "peer", "name", "eth0", "netns", podNS)
		mustSh(aNS, "ip", "link", "set", "hpod", "up")
		mustSh(aNS, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.hpod.proxy_arp=1")
		mustSh(aNS, "ip", "route", "add", pod+"/32", "dev", "hpod")
		mustSh(podNS, "ip", "link", "set", "lo", "up")
		mustSh(podNS, "ip", "link", "set", "eth0", "up")
		mustSh(podNS, "ip", "addr", "add", pod+"/32", "dev", "eth0")
		mustSh(podNS, "ip", "route", "add", "default", "dev", "eth0")

		cp := httpIn(fmt.Sprintf("/var/run/netns/%s", podNS), 2*time.Second)
		_, err := imdsGet(cp, "instance-id")
		Expect(err).To(HaveOccurred(), "hop limit 1: the token response must expire one hop behind the node")
		// The node itself still gets tokens.
		Expect(imdsGet(httpIn(mustPath(w, *a.InstanceId), 5*time.Second), "instance-id")).To(Equal(*a.InstanceId))

		_, err = w.EC2.ModifyInstanceMetadataOptions(context.Background(), &ec2.ModifyInstanceMetadataOptionsInput{InstanceId: a.InstanceId, HttpPutResponseHopLimit: aws.Int32(2)})
		Expect(err).NotTo(HaveOccurred())
		Expect(imdsGet(cp, "instance-id")).To(Equal(*a.InstanceId), "hop limit 2 reaches the pod")
	})

	It("re-syncs after a restart, adopting what it finds", func() {
		w.Fabric.Detach()
		// Changes while no fabric runs.
		extra := w.assign(*eni2.NetworkInterfaceId, 1)[0]
		eni3 := w.createENI(nil)
		w.attach(*eni3.NetworkInterfaceId, *a.InstanceId, 1)
		f2, err := fabric.New(fabric.Config{Name: w.Name, Region: w.Region, IMDS: w.Server.IMDS(), EC2: w.Server, VLAN: vlan.BPF{}})
		Expect(err).NotTo(HaveOccurred())
		w.Fabric = f2
		w.sync()
		Expect(mustSh(aNS, "ip", "-br", "link", "show", "eth1")).To(ContainSubstring(*eni3.MacAddress))
		routes := mustSh(w.routerNS(), "ip", "route", "show", extra)
		Expect(routes).To(ContainSubstring(extra))
		Expect(imdsGet(httpIn(mustPath(w, *b.InstanceId), 5*time.Second), "instance-id")).To(Equal(*b.InstanceId))
	})

	It("follows detach and termination", func() {
		d, err := w.EC2.DescribeNetworkInterfaces(context.Background(), &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{*eni2.NetworkInterfaceId}})
		Expect(err).NotTo(HaveOccurred())
		_, err = w.EC2.DetachNetworkInterface(context.Background(), &ec2.DetachNetworkInterfaceInput{AttachmentId: d.NetworkInterfaces[0].Attachment.AttachmentId})
		Expect(err).NotTo(HaveOccurred())
		w.sync()
		_, err = sh(bNS, "ip", "link", "show", "eth1")
		Expect(err).To(HaveOccurred(), "eth1 is gone after detach")
		_, err = w.EC2.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{*b.InstanceId}})
		Expect(err).NotTo(HaveOccurred())
		w.sync()
		Expect(netx.ListNamed(bNS)).To(BeEmpty())
	})
})

var _ = DescribeTable("trunk and branch ENIs carry 802.1Q frames",
	func(dp func() vlan.Datapath, want func() string) {
		w := newWorld(worldOpts{seed: 21, vlan: dp()})
		Expect(w.Fabric.Datapath()).To(Equal(want()))
		node, peer := w.run("m5.large"), w.run("t3.small")
		trunk := w.createENI(func(in *ec2.CreateNetworkInterfaceInput) { in.InterfaceType = types.NetworkInterfaceCreationTypeTrunk })
		w.attach(*trunk.NetworkInterfaceId, *node.InstanceId, 1)
		branch := w.createENI(func(in *ec2.CreateNetworkInterfaceInput) { in.InterfaceType = "branch" })
		_, err := w.EC2.AssociateTrunkInterface(context.Background(), &ec2.AssociateTrunkInterfaceInput{
			TrunkInterfaceId: trunk.NetworkInterfaceId, BranchInterfaceId: branch.NetworkInterfaceId, VlanId: aws.Int32(7)})
		Expect(err).NotTo(HaveOccurred())
		w.sync()
		nodeNS, routerNS := w.nodeNS(*node.InstanceId), w.routerNS()
		trunkLink, _ := w.Fabric.LinkName(*trunk.NetworkInterfaceId)
		routerTrunk, _ := w.Fabric.RouterLinkName(*trunk.NetworkInterfaceId)

		ip := *branch.PrivateIpAddress
		branchPath(w, nodeNS, trunkLink, *branch.MacAddress, ip, 7)

		// Capture on the router side of the trunk while the branch talks to
		// another VPC host.
		cap := exec.Command("ip", "netns", "exec", routerNS, "tcpdump", "-e", "-n", "-l", "-c", "2", "-i", routerTrunk, "vlan")
		stdout, _ := cap.StdoutPipe()
		stderr, _ := cap.StderrPipe()
		Expect(cap.Start()).To(Succeed())
		DeferCleanup(func() { _ = cap.Process.Kill(); _ = cap.Wait() })
		ready := bufio.NewScanner(stderr)
		for ready.Scan() && !strings.Contains(ready.Text(), "listening on") {
		}
		Expect(ping(nodeNS, ip, *peer.PrivateIpAddress)).To(Succeed())
		lines := make(chan string, 4)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		var got []string
		timeout := time.After(5 * time.Second)
	collect:
		for len(got) < 2 {
			select {
			case l, ok := <-lines:
				if !ok {
					break collect
				}
				got = append(got, l)
			case <-timeout:
				break collect
			}
		}
		Expect(got).NotTo(BeEmpty())
		for _, l := range got {
			Expect(l).To(ContainSubstring("vlan 7"), "frame on the trunk: %s", l)
		}
		// The peer saw the branch address, not the node's.
		Expect(imdsGet(httpIn(mustPath(w, *node.InstanceId), 5*time.Second), "instance-id")).To(Equal(*node.InstanceId))

		// Disassociation removes the path.
		assocs, err := w.EC2.DescribeTrunkInterfaceAssociations(context.Background(), &ec2.DescribeTrunkInterfaceAssociationsInput{})
		Expect(err).NotTo(HaveOccurred())
		_, err = w.EC2.DisassociateTrunkInterface(context.Background(), &ec2.DisassociateTrunkInterfaceInput{AssociationId: assocs.InterfaceAssociations[0].AssociationId})
		Expect(err).NotTo(HaveOccurred())
		w.sync()
		Expect(ping(nodeNS, ip, *peer.PrivateIpAddress)).NotTo(Succeed())
	},
	Entry("with the datapath this kernel supports", func() vlan.Datapath { return nil }, func() string {
		if kernelHasVLAN() {
			return vlan.Kind8021Q
		}
		return vlan.KindBPF
	}),
	Entry("with the BPF datapath forced", func() vlan.Datapath { return vlan.BPF{} }, func() string { return vlan.KindBPF }),
)

var _ = Describe("the internet peer", func() {
	It("is reached from an instance through the NAT", func() {
		w := newWorld(worldOpts{seed: 31, internet: true})
		i := w.run("t3.small")
		w.sync()
		Expect(ping(w.nodeNS(*i.InstanceId), *i.PrivateIpAddress, fabric.InternetHostAddr)).To(Succeed())
	})
})

var _ = Describe("cleanup", func() {
	It("leaves nothing after Close", func() {
		w := newWorld(worldOpts{seed: 41, vlan: vlan.BPF{}, internet: true})
		buildTrunkWorld(w.Region)
		w.sync()
		Expect(netx.ListNamed(w.Name + "-")).NotTo(BeEmpty())
		Expect(labPrograms(w.Name)).NotTo(BeEmpty())
		Expect(w.Fabric.Close()).To(Succeed())
		Expect(netx.ListNamed(w.Name + "-")).To(BeEmpty())
		Eventually(func() []string { return labPrograms(w.Name) }, 10*time.Second, 100*time.Millisecond).Should(BeEmpty())
	})

	It("GC removes what a killed process left", func() {
		name := uniqueName()
		child := exec.Command(os.Args[0], "-test.run", "^TestFabric$")
		child.Env = append(os.Environ(), childEnv+"="+name)
		out, _ := child.StdoutPipe()
		child.Stderr = GinkgoWriter
		Expect(child.Start()).To(Succeed())
		sc := bufio.NewScanner(out)
		for sc.Scan() && sc.Text() != "ready" {
		}
		Expect(child.Process.Signal(syscall.SIGKILL)).To(Succeed())
		_ = child.Wait()
		DeferCleanup(func() { _ = fabric.GC(name) })
		Expect(netx.ListNamed(name + "-")).NotTo(BeEmpty())
		Expect(labPrograms(name)).NotTo(BeEmpty())
		Expect(fabric.GC(name)).To(Succeed())
		Expect(netx.ListNamed(name + "-")).To(BeEmpty())
		Eventually(func() []string { return labPrograms(name) }, 10*time.Second, 100*time.Millisecond).Should(BeEmpty())
	})
})

const childEnv = "VPCLAB_FABRIC_CHILD"

// runChild builds a fabric with a trunk and a branch, says "ready", and
// waits to be killed.
func runChild(name string) {
	r := model.NewRegion(model.Options{Seed: 51})
	buildTrunkWorld(r)
	f, err := fabric.New(fabric.Config{Name: name, Region: r, VLAN: vlan.BPF{}, Internet: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.WaitSynced(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("ready")
	time.Sleep(time.Hour)
	os.Exit(0)
}

// buildTrunkWorld makes an instance with a trunk ENI and an associated branch.
func buildTrunkWorld(r *model.Region) {
	vpcs := r.VPCs()
	var subnet string
	if len(vpcs) == 0 {
		v, err := r.CreateVPC(model.CreateVPCInput{CIDR: mustPrefix("10.9.0.0/16")})
		must(err)
		s, err := r.CreateSubnet(model.CreateSubnetInput{VPCID: v.ID, CIDR: mustPrefix("10.9.0.0/24")})
		must(err)
		subnet = s.ID
	} else {
		subnet = r.Subnets()[0].ID
	}
	insts, err := r.RunInstances(model.RunInstancesInput{InstanceType: "m5.large", SubnetID: subnet})
	must(err)
	trunk, err := r.CreateNetworkInterface(model.CreateNetworkInterfaceInput{SubnetID: subnet, InterfaceType: "trunk"})
	must(err)
	_, err = r.AttachNetworkInterface(model.AttachNetworkInterfaceInput{ENIID: trunk.ID, InstanceID: insts[0].ID, DeviceIndex: 1})
	must(err)
	branch, err := r.CreateNetworkInterface(model.CreateNetworkInterfaceInput{SubnetID: subnet, InterfaceType: "branch"})
	must(err)
	_, err = r.AssociateTrunkInterface(model.AssociateTrunkInput{TrunkID: trunk.ID, BranchID: branch.ID, VlanID: 9})
	must(err)
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func mustNS(name string) ns.NetNS {
	GinkgoHelper()
	n, err := netx.Open(name)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(n.Close)
	return n
}

func mustPath(w *world, inst string) string {
	GinkgoHelper()
	p, ok := w.Fabric.NodeNamespace(inst)
	Expect(ok).To(BeTrue())
	return p
}
func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// stallingRegion is a region whose ENI listing, once armed, waits until
// released: the fabric reading it while it reconciles a change is held
// there, as a slow kernel transaction would hold it.
type stallingRegion struct {
	*model.Region
	armed   atomic.Bool
	entered chan struct{} // closed when a stalled read begins
	release chan struct{}
	once    sync.Once
}

func (r *stallingRegion) NetworkInterfaces() []model.NetworkInterface {
	if r.armed.Load() {
		r.once.Do(func() { close(r.entered) })
		<-r.release
	}
	return r.Region.NetworkInterfaces()
}

var _ = Describe("a fabric busy reconciling", func() {
	It("still answers every instance's IMDS at once", func() {
		region := model.NewRegion(model.Options{Seed: 53})
		srv := fakeec2.NewServer(region, fakeec2.ServerOptions{})
		DeferCleanup(srv.Close)
		v, err := region.CreateVPC(model.CreateVPCInput{CIDR: netip.MustParsePrefix("10.0.0.0/16")})
		Expect(err).NotTo(HaveOccurred())
		sn, err := region.CreateSubnet(model.CreateSubnetInput{VPCID: v.ID, CIDR: netip.MustParsePrefix("10.0.0.0/24")})
		Expect(err).NotTo(HaveOccurred())
		stall := &stallingRegion{Region: region, entered: make(chan struct{}), release: make(chan struct{})}
		f, err := fabric.New(fabric.Config{Name: uniqueName(), Region: stall, IMDS: srv.IMDS(), VLAN: vlan.BPF{}})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(f.Close()).To(Succeed()) })
		release := sync.OnceFunc(func() { close(stall.release) })
		DeferCleanup(release)
		synced := func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			Expect(f.WaitSynced(ctx)).To(Succeed())
		}

		a, err := region.RunInstances(model.RunInstancesInput{InstanceType: "m5.large", SubnetID: sn.ID})
		Expect(err).NotTo(HaveOccurred())
		synced()
		p, ok := f.NodeNamespace(a[0].ID)
		Expect(ok).To(BeTrue())
		client := httpIn(p, 2*time.Second)

		// A second instance's launch: the fabric builds its namespace and
		// stalls reading its ENIs.
		stall.armed.Store(true)
		_, err = region.RunInstances(model.RunInstancesInput{InstanceType: "m5.large", SubnetID: sn.ID})
		Expect(err).NotTo(HaveOccurred())
		Eventually(stall.entered, 30*time.Second).Should(BeClosed())

		Expect(imdsGet(client, "instance-id")).To(Equal(a[0].ID), "IMDS waited for the fabric's reconcile")
		release()
		synced()
	})
})
