package ipamd_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/internal/vethname"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/labtest"
	"github.com/vpclab/vpclab/ipamd"
	"github.com/vpclab/vpclab/ipamd/rpc"
)

var _ = Describe("warm pool, secondary-IP mode", func() {
	It("with defaults on m5.large keeps one spare ENI's worth once a pod holds an address", func() {
		n := newNode(nodeOpts{})
		n.start()
		Eventually(func() float64 { return n.metric("awscni_total_ip_addresses") }, 10*time.Second).Should(Equal(9.0))
		ip := n.mustAdd("c1")
		Eventually(func() float64 { return n.metric("awscni_total_ip_addresses") }, 10*time.Second).Should(Equal(18.0))
		Expect(n.metric("awscni_assigned_ip_addresses")).To(Equal(1.0))
		Expect(n.metric("awscni_eni_allocated")).To(Equal(2.0))
		enis := n.enis()
		Expect(enis).To(HaveLen(2))
		for id, c := range enis {
			Expect(c[0]).To(Equal(10), "ENI %s has %d private IPv4", id, c[0])
		}
		// The new ENI was made the VPC CNI's way.
		for _, e := range n.Region.NetworkInterfaces() {
			if e.Attachment != nil && e.Attachment.InstanceID == n.inst.ID && e.ID != n.inst.PrimaryENI {
				Expect(e.Description).To(Equal("aws-K8S-" + n.inst.ID))
				Expect(e.Tags).To(HaveKeyWithValue(ipamd.TagInstanceID, n.inst.ID))
				Expect(e.Tags).To(HaveKey(ipamd.TagCreatedAt))
				Expect(e.Attachment.DeleteOnTermination).To(BeTrue())
				Expect(e.Attachment.DeviceIndex).To(Equal(1))
			}
		}
		Expect(n.metric("awscni_eni_max")).To(Equal(3.0))
		// The VPC CNI's other series: per CIDR (a /32 each here), and the
		// start-up histograms observed once.
		Expect(n.sumMetric("awscni_assigned_ip_per_cidr", `cidr="`+ip+`/32"`)).To(Equal(1.0))
		Expect(n.sumMetric("awscni_assigned_ip_per_cidr", "")).To(Equal(1.0))
		Expect(n.sumMetric("awscni_ipamd_startup_duration_seconds_count", `success="true"`)).To(Equal(1.0))
		Expect(n.sumMetric("awscni_ipamd_node_initialization_duration_seconds_count", `success="true"`)).To(Equal(1.0))
		Expect(n.Region.CheckInvariants()).To(Succeed())
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
		// Max pods 110, as a kubelet says with prefixes (without it the
		// type's 29 would cap the pool at 2 prefixes).
		n := newNode(nodeOpts{env: map[string]string{"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "1", "VPCLAB_MAX_PODS": "110"}})
		n.start()
		Eventually(func() float64 { return n.metric("awscni_total_ipv4_prefixes") }, 10*time.Second).Should(Equal(1.0))
		Consistently(func() float64 { return n.metric("awscni_total_ipv4_prefixes") }, time.Second, 100*time.Millisecond).Should(Equal(1.0))
		Expect(n.metric("awscni_total_ip_addresses")).To(Equal(16.0))
		ip := n.mustAdd("c1")
		Expect(n.Region.NetworkInterface(n.inst.PrimaryENI)).To(WithTransform(func(e model.NetworkInterface) bool {
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
		_, err := n.Server.Faults().Add(faults.Rule{Action: "AssignPrivateIpAddresses", Code: "RequestLimitExceeded", For: model.Duration(8 * time.Second)})
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
		calls := n.Server.Audit().Events(ec2query.EventFilter{Action: "AssignPrivateIpAddresses", ErrorCode: "RequestLimitExceeded"})
		// Bounded: the SDK retries (3 attempts) inside a doubling back-off,
		// not a hot loop (a 100 ms pool tick would be ~90 calls).
		Expect(len(calls)).To(BeNumerically("<=", 24), "throttled calls: %d", len(calls))
		Expect(len(calls)).To(BeNumerically(">=", 1))
		// The window outlasts the SDK's three attempts, so ipamd sees the error.
		Eventually(func() bool { r, err := n.add("e"); return err == nil && r.Success }, 30*time.Second, 200*time.Millisecond).Should(BeTrue())
		Expect(n.logTail()).To(ContainSubstring("EC2 throttled; backing off"))
		all := n.Server.Audit().Events(ec2query.EventFilter{Action: "AssignPrivateIpAddresses", ErrorCode: "RequestLimitExceeded"})
		Expect(len(all)).To(BeNumerically("<=", 24), "throttled calls over the whole window: %d", len(all))
		Expect(n.ipamd.Exited()).To(BeFalse(), "ipamd must not exit")
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
		Expect(n.Region.CheckInvariants()).To(Succeed())
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
			n.podVeth(c)
		}
		b, err := os.ReadFile(filepath.Join(n.dir, "ipam.json"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(b)).To(HavePrefix(`{"version":"vpc-cni-ipam/1","allocations":[`))
		n.ipamd.Kill()
		n.start()
		// The same pods get the same addresses back (ADD is idempotent)...
		for ip, c := range owner {
			Expect(n.mustAdd(c)).To(Equal(ip), func() string { return n.logTail() })
		}
		Expect(n.metric("awscni_assigned_ip_addresses")).To(Equal(8.0), func() string { return n.logTail() })
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

	It("keeps the cooldown across SIGKILL, and releases (with their rules) the addresses of pods deleted while it was down", func() {
		n := newNode(nodeOpts{env: map[string]string{"WARM_IP_TARGET": "3", "VPCLAB_IP_COOLDOWN": "40s", "VPCLAB_VETH_GRACE": "1s"}})
		n.start()
		ips := map[string]string{}
		for _, c := range []string{"a", "b", "c", "d"} {
			ips[c] = n.mustAdd(c)
			n.podVeth(c)
			for _, r := range [][]string{{"to", ips[c], "lookup", "main", "priority", "512"}, {"from", ips[c], "lookup", "main", "priority", "1536"}} {
				out, err := exec.Command("ip", append([]string{"-n", filepath.Base(n.nsPath), "rule", "add"}, r...)...).CombinedOutput()
				Expect(err).NotTo(HaveOccurred(), string(out))
			}
		}
		// d is deleted the normal way just before ipamd dies: its address
		// is the lowest free one, and cooling.
		_, err := n.del("d")
		Expect(err).NotTo(HaveOccurred())
		n.ipamd.Kill()
		// c is deleted while ipamd is down: its veth goes, no DEL comes.
		out, err := exec.Command("ip", "-n", filepath.Base(n.nsPath), "link", "del", vethname.Host("eni", "default", "pod-c")).CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		time.Sleep(1500 * time.Millisecond) // the allocations are older than VPCLAB_VETH_GRACE
		n.start()
		Expect(n.metric("awscni_assigned_ip_addresses")).To(Equal(2.0), "a and b; c's pod is gone")
		Expect(n.podRules()).NotTo(ContainSubstring(ips["c"]+" "), "c's rules removed")
		Expect(n.podRules()).To(ContainSubstring(ips["a"]+" "), "a's rules kept")
		for i := 0; i < 3; i++ {
			ip := n.mustAdd(fmt.Sprintf("new%d", i))
			Expect(ip).NotTo(BeElementOf(ips["a"], ips["b"]), "a live pod's address")
			Expect(ip).NotTo(BeElementOf(ips["c"], ips["d"]), "released within the cooldown, before the restart")
		}
	})

	It("deletes leaked ENIs (its own and other nodes') after the grace period", func() {
		n := newNode(nodeOpts{env: map[string]string{"VPCLAB_LEAKED_ENI_INTERVAL": "200ms", "VPCLAB_LEAKED_ENI_GRACE": "0s"}})
		leak, err := n.Region.CreateNetworkInterface(model.CreateNetworkInterfaceInput{SubnetID: n.Subnet, Description: "aws-K8S-" + n.inst.ID,
			Tags: model.Tags{ipamd.TagInstanceID: n.inst.ID, ipamd.TagCreatedAt: time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}})
		Expect(err).NotTo(HaveOccurred())
		other, err := n.Region.CreateNetworkInterface(model.CreateNetworkInterfaceInput{SubnetID: n.Subnet, Description: "someone else's"})
		Expect(err).NotTo(HaveOccurred())
		// Left by a node that is gone: any node sweeps it, as the VPC CNI.
		gone, err := n.Region.CreateNetworkInterface(model.CreateNetworkInterfaceInput{SubnetID: n.Subnet, Description: "aws-K8S-i-0gone",
			Tags: model.Tags{ipamd.TagInstanceID: "i-0gone", ipamd.TagCreatedAt: time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}})
		Expect(err).NotTo(HaveOccurred())
		// A branch tagged like the node's ENIs but associated with a trunk
		// on the node is in use (issue 22), not leaked.
		trunk, err := n.Region.CreateNetworkInterface(model.CreateNetworkInterfaceInput{SubnetID: n.Subnet, InterfaceType: "trunk"})
		Expect(err).NotTo(HaveOccurred())
		_, err = n.Region.AttachNetworkInterface(model.AttachNetworkInterfaceInput{ENIID: trunk.ID, InstanceID: n.inst.ID, DeviceIndex: 2})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() string { e, _ := n.Region.NetworkInterface(trunk.ID); return e.Status }, 10*time.Second).Should(Equal("in-use"))
		branch, err := n.Region.CreateNetworkInterface(model.CreateNetworkInterfaceInput{SubnetID: n.Subnet, Description: "aws-K8S-" + n.inst.ID,
			Tags: model.Tags{ipamd.TagInstanceID: n.inst.ID, ipamd.TagCreatedAt: time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}})
		Expect(err).NotTo(HaveOccurred())
		_, err = n.Region.AssociateTrunkInterface(model.AssociateTrunkInput{BranchID: branch.ID, TrunkID: trunk.ID, VlanID: 1})
		Expect(err).NotTo(HaveOccurred())
		n.start()
		Eventually(func() error { _, err := n.Region.NetworkInterface(leak.ID); return err }, 10*time.Second).Should(HaveOccurred())
		Eventually(func() error { _, err := n.Region.NetworkInterface(gone.ID); return err }, 10*time.Second).Should(HaveOccurred(), "another node's leak")
		_, err = n.Region.NetworkInterface(other.ID)
		Expect(err).NotTo(HaveOccurred(), "an ENI not tagged for the node is left alone")
		Consistently(func() error { _, err := n.Region.NetworkInterface(branch.ID); return err }, time.Second, 100*time.Millisecond).
			ShouldNot(HaveOccurred(), "an associated branch is in use, not leaked")
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
		Entry(nil, "VPCLAB_POOL_INTERVAL", "0s"), // a loop's ticker would panic
		Entry(nil, "VPCLAB_SG_SYNC_INTERVAL", "0"),
		Entry(nil, "VPCLAB_RECONCILE_INTERVAL", "0ms"),
		Entry(nil, "AWS_VPC_K8S_CNI_VETHPREFIX", "eth"),
		Entry(nil, "ENABLE_IPv6", "true"),
		Entry(nil, "VPCLAB_CLOCK_SCALE", "0.5"),
	)

	It("runs its own timers faster under VPCLAB_CLOCK_SCALE, loops no shorter than 100 ms", func() {
		c, err := ipamd.LoadConfig(func(k string) (string, bool) {
			v, ok := map[string]string{"VPCLAB_CLOCK_SCALE": "3600", "VPCLAB_LEAKED_ENI_GRACE": "45h"}[k]
			return v, ok
		})
		Expect(err).NotTo(HaveOccurred())
		Expect(c.LeakedENIInterval).To(Equal(time.Second), "1 h")
		Expect(c.LeakedENIGrace).To(Equal(45*time.Second), "45 h")
		Expect(c.PoolInterval).To(Equal(100*time.Millisecond), "5 s, floored")
		Expect(c.IPCooldown).To(Equal(30*time.Second/3600), "30 s")
		Expect(c.ENIAttachWait).To(Equal(50*time.Second), "EC2's time is not scaled")
	})

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
		Expect(c.WarmPrefixTarget).To(Equal(0), "unset, as in the VPC CNI's code")
		Expect(c.PoolWake).To(BeFalse(), "the pool waits for its tick, as the VPC CNI's")
	})

	It("logs a value it cannot use and goes on with the default, as the VPC CNI does; refuses what it cannot run", func() {
		n := newNode(nodeOpts{env: map[string]string{"WARM_IP_TARGET": "x", "ENABLE_MULTI_NIC": "true"}})
		n.start()
		Eventually(func() float64 { return n.metric("awscni_total_ip_addresses") }, 10*time.Second).Should(Equal(9.0), "WARM_ENI_TARGET's default pool")
		Expect(n.logTail()).To(And(ContainSubstring(`WARM_IP_TARGET=\"x\"`), ContainSubstring("using the default")))
		Expect(n.logTail()).To(And(ContainSubstring("ENABLE_MULTI_NIC=true"), ContainSubstring("not supported by vpclab's ipamd")))
		Expect(runOnce(n, "ENABLE_IPv6=true", "ENABLE_IPv4=false")).To(ContainSubstring("IPv6"))
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
		var env map[string]any
		getJSON(n, "http://127.0.0.1:61679/v1/ipamd-env-settings", &env)
		Expect(env).To(Equal(map[string]any{"WARM_IP_TARGET": 0.0, "WARM_ENI_TARGET": 1.0, "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": false,
			"AWS_MANAGE_ENIS_NON_SCHEDULABLE": false, "ENABLE_SUBNET_DISCOVERY": true}), "the VPC CNI's keys, typed")
		var root struct{ AvailableCommands []string }
		getJSON(n, "http://127.0.0.1:61679/no/such/path", &root)
		Expect(root.AvailableCommands).To(ContainElements("/v1/enis", "/v1/eni-configs", "/v1/ipamd-env-settings", "/v1/networkutils-env-settings"))
		resp, err := n.http.Get("http://127.0.0.1:61679/v1/eni-configs")
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusNotFound), "no Kubernetes API: aws-node answers 404")
	})
})

var _ = Describe("the wire protocol", func() {
	It("answers a client that encodes the VPC CNI's messages by field number", func() {
		n := newNode(nodeOpts{})
		n.start()
		// AddNetworkRequest: 1 K8S_POD_NAME, 2 K8S_POD_NAMESPACE,
		// 3 K8S_POD_INFRA_CONTAINER_ID, 4 Netns, 5 IfName, 6 NetworkName,
		// 7 ContainerID, 8 ClientVersion.
		var req []byte
		for _, f := range []struct {
			num protowire.Number
			v   string
		}{{1, "wire"}, {2, "default"}, {3, "cid-wire"}, {4, "/var/run/netns/w"}, {5, "eth0"}, {6, "aws-cni"}, {7, "cid-wire"}} {
			req = protowire.AppendTag(req, f.num, protowire.BytesType)
			req = protowire.AppendString(req, f.v)
		}
		var resp []byte
		err := n.ipamd.Conn.Invoke(context.Background(), "/rpc.CNIBackend/AddNetwork", req, &resp, grpc.ForceCodecV2(rawCodec{}))
		Expect(err).NotTo(HaveOccurred())
		// AddNetworkReply: 1 Success (bool), 2 IPAllocationMetadata
		// {1 IPv4Addr, 3 DeviceNumber, 4 RouteTableId}, 6 VPCv4CIDRs.
		fields := decode(resp)
		Expect(fields[1]).To(ConsistOf(uint64(1)))
		Expect(fields[2]).To(HaveLen(1))
		meta := decode(fields[2][0].([]byte))
		ip := string(meta[1][0].([]byte))
		Expect(mustAddr(ip).Is4()).To(BeTrue())
		Expect(meta[4]).To(ConsistOf(uint64(254)), "device 0 routes via the main table")
		Expect(fields[6]).To(ContainElement([]byte("10.0.0.0/16")))

		// DelNetworkRequest: 7 NetworkName, 8 ContainerID, 6 IfName, 5 Reason.
		var del []byte
		for _, f := range []struct {
			num protowire.Number
			v   string
		}{{1, "wire"}, {2, "default"}, {5, "PodDeleted"}, {6, "eth0"}, {7, "aws-cni"}, {8, "cid-wire"}} {
			del = protowire.AppendTag(del, f.num, protowire.BytesType)
			del = protowire.AppendString(del, f.v)
		}
		err = n.ipamd.Conn.Invoke(context.Background(), "/rpc.CNIBackend/DelNetwork", del, &resp, grpc.ForceCodecV2(rawCodec{}))
		Expect(err).NotTo(HaveOccurred())
		fields = decode(resp)
		Expect(fields[1]).To(ConsistOf(uint64(1)))
		Expect(string(decode(fields[2][0].([]byte))[1][0].([]byte))).To(Equal(ip))

		// The health service, for "" and for aws-node's service name.
		for _, svc := range []string{"", ipamd.HealthService} {
			r, err := healthpb.NewHealthClient(n.ipamd.Conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
			Expect(err).NotTo(HaveOccurred())
			Expect(r.Status).To(Equal(healthpb.HealthCheckResponse_SERVING))
		}
		// A client of another version is refused.
		_, err = n.client.AddNetwork(context.Background(), &rpc.AddNetworkRequest{NetworkName: "aws-cni", ContainerID: "v", IfName: "eth0", ClientVersion: "v0.0.0-other"})
		Expect(status.Code(err)).To(Equal(codes.FailedPrecondition))
	})

	It("programs the node like aws-node: ENI tables, rules, SNAT", func() {
		n := newNode(nodeOpts{})
		n.start()
		n.mustAdd("net1")
		Eventually(func() int { return len(n.enis()) }, 10*time.Second).Should(Equal(2))
		var second model.NetworkInterface
		for _, e := range n.Region.NetworkInterfaces() {
			if e.Attachment != nil && e.Attachment.InstanceID == n.inst.ID && e.Attachment.DeviceIndex == 1 {
				second = e
			}
		}
		ns := filepath.Base(n.nsPath)
		Eventually(func() string { return sh(ns, "ip", "rule") }, 5*time.Second).Should(ContainSubstring("from " + second.PrivateIP.String() + " lookup 2"))
		Expect(sh(ns, "ip", "route", "show", "table", "2")).To(ContainSubstring("default via 10.0.0.1 dev eth1"))
		Expect(sh(ns, "ip", "-4", "addr", "show", "dev", "eth1")).To(ContainSubstring(second.PrivateIP.String() + "/24"))
		Expect(sh(ns, "ip", "rule")).To(ContainSubstring("fwmark 0x80/0x80 lookup main"))
		Expect(sh(ns, "cat", "/proc/sys/net/ipv4/conf/eth0/rp_filter")).To(Equal("2\n"))
		Expect(sh(ns, "cat", "/proc/sys/net/ipv4/tcp_early_demux")).To(Equal("1\n"))
		snat := sh(ns, "iptables", "-w", "-t", "nat", "-S", "AWS-SNAT-CHAIN-0")
		Expect(snat).To(ContainSubstring("-d 10.0.0.0/16"))
		Expect(snat).To(ContainSubstring("--to-source " + n.inst.PrivateIP.String()))
		Expect(sh(ns, "iptables", "-w", "-t", "nat", "-S", "POSTROUTING")).To(ContainSubstring("-j AWS-SNAT-CHAIN-0"))
	})

	It("gives every managed ENI the primary ENI's security groups at start-up and whenever IMDS shows them changed, as the VPC CNI", func() {
		n := newNode(nodeOpts{env: map[string]string{"VPCLAB_SG_SYNC_INTERVAL": "300ms"}})
		groupCalls := func() int {
			return len(n.Server.Audit().Events(ec2query.EventFilter{Action: "ModifyNetworkInterfaceAttribute"}))
		}
		n.start()
		Expect(groupCalls()).To(Equal(1), "the primary ENI, at start-up (the VPC CNI's first look finds every group new)")
		Consistently(groupCalls, time.Second, 100*time.Millisecond).Should(Equal(1), "unchanged groups: no more calls")
		n.mustAdd("net1")
		Eventually(func() int { return len(n.enis()) }, 10*time.Second).Should(Equal(2))
		var primary, second string
		for _, e := range n.Region.NetworkInterfaces() {
			if e.Attachment != nil && e.Attachment.InstanceID == n.inst.ID {
				if e.Attachment.DeviceIndex == 0 {
					primary = e.ID
				} else {
					second = e.ID
				}
			}
		}
		sg, err := n.Region.CreateSecurityGroup(model.CreateSecurityGroupInput{VPCID: n.VPC, Name: "web", Description: "web"})
		Expect(err).NotTo(HaveOccurred())
		groups := func(id string) []string {
			for _, e := range n.Region.NetworkInterfaces() {
				if e.ID == id {
					return e.SecurityGroups
				}
			}
			return nil
		}
		want := append(slices.Clone(groups(primary)), sg.ID)
		Expect(n.Region.ModifyNetworkInterfaceAttribute(model.ModifyNetworkInterfaceInput{ENIID: primary, SecurityGroups: want})).To(Succeed())
		Eventually(func() []string { return groups(second) }, 10*time.Second, 100*time.Millisecond).Should(ConsistOf(want), "the second ENI follows the primary's groups")
	})

	It("routes AWS_EXTERNAL_SERVICE_CIDRS by the main table (priority 1535), replacing the rules a previous run left there", func() {
		n := newNode(nodeOpts{env: map[string]string{"AWS_EXTERNAL_SERVICE_CIDRS": "203.0.113.0/24, 198.51.100.7/32"}})
		ns := filepath.Base(n.nsPath)
		sh(ns, "ip", "rule", "add", "to", "192.0.2.0/24", "lookup", "main", "priority", "1535") // a stale one
		n.start()
		var rules []string
		for _, l := range strings.Split(sh(ns, "ip", "rule"), "\n") {
			if strings.HasPrefix(l, "1535:") {
				rules = append(rules, strings.Join(strings.Fields(l), " "))
			}
		}
		Expect(rules).To(ConsistOf("1535: from all to 203.0.113.0/24 lookup main", "1535: from all to 198.51.100.7 lookup main"))
		var env map[string]any
		getJSON(n, "http://127.0.0.1:61679/v1/networkutils-env-settings", &env)
		Expect(env["AWS_EXTERNAL_SERVICE_CIDRS"]).To(Equal([]any{"203.0.113.0/24", "198.51.100.7/32"}))
	})

	It("tags the managed ENIs it finds at start-up with what they lack (one CreateTags, sorted keys), as the VPC CNI; nothing missing, no call", func() {
		n := newNode(nodeOpts{env: map[string]string{"CLUSTER_NAME": "lab", "ADDITIONAL_ENI_TAGS": `{"team":"net"}`}})
		tagCalls := func() []ec2query.Record { return n.Server.Audit().Events(ec2query.EventFilter{Action: "CreateTags"}) }
		n.start()
		Expect(tagCalls()).To(HaveLen(1))
		var primary model.NetworkInterface
		for _, e := range n.Region.NetworkInterfaces() {
			if e.Attachment != nil && e.Attachment.InstanceID == n.inst.ID && e.Attachment.DeviceIndex == 0 {
				primary = e
			}
		}
		Expect(primary.Tags).To(And(HaveKeyWithValue("node.k8s.amazonaws.com/instance_id", n.inst.ID), HaveKeyWithValue("cluster.k8s.amazonaws.com/name", "lab"),
			HaveKeyWithValue("eks:eni:owner", "amazon-vpc-cni"), HaveKeyWithValue("team", "net")))
		n.ipamd.Kill()
		n.start()
		Expect(tagCalls()).To(HaveLen(1), "a restart finds the tags there")
	})

	It("turns TCP early demux off with DISABLE_TCP_EARLY_DEMUX, as aws-node's init container", func() {
		n := newNode(nodeOpts{env: map[string]string{"DISABLE_TCP_EARLY_DEMUX": "true"}})
		ns := filepath.Base(n.nsPath)
		Expect(sh(ns, "cat", "/proc/sys/net/ipv4/tcp_early_demux")).To(Equal("1\n"), "a new namespace starts with it on")
		n.start()
		Expect(sh(ns, "cat", "/proc/sys/net/ipv4/tcp_early_demux")).To(Equal("0\n"))
	})
})

// rawCodec passes bytes through, so the test encodes messages itself.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// decode splits a protobuf message into fields: varints as uint64,
// length-delimited values as []byte.
func decode(b []byte) map[protowire.Number][]any {
	out := map[protowire.Number][]any{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		Expect(n).To(BeNumerically(">", 0))
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			out[num] = append(out[num], v)
			b = b[m:]
		case protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			out[num] = append(out[num], v)
			b = b[m:]
		default:
			Fail(fmt.Sprintf("unexpected wire type %v", typ))
		}
	}
	return out
}

func sh(ns string, args ...string) string {
	out, _ := labtest.InNetns(ns, args...)
	return out
}

var _ = Describe("reconciliation with IMDS", func() {
	It("adopts addresses EC2 added and drops those it removed", func() {
		n := newNode(nodeOpts{env: map[string]string{"VPCLAB_RECONCILE_INTERVAL": "300ms"}})
		n.start()
		Eventually(func() float64 { return n.metric("awscni_total_ip_addresses") }, 10*time.Second).Should(Equal(9.0))
		primary, err := n.Region.NetworkInterface(n.inst.PrimaryENI)
		Expect(err).NotTo(HaveOccurred())
		// Someone else takes one address away from the primary ENI...
		assigns := len(n.Server.Audit().Events(ec2query.EventFilter{Action: "AssignPrivateIpAddresses"}))
		Expect(n.Region.UnassignPrivateIPs(primary.ID, primary.SecondaryIPs[8:], nil)).To(Succeed())
		Eventually(func() float64 { return n.sumMetric("awscni_reconcile_count", "eniIPPoolReconcileDel") }, 10*time.Second).Should(BeNumerically(">=", 1))
		// The pool noticed the loss: it asks EC2 for a replacement.
		Eventually(func() int {
			return len(n.Server.Audit().Events(ec2query.EventFilter{Action: "AssignPrivateIpAddresses"}))
		}, 10*time.Second).Should(BeNumerically(">", assigns))
		// ...and the pool refills to its target from EC2.
		Eventually(func() float64 { return n.metric("awscni_total_ip_addresses") }, 10*time.Second).Should(Equal(9.0))
		Expect(n.sumMetric("awscni_reconcile_count", "eniIPPoolReconcileDel")).To(BeNumerically(">=", 1))
	})
})
