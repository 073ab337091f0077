package scenarios_test

import (
	"context"
	"os"
	"strings"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/internal/testutil"
	"github.com/vpclab/vpclab/scenarios"
)

func TestScenarios(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("scenarios need root")
	}
	RegisterFailHandler(Fail)
	suite, reporter := GinkgoConfiguration()
	if suite.LabelFilter == "" {
		suite.LabelFilter = "!slow" // the chaos soak runs only when asked for
	}
	RunSpecs(t, "scenarios", suite, reporter)
}

var binDir string

var _ = SynchronizedBeforeSuite(func() []byte {
	dir, err := testutil.Build("ipamd", "aws-cni", "aws-vpc-cni")
	Expect(err).NotTo(HaveOccurred())
	return []byte(dir)
}, func(b []byte) { binDir = string(b) })

func labName() string { return testutil.Name("s", 7) }

var _ = Describe("scenarios", func() {
	for _, s := range scenarios.Builtin {
		It(s.Name, Label(s.Labels...), func() {
			r := scenarios.Runner{BinDir: binDir, Log: func(f string, a ...any) { GinkgoWriter.Printf(f+"\n", a...) }}
			res := r.Run(context.Background(), s, labName())
			if !res.Passed {
				AddReportEntry("lab state, ipamd logs and events", res.Dump)
			}
			Expect(res.Failures).To(BeEmpty(), strings.Join(res.Failures, "\n")+"\n"+res.Dump)
		})
	}
})
