package e2e_test

import (
	"crypto/rand"
	"os"
	"os/exec"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
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
	dir, err := os.MkdirTemp("", "e2e-bin")
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
	return "e" + string(b)
}
