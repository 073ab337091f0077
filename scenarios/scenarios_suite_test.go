package scenarios_test

import (
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"strings"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

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
	dir, err := os.MkdirTemp("", "scenario-bin")
	Expect(err).NotTo(HaveOccurred())
	out, err := exec.Command("go", "build", "-o", dir+"/", "../cmd/ipamd", "../cmd/aws-cni", "../cmd/aws-vpc-cni").CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))
	return []byte(dir)
}, func(b []byte) { binDir = string(b) })

func labName() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	const alpha = "abcdefghijklmnopqrstuvwxyz0123456789"
	for i := range b {
		b[i] = alpha[int(b[i])%len(alpha)]
	}
	return "s" + string(b)
}

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
