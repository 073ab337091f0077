package e2e_test

import (
	"os"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/internal/testutil"
)

func TestE2E(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("e2e needs root")
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "e2e")
}

var binDir string

var _ = SynchronizedBeforeSuite(func() []byte {
	dir, err := testutil.Build("ipamd", "aws-cni", "aws-vpc-cni")
	Expect(err).NotTo(HaveOccurred())
	return []byte(dir)
}, func(b []byte) { binDir = string(b) })

func labName() string { return testutil.Name("e", 7) }
