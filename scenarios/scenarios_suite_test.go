package scenarios_test

import (
	"context"
	"strings"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/internal/labtest"
	"github.com/vpclab/vpclab/scenarios"
)

func TestScenarios(t *testing.T) {
	suite, reporter := GinkgoConfiguration()
	if suite.LabelFilter == "" {
		suite.LabelFilter = "!slow" // the chaos soak runs only when asked for
	}
	labtest.Suite(t, "scenarios", true, suite, reporter)
}

var bins = labtest.Binaries("ipamd", "aws-cni", "aws-vpc-cni", labtest.RefPlugins)

func labName() string { return labtest.Name("s", 7) }

var _ = Describe("scenarios", func() {
	for _, s := range scenarios.Builtin {
		It(s.Name, Label(s.Labels...), func() {
			r := scenarios.Runner{BinDir: *bins, Log: func(f string, a ...any) { GinkgoWriter.Printf(f+"\n", a...) }}
			res := r.Run(context.Background(), s, labName())
			if !res.Passed {
				AddReportEntry("lab state, ipamd logs and events", res.Dump)
			}
			Expect(res.Failures).To(BeEmpty(), strings.Join(res.Failures, "\n")+"\n"+res.Dump)
		})
	}
})
