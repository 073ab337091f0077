package fabric_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/internal/netx"
)

var _ = Describe("security groups on real packets", Label("security-groups"), func() {
	var (
		w             *world
		a, b, c       types.Instance
		aNS, bNS, cNS string
		bIP           string
	)
	BeforeEach(func() {
		w = newWorld(worldOpts{seed: 51, internet: true})
		a, b, c = w.run("t3.medium"), w.run("t3.medium"), w.run("t3.medium")
		w.sync()
		aNS, bNS, cNS = w.nodeNS(*a.InstanceId), w.nodeNS(*b.InstanceId), w.nodeNS(*c.InstanceId)
		bIP = *b.PrivateIpAddress
		serveEcho(bNS, 8001, 8002, 8003, 8004, 8005, 8006, 8080, 9090)
	})

	It("admits an allowed port or range from an allowed CIDR, and drops the rest", func() {
		web := w.group("web")
		w.setGroups(b, web)
		Expect(blocked(aNS, bIP, 8080)).To(Succeed(), "a new group admits nothing")
		w.authorize(web, false, "tcp", 8080, 8080, "10.0.0.0/16")
		Expect(connect(aNS, bIP, 8080)).To(Succeed())
		Expect(blocked(aNS, bIP, 9090)).To(Succeed())
		w.authorize(web, false, "tcp", 8001, 8003, "10.0.0.0/24")
		Expect(connect(aNS, bIP, 8002)).To(Succeed())
		Expect(blocked(aNS, bIP, 8004)).To(Succeed())
		w.authorize(web, false, "tcp", 9090, 9090, "10.1.0.0/16")
		Expect(blocked(aNS, bIP, 9090)).To(Succeed(), "a CIDR that does not hold the source admits nothing")
		w.authorize(web, false, "udp", 9090, 9090, "10.0.0.0/16")
		Expect(blocked(aNS, bIP, 9090)).To(Succeed(), "a UDP rule does not admit TCP")
		drops, err := w.Fabric.Drops()
		Expect(err).NotTo(HaveOccurred())
		Expect(drops[*b.NetworkInterfaces[0].NetworkInterfaceId].Inbound).To(BeNumerically(">=", 1), "the SYN dropped since the last rule change, counted at b's ENI")
		Expect(drops[*a.NetworkInterfaces[0].NetworkInterfaceId]).To(Equal(fabric.Drops{}))
	})

	It("admits ICMP by type", func() {
		web := w.group("web")
		w.setGroups(b, web)
		Expect(ping(aNS, *a.PrivateIpAddress, bIP)).NotTo(Succeed())
		w.authorize(web, false, "icmp", 13, -1, "0.0.0.0/0") // timestamp requests only
		Expect(ping(aNS, *a.PrivateIpAddress, bIP)).NotTo(Succeed())
		w.authorize(web, false, "icmp", 8, -1, "0.0.0.0/0") // echo requests
		Expect(ping(aNS, *a.PrivateIpAddress, bIP)).To(Succeed())
		Expect(blocked(aNS, bIP, 8080)).To(Succeed(), "an ICMP rule admits no TCP")
	})

	It("admits a referenced group's members (every private address of theirs) and follows membership within a second", func() {
		app, db := w.group("app"), w.group("db")
		w.authorize(db, false, "tcp", 8080, 8080, app)
		w.setGroups(b, db)
		w.setGroups(a, app)
		Expect(connect(aNS, bIP, 8080)).To(Succeed())
		Expect(blocked(cNS, bIP, 8080)).To(Succeed(), "c is not in app")

		// A member's secondary address is a member address too.
		sec := w.assign(*a.NetworkInterfaces[0].NetworkInterfaceId, 1)[0]
		w.sync()
		mustSh(aNS, "ip", "addr", "add", sec+"/32", "dev", "eth0")
		Expect(connectFrom(aNS, sec, bIP, 8080)).To(Succeed())

		// c joins app: admitted within a second of the API's answer.
		_, err := w.EC2.ModifyNetworkInterfaceAttribute(context.Background(), &ec2.ModifyNetworkInterfaceAttributeInput{
			NetworkInterfaceId: c.NetworkInterfaces[0].NetworkInterfaceId, Groups: []string{w.defaultGroup(), app}})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() error { return quickConnect(cNS, bIP, 8080) }).WithTimeout(time.Second).WithPolling(10 * time.Millisecond).Should(Succeed())
		// and a leaves it: refused again.
		w.setGroups(a, w.defaultGroup())
		Expect(blocked(aNS, bIP, 8080)).To(Succeed())
	})

	It("lets the default group's members reach each other, and a new group only send", func() {
		Expect(connect(aNS, bIP, 8080)).To(Succeed())
		Expect(ping(bNS, bIP, *a.PrivateIpAddress)).To(Succeed())
		custom := w.group("custom")
		w.setGroups(b, custom)
		Expect(blocked(aNS, bIP, 8080)).To(Succeed(), "custom admits nothing")
		Expect(ping(bNS, bIP, *a.PrivateIpAddress)).NotTo(Succeed(), "a's default group admits its members only")
		Expect(ping(bNS, bIP, fabric.InternetHostAddr)).To(Succeed(), "all egress, and the reply of a tracked flow")
	})

	It("keeps an established flow when its egress rule is removed, and refuses new ones", func() {
		client, server := w.group("client"), w.group("server")
		w.authorize(server, false, "tcp", 8080, 8080, client)
		w.setGroups(a, client)
		w.setGroups(b, server)
		conn, err := dialFrom(aNS, "", bIP, 8080, 2*time.Second)
		Expect(err).NotTo(HaveOccurred())
		defer conn.Close()
		Expect(echo(conn, "before")).To(Succeed())

		w.revoke(client, true, w.ruleID(client, true))
		Expect(blocked(aNS, bIP, 8080)).To(Succeed(), "a new flow needs an egress rule")
		Expect(echo(conn, "after")).To(Succeed(), "the tracked flow goes on")
	})

	It("unions the rules of five groups", func() {
		var gs []string
		for i := 1; i <= 5; i++ {
			g := w.group(fmt.Sprintf("g%d", i))
			w.authorize(g, false, "tcp", int32(8000+i), int32(8000+i), "10.0.0.0/16")
			gs = append(gs, g)
		}
		w.setGroups(b, gs...)
		for i := 1; i <= 5; i++ {
			Expect(connect(aNS, bIP, 8000+i)).To(Succeed(), "port %d", 8000+i)
		}
		Expect(blocked(aNS, bIP, 8006)).To(Succeed())
	})

	It("never filters IMDS, the EC2 endpoint or traffic inside an instance", func() {
		locked := w.group("locked")
		w.revoke(locked, true, w.ruleID(locked, true))
		w.setGroups(a, locked)
		Expect(ping(aNS, *a.PrivateIpAddress, bIP)).NotTo(Succeed())
		client := httpIn(mustPath(w, *a.InstanceId), 5*time.Second)
		Expect(imdsGet(client, "instance-id")).To(Equal(*a.InstanceId))
		resp, err := client.Get(fabric.EC2Endpoint + "/?Action=DescribeRegions&Version=2016-11-15")
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		serveEcho(aNS, 7000)
		Expect(connect(aNS, *a.PrivateIpAddress, 7000)).To(Succeed())
	})

	It("filters a branch ENI by its own groups, not its trunk's", func() {
		node := w.run("m5.large")
		trunk := w.createENI(func(in *ec2.CreateNetworkInterfaceInput) { in.InterfaceType = types.NetworkInterfaceCreationTypeTrunk })
		w.attach(*trunk.NetworkInterfaceId, *node.InstanceId, 1)
		pod := w.group("pod")
		w.authorize(pod, false, "tcp", 8080, 8080, "10.0.0.0/16")
		branch := w.createENI(func(in *ec2.CreateNetworkInterfaceInput) {
			in.InterfaceType = "branch"
			in.Groups = []string{pod}
		})
		_, err := w.EC2.AssociateTrunkInterface(context.Background(), &ec2.AssociateTrunkInterfaceInput{
			TrunkInterfaceId: trunk.NetworkInterfaceId, BranchInterfaceId: branch.NetworkInterfaceId, VlanId: aws.Int32(9)})
		Expect(err).NotTo(HaveOccurred())
		w.sync()
		nodeNS := w.nodeNS(*node.InstanceId)
		trunkLink, _ := w.Fabric.LinkName(*trunk.NetworkInterfaceId)
		branchPath(w, nodeNS, trunkLink, *branch.MacAddress, *branch.PrivateIpAddress, 9)
		serveEcho(nodeNS, 8080, 9090)

		Expect(connect(aNS, *branch.PrivateIpAddress, 8080)).To(Succeed())
		Expect(blocked(aNS, *branch.PrivateIpAddress, 9090)).To(Succeed(), "the branch's group admits 8080 only")
		Expect(connect(aNS, *node.PrivateIpAddress, 9090)).To(Succeed(), "the node's default group admits a")
		// The branch's egress is its own too.
		w.revoke(pod, true, w.ruleID(pod, true))
		Expect(ping(nodeNS, *branch.PrivateIpAddress, bIP)).NotTo(Succeed())
		Expect(ping(nodeNS, *node.PrivateIpAddress, bIP)).To(Succeed())
	})

	It("lists one chain pair per ENI link in the router's table, and removes a detached ENI's", func() {
		eni := w.createENI(nil)
		w.attach(*eni.NetworkInterfaceId, *b.InstanceId, 1)
		w.sync()
		link, ok := w.Fabric.RouterLinkName(*eni.NetworkInterfaceId)
		Expect(ok).To(BeTrue())
		Expect(nftList(w.routerNS())).To(And(ContainSubstring("chain in-"+link), ContainSubstring("chain out-"+link)))
		_, err := w.EC2.DetachNetworkInterface(context.Background(), &ec2.DetachNetworkInterfaceInput{
			AttachmentId: w.attachmentOf(*eni.NetworkInterfaceId), Force: aws.Bool(true)})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() string { w.sync(); return nftList(w.routerNS()) }).WithTimeout(10 * time.Second).ShouldNot(ContainSubstring(link))
	})
})

// nftList prints a router's security group table.
func nftList(routerNS string) string {
	GinkgoHelper()
	return mustSh(routerNS, "nft", "list", "table", "ip", fabric.FilterTable)
}

func (w *world) attachmentOf(eni string) *string {
	GinkgoHelper()
	out, err := w.EC2.DescribeNetworkInterfaces(context.Background(), &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eni}})
	Expect(err).NotTo(HaveOccurred())
	Expect(out.NetworkInterfaces[0].Attachment).NotTo(BeNil())
	return out.NetworkInterfaces[0].Attachment.AttachmentId
}

// group creates a security group in the world's VPC.
func (w *world) group(name string) string {
	GinkgoHelper()
	out, err := w.EC2.CreateSecurityGroup(context.Background(), &ec2.CreateSecurityGroupInput{GroupName: &name, Description: aws.String(name), VpcId: &w.VPC})
	Expect(err).NotTo(HaveOccurred())
	return *out.GroupId
}

// setGroups replaces the groups of an instance's primary ENI.
func (w *world) setGroups(i types.Instance, groups ...string) {
	GinkgoHelper()
	_, err := w.EC2.ModifyNetworkInterfaceAttribute(context.Background(), &ec2.ModifyNetworkInterfaceAttributeInput{
		NetworkInterfaceId: i.NetworkInterfaces[0].NetworkInterfaceId, Groups: groups})
	Expect(err).NotTo(HaveOccurred())
	w.sync()
}

// ruleID is the id of a group's only rule in one direction.
func (w *world) ruleID(group string, egress bool) string {
	GinkgoHelper()
	out, err := w.EC2.DescribeSecurityGroupRules(context.Background(), &ec2.DescribeSecurityGroupRulesInput{
		Filters: []types.Filter{{Name: aws.String("group-id"), Values: []string{group}}}})
	Expect(err).NotTo(HaveOccurred())
	var ids []string
	for _, r := range out.SecurityGroupRules {
		if *r.IsEgress == egress {
			ids = append(ids, *r.SecurityGroupRuleId)
		}
	}
	Expect(ids).To(HaveLen(1))
	return ids[0]
}

func (w *world) revoke(group string, egress bool, id string) {
	GinkgoHelper()
	var err error
	if egress {
		_, err = w.EC2.RevokeSecurityGroupEgress(context.Background(), &ec2.RevokeSecurityGroupEgressInput{GroupId: &group, SecurityGroupRuleIds: []string{id}})
	} else {
		_, err = w.EC2.RevokeSecurityGroupIngress(context.Background(), &ec2.RevokeSecurityGroupIngressInput{GroupId: &group, SecurityGroupRuleIds: []string{id}})
	}
	Expect(err).NotTo(HaveOccurred())
	w.sync()
}

// serveEcho echoes lines on TCP ports of every address of a namespace
// until the spec ends.
func serveEcho(nsName string, ports ...int) {
	GinkgoHelper()
	n := mustNS(nsName)
	for _, p := range ports {
		ln, err := netx.Listen(n, "tcp", fmt.Sprintf(":%d", p))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(ln.Close)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
			}
		}()
	}
}

func dialFrom(nsName, src, dst string, port int, timeout time.Duration) (net.Conn, error) {
	n, err := netx.Open(nsName)
	if err != nil {
		return nil, err
	}
	defer n.Close()
	d := net.Dialer{Timeout: timeout}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	var c net.Conn
	err = n.Do(func(ns.NetNS) (err error) {
		c, err = d.Dial("tcp", net.JoinHostPort(dst, fmt.Sprint(port)))
		return err
	})
	return c, err
}

// connectFrom opens and closes a connection, patiently (a lost SYN is
// resent after a second).
func connectFrom(nsName, src, dst string, port int) error {
	c, err := dialFrom(nsName, src, dst, port, 3*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	return echo(c, "hello")
}

func connect(nsName, dst string, port int) error { return connectFrom(nsName, "", dst, port) }

// quickConnect gives a connection 100 ms.
func quickConnect(nsName, dst string, port int) error {
	c, err := dialFrom(nsName, "", dst, port, 100*time.Millisecond)
	if err == nil {
		c.Close()
	}
	return err
}

// blocked succeeds when a connection attempt times out: its SYN was
// dropped (not refused, which would mean it was delivered).
func blocked(nsName, dst string, port int) error {
	c, err := dialFrom(nsName, "", dst, port, 300*time.Millisecond)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s:%d from %s: connected", dst, port, nsName)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return fmt.Errorf("%s:%d from %s: want a timeout, got %w", dst, port, nsName, err)
}

// echo sends a line on c and reads it back.
func echo(c net.Conn, s string) error {
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, s+"\n"); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(got) != s {
		return fmt.Errorf("echo: sent %q, got %q", s, got)
	}
	return nil
}
