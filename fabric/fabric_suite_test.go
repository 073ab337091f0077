package fabric_test

import (
	"os"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

func TestFabric(t *testing.T) {
	if name := os.Getenv(childEnv); name != "" {
		runChild(name) // never returns
	}
	if os.Geteuid() != 0 {
		t.Fatal("the fabric tests need root (network namespaces)")
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "fabric")
}
