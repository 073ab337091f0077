package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/lab"
)

// labStatus reads vpclab status -o json.
func labStatus(name string) lab.Status {
	GinkgoHelper()
	var s lab.Status
	out := mustCLI("status", "-o", "json", "--name", name)
	Expect(json.Unmarshal([]byte(out), &s)).To(Succeed(), out)
	return s
}

// awsCLI runs Debian's AWS CLI v2 against a lab's EC2 endpoint.
func awsCLI(s lab.Status, args ...string) []byte {
	GinkgoHelper()
	cmd := exec.Command("/usr/bin/aws", append([]string{"--endpoint-url", s.EC2Endpoint, "--region", s.Region, "--output", "json", "ec2"}, args...)...)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=x", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_PAGER=")
	b, err := cmd.Output()
	Expect(err).NotTo(HaveOccurred(), "aws ec2 %v: %s", args, b)
	return b
}

var _ = Describe("reproducing an incident by hand", Label("cli"), func() {
	It("pods add --retry: a burst succeeds where single attempts fail, a DEL after every failed ADD; --count/--prefix and --parallel", func() {
		name := suiteLabName()
		DeferCleanup(func() { vl("down", "--name", name); vl("gc", "--name", name) })
		mustCLI("up", "--name", name, "--nodes", "1", "--instance-type", "m5.large", "--env", "WARM_IP_TARGET=1", "--env", "MINIMUM_IP_TARGET=1")
		// The pool holds one spare address, and EC2 throttles the calls
		// that would grow it: most of a burst's single attempts fail.
		mustCLI("faults", "add", "--action", "AssignPrivateIpAddresses", "--code", "RequestLimitExceeded", "--count", "4", "--name", name)
		mustCLI("faults", "add", "--action", "CreateNetworkInterface", "--code", "RequestLimitExceeded", "--count", "2", "--name", name)
		code, out, errs := vl("pods", "add", "--count", "8", "--prefix", "once", "--parallel", "8", "--name", name)
		Expect(code).To(Equal(1), out+errs)
		Expect(out).To(ContainSubstring("FAILED"))
		Expect(errs).To(MatchRegexp(`\d of 8 pods not added`))
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			Expect(l).To(MatchRegexp(`^default/once-\d(: FAILED: .*| on node: [0-9.]+)$`))
		}

		out = mustCLI("pods", "add", "--count", "8", "--prefix", "kube/retry", "--parallel", "4", "--retry", "90s", "--name", name)
		Expect(out).To(ContainSubstring("attempt 1 failed (DEL done), retrying in 100ms"))
		added := 0
		var retried []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if regexp.MustCompile(`^kube/retry-\d on node: [0-9.]+$`).MatchString(l) {
				added++
			} else {
				Expect(l).To(MatchRegexp(`^kube/retry-\d: attempt \d+ failed \(DEL done\), retrying in [0-9.]+m?s: `))
				retried = append(retried, strings.SplitN(l, ":", 2)[0])
			}
		}
		Expect(added).To(Equal(8), out)
		// The plugin log on the node shows a DEL for every pod whose ADD failed.
		log := mustCLI("exec", "--node", "node", "--name", name, "--", "cat", "/var/log/aws-routed-eni/plugin.log")
		for _, p := range slices.Compact(retried) {
			Expect(log).To(MatchRegexp(`"msg":"DEL[^"]*".*"pod":"`+p+`"|"pod":"`+p+`".*"msg":"DEL`), "a DEL for %s", p)
		}
		code, _, errs = vl("pods", "add", "--count", "3", "--name", name)
		Expect(code).To(Equal(2))
		Expect(errs).To(ContainSubstring("--count and --prefix go together"))
		code, _, errs = vl("pods", "add", "a", "--parallel", "0", "--name", name)
		Expect(code).To(Equal(2))
		Expect(errs).To(ContainSubstring("--parallel 0: want 1..64"))
		mustCLI("down", "--name", name)
		expectClean(name)
	})

	It("vpclab imds reads what ipamd reads; status marks an ENI while IMDS lags EC2 and clears it after; only delayed calls carry vpclab.imdsVisibleAt", func() {
		name := suiteLabName()
		DeferCleanup(func() { vl("down", "--name", name); vl("gc", "--name", name) })
		mustCLI("up", "--name", name, "--nodes", "1", "--instance-type", "t3.medium", "--env", "WARM_IP_TARGET=2")
		mustCLI("pods", "add", "default/a", "--retry", "30s", "--name", name)
		s := labStatus(name)
		n := s.Nodes[0]
		Expect(strings.TrimSpace(mustCLI("imds", "node", "meta-data/local-ipv4", "--name", name))).To(Equal(n.PrivateIP))

		// Quiet, ipamd's datastore and IMDS agree, ENI by ENI.
		Eventually(func() map[string][]string {
			return imdsENIs(name)
		}, 30*time.Second, 500*time.Millisecond).Should(Equal(ipamdENIs(name)))

		before := len(events(name, ""))
		mustCLI("faults", "add", "--action", "AssignPrivateIpAddresses", "--imds-lag", "10s", "--name", name)
		primary := n.ENIs[0].ID
		var assigned struct {
			AssignedPrivateIpAddresses []struct{ PrivateIpAddress string }
		}
		Expect(json.Unmarshal(awsCLI(s, "assign-private-ip-addresses", "--network-interface-id", primary, "--secondary-private-ip-address-count", "2"), &assigned)).To(Succeed())
		Expect(assigned.AssignedPrivateIpAddresses).To(HaveLen(2))
		var want []string
		for _, a := range assigned.AssignedPrivateIpAddresses {
			want = append(want, a.PrivateIpAddress)
		}
		// During the lag: the primary ENI's row says what IMDS lacks.
		row := labStatus(name).Nodes[0].ENIs[0]
		Expect(row.ID).To(Equal(primary))
		Expect(row.IMDS).NotTo(BeNil())
		Expect(row.IMDS.Missing).To(ContainElements(want))
		Expect(mustCLI("status", "--name", name)).To(ContainSubstring("missing " + strings.Join(row.IMDS.Missing, ",")))
		// …and disappears once it has passed.
		Eventually(func() *lab.IMDSDiff { return labStatus(name).Nodes[0].ENIs[0].IMDS }, 40*time.Second, 500*time.Millisecond).Should(BeNil())
		Expect(mustCLI("imds", "node", "meta-data/network/interfaces/macs/"+imdsMAC(name, primary)+"/local-ipv4s", "--name", name)).To(ContainSubstring(want[0]))

		recs := events(name, "")
		var mine *ec2query.Record
		for i, r := range recs {
			if i < before {
				Expect(r.VPCLab).To(BeNil(), "call %s before the fault was not delayed", r.EventName)
			}
			if r.EventName == "AssignPrivateIpAddresses" && r.Param("networkInterfaceId") == primary && strings.HasPrefix(r.UserAgent, "aws-cli") {
				mine = &recs[i]
			}
		}
		Expect(mine).NotTo(BeNil())
		Expect(mine.VPCLab).NotTo(BeNil(), "the out-of-band assign was delayed in IMDS")
		Expect(mine.VPCLab.IMDSInstances).To(Equal([]string{n.InstanceID}))
		Expect(mine.VPCLab.IMDSFaults).To(Equal([]string{"fault-1"}))
		Expect(time.Duration(mine.VPCLab.IMDSLag)).To(BeNumerically(">=", 10*time.Second))
		Expect(mustCLI("events", "-o", "table", "--action", "AssignPrivateIpAddresses", "--name", name)).To(MatchRegexp(`imds \+10s`))

		var rules []faults.Rule
		Expect(json.Unmarshal([]byte(mustCLI("faults", "list", "-o", "json", "--name", name)), &rules)).To(Succeed())
		Expect(rules[0].Delayed).To(ContainElement("AssignPrivateIpAddresses " + primary + " on " + n.InstanceID))
		Expect(mustCLI("faults", "list", "--name", name)).To(ContainSubstring("LAST DELAYED"))

		code, _, errs := vl("imds", "node", "../../etc", "--name", name)
		Expect(code).To(Equal(2), errs)
		Expect(errs).To(ContainSubstring("want a path below /latest/"))
		code, _, errs = vl("imds", "nosuchnode", "--name", name)
		Expect(code).To(Equal(2), errs)
		mustCLI("down", "--name", name)
		expectClean(name)
	})
})

// events reads vpclab events -o json (action "" for all).
func events(name, action string) []ec2query.Record {
	GinkgoHelper()
	args := []string{"events", "-o", "json", "--name", name}
	if action != "" {
		args = append(args, "--action", action)
	}
	var recs []ec2query.Record
	for _, l := range strings.Split(strings.TrimSpace(mustCLI(args...)), "\n") {
		var r ec2query.Record
		Expect(json.Unmarshal([]byte(l), &r)).To(Succeed(), l)
		recs = append(recs, r)
	}
	return recs
}

// imdsMAC finds an ENI's MAC in the node's IMDS.
func imdsMAC(name, eni string) string {
	GinkgoHelper()
	for _, mac := range strings.Fields(mustCLI("imds", "node", "meta-data/network/interfaces/macs/", "--name", name)) {
		mac = strings.TrimSuffix(mac, "/")
		if strings.TrimSpace(mustCLI("imds", "node", "meta-data/network/interfaces/macs/"+mac+"/interface-id", "--name", name)) == eni {
			return mac
		}
	}
	Fail("ENI " + eni + " not in the node's IMDS")
	return ""
}

// imdsENIs is the node's IMDS through vpclab imds: ENI id -> its secondary
// addresses as /32s (local-ipv4s without the primary), sorted.
func imdsENIs(name string) map[string][]string {
	GinkgoHelper()
	out := map[string][]string{}
	for _, mac := range strings.Fields(mustCLI("imds", "node", "meta-data/network/interfaces/macs/", "--name", name)) {
		base := "meta-data/network/interfaces/macs/" + strings.TrimSuffix(mac, "/") + "/"
		id := strings.TrimSpace(mustCLI("imds", "node", base+"interface-id", "--name", name))
		ips := strings.Fields(mustCLI("imds", "node", base+"local-ipv4s", "--name", name))
		out[id] = []string{}
		for _, a := range ips[1:] {
			out[id] = append(out[id], a+"/32")
		}
		sort.Strings(out[id])
	}
	return out
}

// ipamdENIs is the node's ipamd datastore (its introspection API): ENI id
// -> its address CIDRs, sorted.
func ipamdENIs(name string) map[string][]string {
	GinkgoHelper()
	var v struct {
		ENIs map[string]struct {
			ID                 string
			AvailableIPv4Cidrs map[string]any
		}
	}
	raw := mustCLI("exec", "--node", "node", "--name", name, "--", "curl", "-s", "http://127.0.0.1:61679/v1/enis")
	var cards map[string]json.RawMessage
	Expect(json.Unmarshal([]byte(raw), &cards)).To(Succeed(), raw)
	card := cards["0"] // per network card (v1.20 on), or the one card at the top
	if _, old := cards["ENIs"]; old {
		card = json.RawMessage(raw)
	}
	Expect(json.Unmarshal(card, &v)).To(Succeed(), raw)
	out := map[string][]string{}
	for _, e := range v.ENIs {
		out[e.ID] = []string{}
		for c := range e.AvailableIPv4Cidrs {
			out[e.ID] = append(out[e.ID], c)
		}
		sort.Strings(out[e.ID])
	}
	return out
}
