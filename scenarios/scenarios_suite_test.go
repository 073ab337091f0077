package scenarios_test

import (
	"bytes"
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/internal/labtest"
	"github.com/vpclab/vpclab/lab"
	"github.com/vpclab/vpclab/scenarios"
)

func TestScenarios(t *testing.T) {
	suite, reporter := GinkgoConfiguration()
	if suite.LabelFilter == "" {
		suite.LabelFilter = "!slow" // the chaos soak runs only when asked for
	}
	labtest.Suite(t, "scenarios", true, suite, reporter)
}

var bins = labtest.Binaries("ipamd", "aws-cni", "aws-vpc-cni", "egress-cni", labtest.RefPlugins)

func labName() string { return labtest.Name("s", 7) }

var upstream = lab.CNI{Kind: lab.CNIUpstream, Version: lab.UpstreamVersion}

var _ = Describe("scenarios", func() {
	spec := func(text string, s scenarios.Scenario, cni lab.CNI, labels []string) {
		e := scenarioPool.add(s, cni, "scenarios "+text, labels)
		It(text, Label(labels...), func() { report(scenarioPool.result(e), &e.log) })
	}
	for _, s := range scenarios.Builtin {
		if s.AppliesTo(lab.CNI{}) { // an upstream-only one pins a bug vpclab's ipamd does not have
			spec(s.Name, s, lab.CNI{}, s.Labels)
		}
		if s.AppliesTo(upstream) {
			spec(s.Name+" — the real VPC CNI "+lab.UpstreamVersion, s, upstream, append(slices.Clone(s.Labels), "upstream"))
		}
	}
})

// report prints a scenario run's progress and fails the spec with its
// failures.
func report(res scenarios.Result, log *bytes.Buffer) {
	GinkgoHelper()
	GinkgoWriter.Print(log.String())
	GinkgoWriter.Printf("scenario ran %s\n", res.Duration.Round(100*time.Millisecond))
	if !res.Passed {
		AddReportEntry("lab state, ipamd logs and events", res.Dump)
	}
	Expect(res.Failures).To(BeEmpty(), strings.Join(res.Failures, "\n")+"\n"+res.Dump)
}

var _ = Describe("scenario diff", Label("upstream"), func() {
	It("compares vpclab's CNI with the real one step by step, every column filled", func() {
		s := scenarios.Builtin[slices.IndexFunc(scenarios.Builtin, func(s scenarios.Scenario) bool { return s.Name == "max pods t3.nano" })]
		_, err := lab.BuildCNI(context.Background(), upstream, GinkgoWriter.Printf)
		Expect(err).NotTo(HaveOccurred())
		runs := scenarios.Diff(context.Background(), s, []lab.CNI{{Kind: lab.CNIVpclab}, upstream}, *bins, GinkgoWriter.Printf)
		Expect(runs).To(HaveLen(2))
		var out bytes.Buffer
		Expect(scenarios.WriteDiff(&out, runs)).To(Succeed())
		AddReportEntry("diff", out.String())
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		Expect(lines[0]).To(MatchRegexp(`^scenario: max pods t3\.nano +vpclab +upstream@` + regexp.QuoteMeta(lab.UpstreamVersion) + `$`))
		rows := map[string][]string{}
		for _, l := range lines[1:] {
			cells := regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(l), -1)
			Expect(cells).To(HaveLen(3), "a label and one cell per CNI: %q", l)
			Expect(cells[1:]).NotTo(ContainElement("-"), "both columns filled: %q", l)
			rows[cells[0]] = cells[1:]
		}
		Expect(rows).To(HaveKey("1. 3 pods: 2 fit"))
		Expect(rows["pods / failed adds"]).To(Equal([]string{"2 / 1", "2 / 1"}))
		Expect(rows).To(HaveKey("EC2 calls mutating / describe"))
		Expect(rows["verdict"][0]).To(HavePrefix("PASS"))
		Expect(rows["verdict"][1]).To(HavePrefix("PASS"))
		Expect(runs[1].Steps[0].Calls).NotTo(BeEmpty(), "the real VPC CNI's EC2 calls recorded")
	})
})
