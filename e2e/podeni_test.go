package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/vlan"
	"github.com/vpclab/vpclab/lab"
	"github.com/vpclab/vpclab/lab/k8s"
)

var _ = Describe("Kubernetes mode: security groups for pods with the real VPC Resource Controller", Label("kubernetes", "pod-eni", "security-groups"), func() {
	It("gives a pod a SecurityGroupPolicy selects a branch ENI on its node's trunk, filtered by the policy's group (strict mode: even from the same node); throttled branch creation recovers; the branch goes with the pod; 9 per m5.large", func() {
		Expect(k8s.Built()).To(Succeed())
		Expect(k8s.BuiltRC()).To(Succeed())
		cfg := lab.Default()
		cfg.Name, cfg.BinDir = labName(), *bins
		cfg.Nodes[0].Count, cfg.Nodes[0].InstanceType = 1, "m5.large"
		cfg.Kubernetes = &lab.KubernetesConfig{SecurityGroupsForPods: true}
		l, err := lab.New(context.Background(), cfg, GinkgoWriter.Printf)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(l.Close()).To(Succeed()) })
		r, node := l.Region(), l.Nodes()[0]

		// ipamd asks for a trunk (CNINode), the controller attaches one and
		// advertises m5.large's 9 branch ENIs.
		Eventually(func() string {
			out, _ := l.Kubectl(context.Background(), nil, "get", "node", node.KubeName(), "-o", `jsonpath={.status.allocatable.vpc\.amazonaws\.com/pod-eni}`)
			return string(out)
		}).WithTimeout(2 * time.Minute).WithPolling(time.Second).Should(Equal("9"))

		cidr := netip.MustParsePrefix(l.Config().VPCCIDR)
		g, err := r.CreateSecurityGroup(model.CreateSecurityGroupInput{VPCID: l.VPCID(), Name: "pods", Description: "branch pods"})
		Expect(err).NotTo(HaveOccurred())
		rules, err := r.AuthorizeRules(g.ID, false, []model.SGRule{{Protocol: "tcp", FromPort: 8080, ToPort: 8080, CIDR: cidr}})
		Expect(err).NotTo(HaveOccurred())
		apply(l, policy(g.ID)+"---\n"+sgpPod("sgp")+fmt.Sprintf(`---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: %s, imagePullPolicy: Never, command: [sleep, "3600"]}]
`, k8s.AgnhostImage))
		kubectl(l, "wait", "--for=condition=Ready", "pod/sgp", "pod/client", "--timeout=180s")

		// The controller's webhook injected the resource and its annotation
		// names a branch ENI that EC2 has, with the policy's group, on the
		// node's trunk at the annotation's VLAN.
		Expect(kubectl(l, "get", "pod", "sgp", "-o", `jsonpath={.spec.containers[0].resources.limits.vpc\.amazonaws\.com/pod-eni}`)).To(Equal("1"))
		var ann []struct {
			ENIID     string `json:"eniId"`
			IfAddress string `json:"ifAddress"`
			PrivateIP string `json:"privateIp"`
			VlanID    int    `json:"vlanId"`
		}
		Expect(json.Unmarshal([]byte(kubectl(l, "get", "pod", "sgp", "-o", `jsonpath={.metadata.annotations.vpc\.amazonaws\.com/pod-eni}`)), &ann)).To(Succeed())
		Expect(ann).To(HaveLen(1))
		Expect(kubectl(l, "get", "pod", "sgp", "-o", "jsonpath={.status.podIP}")).To(Equal(ann[0].PrivateIP))
		branch, err := r.NetworkInterface(ann[0].ENIID)
		Expect(err).NotTo(HaveOccurred())
		Expect(branch.InterfaceType).To(Equal("branch"))
		Expect(branch.SecurityGroups).To(Equal([]string{g.ID}))
		Expect(branch.MAC).To(Equal(ann[0].IfAddress))
		var assoc model.TrunkAssociation
		for _, t := range r.TrunkAssociations() {
			if t.BranchID == branch.ID {
				assoc = t
			}
		}
		Expect(assoc.VlanID).To(Equal(ann[0].VlanID))
		trunk, err := r.NetworkInterface(assoc.TrunkID)
		Expect(err).NotTo(HaveOccurred())
		Expect(trunk.InterfaceType).To(Equal("trunk"))
		Expect(trunk.Attachment).NotTo(BeNil())
		Expect(trunk.Attachment.InstanceID).To(Equal(node.Instance.ID))

		Expect(l.CheckInvariants(context.Background())).To(Succeed(), "EC2 == controller == node for the branch pod")

		// The policy's group admits 8080 from the VPC; without the rule the
		// client on the same node is dropped at the branch ENI.
		connect := func() error {
			_, err := l.Kubectl(context.Background(), nil, "exec", "client", "--", "/agnhost", "connect", ann[0].PrivateIP+":8080", "--timeout", "2s")
			return err
		}
		Eventually(connect).WithTimeout(30 * time.Second).WithPolling(time.Second).Should(Succeed())
		_, err = r.RevokeRules(g.ID, false, nil, []string{rules[0].ID})
		Expect(err).NotTo(HaveOccurred())
		Expect(connect()).NotTo(Succeed())
		drops, err := l.Fabric().Drops()
		Expect(err).NotTo(HaveOccurred())
		Expect(drops[branch.ID].Inbound).To(BeNumerically(">", 0))

		// Branch creation throttled for 5 s: the controller retries and the
		// pod runs once EC2 answers again.
		_, err = l.Faults().Add(faults.Rule{Action: "CreateNetworkInterface", Code: "RequestLimitExceeded", For: model.Duration(5 * time.Second)})
		Expect(err).NotTo(HaveOccurred())
		apply(l, sgpPod("sgp-throttled"))
		kubectl(l, "wait", "--for=condition=Ready", "pod/sgp-throttled", "--timeout=180s")
		Expect(l.Events(ec2query.EventFilter{Action: "CreateNetworkInterface", ErrorCode: "RequestLimitExceeded"})).NotTo(BeEmpty(), "the controller met the throttle")
		Expect(kubectl(l, "get", "pod", "sgp-throttled", "-o", `jsonpath={.metadata.annotations.vpc\.amazonaws\.com/pod-eni}`)).To(ContainSubstring(`"vlanId"`))

		// Deleting the pods releases their branches: the controller deletes
		// them after its cool-down.
		var throttledAnn []struct {
			ENIID string `json:"eniId"`
		}
		Expect(json.Unmarshal([]byte(kubectl(l, "get", "pod", "sgp-throttled", "-o", `jsonpath={.metadata.annotations.vpc\.amazonaws\.com/pod-eni}`)), &throttledAnn)).To(Succeed())
		kubectl(l, "delete", "pod", "sgp", "sgp-throttled", "--wait=true")
		for _, id := range []string{branch.ID, throttledAnn[0].ENIID} {
			Eventually(func() error { _, err := r.NetworkInterface(id); return err }).WithTimeout(3*time.Minute).WithPolling(2*time.Second).
				Should(MatchError(ContainSubstring("NotFound")), "branch ENI %s is deleted", id)
		}
		Expect(l.CheckInvariants(context.Background())).To(Succeed())

		// m5.large takes 9 branch ENIs: of 10 pods the policy selects, 9 run
		// on 9 VLANs of the trunk and the 10th waits for the resource the
		// controller advertises.
		apply(l, strings.Replace(deployment("sgps", 10, ""), "labels: {app: sgps}", "labels: {app: sgps, role: sgp}", 1))
		Eventually(func() int {
			n := 0
			for _, p := range podsOf(l, "sgps") {
				if p.Phase == "Running" && p.PodENI != "" {
					n++
				}
			}
			return n
		}).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(Equal(9))
		Consistently(func() int { return len(running9(l)) }).WithTimeout(3 * time.Second).Should(Equal(9))
		Expect(kubectl(l, "get", "events", "--field-selector", "reason=FailedScheduling")).To(ContainSubstring("Insufficient vpc.amazonaws.com/pod-eni"))
		vlans := map[int]bool{}
		for _, t := range r.TrunkAssociations() {
			if t.TrunkID == trunk.ID {
				vlans[t.VlanID] = true
			}
		}
		Expect(vlans).To(HaveLen(9), "9 branch ENIs on 9 VLANs of the trunk")
		Expect(l.CheckInvariants(context.Background())).To(Succeed())
	})
})

// running9 lists the running pods of the sgps deployment.
func running9(l *lab.Lab) []lab.KubePod {
	var out []lab.KubePod
	for _, p := range podsOf(l, "sgps") {
		if p.Phase == "Running" {
			out = append(out, p)
		}
	}
	return out
}

var _ = Describe("Kubernetes mode: security groups for pods with the real VPC CNI", Label("kubernetes", "pod-eni", "upstream"), func() {
	It("upstream aws-node (ENABLE_POD_ENI) and the real controller agree: the CNINode feature, the trunk, the branch and its annotation; upstream's plugin then needs 8021q (this kernel lacks it: the sandbox fails at the VLAN link)", func() {
		Expect(k8s.Built()).To(Succeed())
		Expect(k8s.BuiltRC()).To(Succeed())
		_, err := buildUpstream()
		Expect(err).NotTo(HaveOccurred())
		cfg := lab.Default()
		cfg.Name, cfg.BinDir, cfg.CNI = labName(), *bins, upstream
		cfg.Nodes[0].Count, cfg.Nodes[0].InstanceType = 1, "m5.large"
		cfg.Kubernetes = &lab.KubernetesConfig{SecurityGroupsForPods: true}
		l, err := lab.New(context.Background(), cfg, GinkgoWriter.Printf)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(l.Close()).To(Succeed()) })
		node := l.Nodes()[0]
		Eventually(func() string {
			out, _ := l.Kubectl(context.Background(), nil, "get", "cninode", node.KubeName(), "-o", "jsonpath={.spec.features[*].name}")
			return string(out)
		}).WithTimeout(2*time.Minute).WithPolling(time.Second).Should(ContainSubstring("SecurityGroupsForPods"), "upstream ipamd asks for a trunk")
		Eventually(func() string {
			out, _ := l.Kubectl(context.Background(), nil, "get", "node", node.KubeName(), "-o", `jsonpath={.status.allocatable.vpc\.amazonaws\.com/pod-eni}`)
			return string(out)
		}).WithTimeout(2 * time.Minute).WithPolling(time.Second).Should(Equal("9"))
		g, err := l.Region().CreateSecurityGroup(model.CreateSecurityGroupInput{VPCID: l.VPCID(), Name: "pods", Description: "branch pods"})
		Expect(err).NotTo(HaveOccurred())
		apply(l, policy(g.ID)+"---\n"+sgpPod("sgp"))
		Eventually(func() string {
			return kubectl(l, "get", "pod", "sgp", "-o", `jsonpath={.metadata.annotations.vpc\.amazonaws\.com/pod-eni}`)
		}).WithTimeout(2 * time.Minute).WithPolling(time.Second).Should(ContainSubstring(`"vlanId"`))
		if vlan.HasKernelVLAN() {
			kubectl(l, "wait", "--for=condition=Ready", "pod/sgp", "--timeout=180s")
			return
		}
		// Upstream ipamd answers its plugin with the branch (it gets as far
		// as the VLAN link), and the plugin's real VLAN link is what this
		// kernel cannot make.
		Eventually(func() string {
			return kubectl(l, "get", "events", "--field-selector", "involvedObject.name=sgp,reason=FailedCreatePodSandBox")
		}).WithTimeout(2 * time.Minute).WithPolling(2 * time.Second).Should(ContainSubstring("vlan"))
	})
})

// policy is a SecurityGroupPolicy giving pods labelled role=sgp the group.
func policy(group string) string {
	return fmt.Sprintf(`apiVersion: vpcresources.k8s.aws/v1beta1
kind: SecurityGroupPolicy
metadata: {name: pods, namespace: default}
spec:
  podSelector: {matchLabels: {role: sgp}}
  securityGroups: {groupIds: [%s]}
`, group)
}

// sgpPod is agnhost's HTTP server on 8080 in a pod labelled role=sgp.
func sgpPod(name string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, labels: {role: sgp}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: web, image: %s, imagePullPolicy: Never, args: [netexec, --http-port=8080]}]
`, name, k8s.AgnhostImage)
}
