package ipamd_test

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/ipamd"
)

var _ = Describe("warm pool, secondary-IP mode", func() {
	It("with defaults on m5.large keeps one spare ENI's worth once a pod holds an address", func() {
		n := newNode(nodeOpts{})
		n.start()
		Eventually(func() float64 { return n.metric("awscni_total_ip_addresses") }, 10*time.Second).Should(Equal(9.0))
		n.mustAdd("c1")
		Eventually(func() float64 { return n.metric("awscni_total_ip_addresses") }, 10*time.Second).Should(Equal(18.0))
		Expect(n.metric("awscni_assigned_ip_addresses")).To(Equal(1.0))
		Expect(n.metric("awscni_eni_allocated")).To(Equal(2.0))
		enis := n.enis()
		Expect(enis).To(HaveLen(2))
		for id, c := range enis {
			Expect(c[0]).To(Equal(10), "ENI %s has %d private IPv4", id, c[0])
		}
		// The new ENI was made the VPC CNI's way.
		for _, e := range n.region.NetworkInterfaces() {
			if e.Attachment != nil && e.Attachment.InstanceID == n.inst.ID && e.ID != n.inst.PrimaryENI {
				Expect(e.Description).To(Equal("aws-K8S-" + n.inst.ID))
				Expect(e.Tags).To(HaveKeyWithValue(ipamd.TagInstanceID, n.inst.ID))
				Expect(e.Tags).To(HaveKey(ipamd.TagCreatedAt))
				Expect(e.Attachment.DeleteOnTermination).To(BeTrue())
				Expect(e.Attachment.DeviceIndex).To(Equal(1))
			}
		}
		Expect(n.metric("awscni_eni_max")).To(Equal(3.0))
		Expect(n.region.CheckInvariants()).To(Succeed())
	})

	It("with WARM_IP_TARGET=2 MINIMUM_IP_TARGET=12 starts at 12 and keeps 2 free as pods arrive", func() {
		n := newNode(nodeOpts{env: map[string]string{"WARM_IP_TARGET": "2", "MINIMUM_IP_TARGET": "12"}})
		n.start()
		Eventually(func() float64 { return n.metric("awscni_total_ip_addresses") }, 10*time.Second).Should(Equal(12.0))
		Consistently(func() float64 { return n.metric("awscni_total_ip_addresses") }, time.Second, 100*time.Millisecond).Should(Equal(12.0))
		seen := map[string]bool{}
		for i := 0; i < 12; i++ {
			ip := n.mustAdd(fmt.Sprintf("p%d", i))
			Expect(seen).NotTo(HaveKey(ip), "address handed out twice")
			seen[ip] = true
		}
		Eventually(func() float64 { return n.metric("awscni_total_ip_addresses") }, 10*time.Second).Should(Equal(14.0))
		Expect(n.metric("awscni_assigned_ip_addresses")).To(Equal(12.0))
		// Releasing pods shrinks back to the minimum.
		for i := 0; i < 12; i++ {
			_, err := n.del(fmt.Sprintf("p%d", i))
			Expect(err).NotTo(HaveOccurred())
		}
		Eventually(func() float64 { return n.metric("awscni_total_ip_addresses") }, 10*time.Second).Should(Equal(12.0))
	})
})

var _ = Describe("warm pool, prefix mode", func() {
	It("holds one /28 at start and adds a warm prefix once the first is in use", func() {
		n := newNode(nodeOpts{env: map[string]string{"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "1"}})
		n.start()
		Eventually(func() float64 { return n.metric("awscni_total_ipv4_prefixes") }, 10*time.Second).Should(Equal(1.0))
		Consistently(func() float64 { return n.metric("awscni_total_ipv4_prefixes") }, time.Second, 100*time.Millisecond).Should(Equal(1.0))
		Expect(n.metric("awscni_total_ip_addresses")).To(Equal(16.0))
		ip := n.mustAdd("c1")
		Expect(n.region.NetworkInterface(n.inst.PrimaryENI)).To(WithTransform(func(e fakeec2.NetworkInterface) bool {
			return len(e.Prefixes) > 0 && e.Prefixes[0].Contains(mustAddr(ip))
		}, BeTrue()))
		Eventually(func() float64 { return n.metric("awscni_total_ipv4_prefixes") }, 10*time.Second).Should(Equal(2.0))
		for i := 2; i <= 16; i++ {
			n.mustAdd(fmt.Sprintf("c%d", i))
		}
		Consistently(func() float64 { return n.metric("awscni_total_ipv4_prefixes") }, time.Second, 100*time.Millisecond).Should(Equal(2.0))
		n.mustAdd("c17")
		Eventually(func() float64 { return n.metric("awscni_total_ipv4_prefixes") }, 10*time.Second).Should(Equal(3.0))
	})
})

var _ = Describe("EC2 trouble", func() {
	It("keeps serving and backs off while AssignPrivateIpAddresses is throttled, then recovers", func() {
		n := newNode(nodeOpts{env: map[string]string{"WARM_IP_TARGET": "2", "MINIMUM_IP_TARGET": "4"}})
		n.start()
		Eventually(func() float64 { return n.metric("awscni_total_ip_addresses") }, 10*time.Second).Should(Equal(4.0))
		_, err := n.srv.Faults().Add(fakeec2.FaultRule{Action: "AssignPrivateIpAddresses", Code: "RequestLimitExceeded", For: fakeec2.Duration(4 * time.Second)})
		Expect(err).NotTo(HaveOccurred())
		start := time.Now()
		n.mustAdd("a")
		n.mustAdd("b")
		n.mustAdd("c")
		n.mustAdd("d") // the pool is now empty and cannot grow
		r, err := n.add("e")
		Expect(err).NotTo(HaveOccurred())
		Expect(r.Success).To(BeFalse(), "no address while EC2 throttles")
		time.Sleep(time.Until(start.Add(3 * time.Second)))
		calls := n.srv.Audit().Events(fakeec2.EventFilter{Action: "AssignPrivateIpAddresses", ErrorCode: "RequestLimitExceeded"})
		// Bounded: the SDK retries (3 attempts) inside a doubling back-off,
		// not a hot loop (a 100 ms pool tick would be ~90 calls).
		Expect(len(calls)).To(BeNumerically("<=", 24), "throttled calls: %d", len(calls))
		Expect(len(calls)).To(BeNumerically(">=", 1))
		Eventually(func() bool { r, err := n.add("e"); return err == nil && r.Success }, 20*time.Second, 200*time.Millisecond).Should(BeTrue())
		Expect(n.logTail()).To(ContainSubstring("EC2 throttled; backing off"))
		all := n.srv.Audit().Events(fakeec2.EventFilter{Action: "AssignPrivateIpAddresses", ErrorCode: "RequestLimitExceeded"})
		Expect(len(all)).To(BeNumerically("<=", 24), "throttled calls over the whole window: %d", len(all))
		Expect(n.cmd.ProcessState).To(BeNil(), "ipamd must not exit")
	})

	It("serves what it has when the subnet is exhausted, fails the extra pod cleanly, and recovers", func() {
		// A /28 has 11 usable addresses: the node's primary IP and 10 more.
		n := newNode(nodeOpts{subnetCIDR: "10.0.0.0/28", env: map[string]string{"VPCLAB_INSUFFICIENT_CIDR_COOLDOWN": "500ms"}})
		n.start()
		Eventually(func() float64 { return n.metric("awscni_total_ip_addresses") }, 10*time.Second).Should(Equal(9.0))
		var ips []string
		for i := 0; i < 10; i++ {
			r, err := n.add(fmt.Sprintf("x%d", i))
			Expect(err).NotTo(HaveOccurred())
			if !r.Success {
				break
			}
			ips = append(ips, r.IPAllocationMetadata[0].IPv4Addr)
		}
		// 9 on the primary ENI; a second ENI needs one address for itself
		// and gets none to spare in a /28 (11 usable).
		Eventually(func() bool { r, _ := n.add("extra"); return r != nil && !r.Success }, 5*time.Second).Should(BeTrue())
		Expect(len(ips)).To(BeNumerically(">=", 9))
		Expect(n.region.CheckInvariants()).To(Succeed())
		Eventually(n.logTail, 5*time.Second).Should(Or(ContainSubstring("InsufficientFreeAddressesInSubnet"), ContainSubstring("subnet out of capacity")))
		// Free one pod: the extra pod gets its address.
		_, err := n.del("x0")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() bool { r, err := n.add("extra"); return err == nil && r.Success }, 10*time.Second, 100*time.Millisecond).Should(BeTrue())
	})
})

var _ = Describe("restart", func() {
	It("keeps every assignment across SIGKILL and never hands an address out twice", func() {
		n := newNode(nodeOpts{env: map[string]string{"WARM_IP_TARGET": "3"}})
		n.start()
		owner := map[string]string{}
		for i := 0; i < 8; i++ {
			c := fmt.Sprintf("k%d", i)
			owner[n.mustAdd(c)] = c
		}
		b, err := os.ReadFile(filepath.Join(n.dir, "ipam.json"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(b)).To(HavePrefix(`{"version":"vpc-cni-ipam/1","allocations":[`))
		n.kill(n.cmd)
		n.start()
		// The same pods get the same addresses back (ADD is idempotent)...
		for ip, c := range owner {
			Expect(n.mustAdd(c)).To(Equal(ip))
		}
		Expect(n.metric("awscni_assigned_ip_addresses")).To(Equal(8.0))
		// ...and new pods never get one of them.
		for i := 0; i < 6; i++ {
			ip := n.mustAdd(fmt.Sprintf("new%d", i))
			Expect(owner).NotTo(HaveKey(ip))
			owner[ip] = "new"
		}
		// DEL of an unknown pod says so, as the plugin expects.
		_, err = n.del("never-added")
		Expect(err).To(MatchError(ContainSubstring("datastore: unknown pod")))
	})

	It("deletes leaked ENIs tagged for the node after the grace period", func() {
		n := newNode(nodeOpts{env: map[string]string{"VPCLAB_LEAKED_ENI_INTERVAL": "200ms", "VPCLAB_LEAKED_ENI_GRACE": "0s"}})
		leak, err := n.region.CreateNetworkInterface(fakeec2.CreateNetworkInterfaceInput{SubnetID: n.subnet.ID, Description: "aws-K8S-" + n.inst.ID,
			Tags: fakeec2.Tags{ipamd.TagInstanceID: n.inst.ID, ipamd.TagCreatedAt: time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}})
		Expect(err).NotTo(HaveOccurred())
		other, err := n.region.CreateNetworkInterface(fakeec2.CreateNetworkInterfaceInput{SubnetID: n.subnet.ID, Description: "someone else's"})
		Expect(err).NotTo(HaveOccurred())
		n.start()
		Eventually(func() error { _, err := n.region.NetworkInterface(leak.ID); return err }, 10*time.Second).Should(HaveOccurred())
		_, err = n.region.NetworkInterface(other.ID)
		Expect(err).NotTo(HaveOccurred(), "an ENI not tagged for the node is left alone")
	})
})

var _ = Describe("configuration", func() {
	DescribeTable("rejects bad values naming the variable",
		func(k, v string) {
			_, err := ipamd.LoadConfig(func(name string) (string, bool) {
				if name == k {
					return v, true
				}
				return "", false
			})
			Expect(err).To(MatchError(ContainSubstring(k)))
		},
		Entry(nil, "WARM_ENI_TARGET", "lots"),
		Entry(nil, "WARM_IP_TARGET", "-3"),
		Entry(nil, "ENABLE_PREFIX_DELEGATION", "maybe"),
		Entry(nil, "AWS_VPC_ENI_MTU", "100"),
		Entry(nil, "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", "10.0.0.0/8,bogus"),
		Entry(nil, "ADDITIONAL_ENI_TAGS", "{not json"),
		Entry(nil, "AWS_VPC_K8S_CNI_RANDOMIZESNAT", "sometimes"),
		Entry(nil, "VPCLAB_POOL_INTERVAL", "soon"),
		Entry(nil, "AWS_VPC_K8S_CNI_VETHPREFIX", "eth"),
		Entry(nil, "ENABLE_IPv6", "true"),
	)

	It("uses aws-node's defaults", func() {
		c, err := ipamd.LoadConfig(func(string) (string, bool) { return "", false })
		Expect(err).NotTo(HaveOccurred())
		Expect(c.WarmENITarget).To(Equal(1))
		Expect(c.MTU).To(Equal(9001))
		Expect(c.VethPrefix).To(Equal("eni"))
		Expect(c.IPCooldown).To(Equal(30 * time.Second))
		Expect(c.SocketPath).To(Equal("/var/run/aws-node/ipamd.sock"))
		Expect(c.BackingStore).To(Equal("/var/run/aws-node/ipam.json"))
		Expect(c.IntrospectionAddr).To(Equal("127.0.0.1:61679"))
		Expect(c.MaxENI).To(Equal(-1))
	})

	It("fails start-up with a clear error", func() {
		n := newNode(nodeOpts{})
		Expect(runOnce(n, "WARM_IP_TARGET=x")).To(ContainSubstring("WARM_IP_TARGET"))
	})
})

var _ = Describe("introspection", func() {
	It("serves the VPC CNI's paths with its JSON shape", func() {
		n := newNode(nodeOpts{})
		n.start()
		n.mustAdd("i1")
		var enis map[string]struct {
			TotalIPs, AssignedIPs int
			ENIs                  map[string]struct {
				ID                 string
				IsPrimary          bool
				DeviceNumber       int
				RouteTableID       int
				AvailableIPv4Cidrs map[string]struct {
					IsPrefix    bool
					IPAddresses map[string]struct {
						Address string
						IPAMKey struct{ NetworkName, ContainerID, IfName string }
					}
				}
			}
		}
		getJSON(n, "http://127.0.0.1:61679/v1/enis", &enis)
		Expect(enis).To(HaveKey("0"))
		Expect(enis["0"].AssignedIPs).To(Equal(1))
		var found bool
		for _, e := range enis["0"].ENIs {
			for _, c := range e.AvailableIPv4Cidrs {
				for _, a := range c.IPAddresses {
					if a.IPAMKey.NetworkName == "aws-cni" {
						found = true
						Expect(a.IPAMKey.ContainerID).To(BeEmpty(), "scrubbed as in v1.23")
					}
				}
			}
		}
		Expect(found).To(BeTrue())
		var env map[string]string
		getJSON(n, "http://127.0.0.1:61679/v1/ipamd-env-settings", &env)
		Expect(env).To(HaveKeyWithValue("WARM_ENI_TARGET", "1"))
	})
})

