package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/lab"
	"github.com/vpclab/vpclab/lab/k8s"
)

var _ = Describe("vpclab up --kubernetes", Label("kubernetes"), func() {
	It("runs README's quick start: pods of a Deployment get VPC addresses; kubectl, image import and status work; pods add is refused; down leaves nothing", func() {
		Expect(k8s.Built()).To(Succeed(), "make kubernetes")
		name := suiteLabName()
		DeferCleanup(func() { _, _, _ = vl("down", "--name", name) })
		out := mustCLI("up", "--kubernetes", "--nodes", "1", "--name", name)
		Expect(out).To(ContainSubstring("1 nodes Ready, aws-node (vpclab) running"))
		mustCLI("kubectl", "--name", name, "create", "deployment", "web", "--image", k8s.AgnhostImage, "--replicas", "3", "--", "/agnhost", "netexec")
		var st lab.Status
		Expect(json.Unmarshal([]byte(mustCLI("status", "-o", "json", "--name", name)), &st)).To(Succeed())
		Expect(st.Kubeconfig).To(HaveSuffix("admin.conf"))
		vpcAddr := regexp.MustCompile(`\b(192\.168\.\d+\.\d+)\s+ip-192-168-\d+-\d+\.us-west-2\.compute\.internal\b`)
		Eventually(func() int {
			_, out, _ := vl("kubectl", "get", "pods", "-l", "app=web", "-o", "wide", "--name", name)
			if strings.Count(out, "Running") != 3 {
				return -1
			}
			return len(vpcAddr.FindAllString(out, -1))
		}).WithTimeout(2*time.Minute).WithPolling(time.Second).Should(Equal(3), "kubectl get pods -o wide shows three Running pods with VPC addresses")
		Eventually(func() int {
			var st lab.Status
			Expect(json.Unmarshal([]byte(mustCLI("status", "-o", "json", "--name", name)), &st)).To(Succeed())
			return len(st.Nodes[0].Pods) // the API's pods with addresses of their own: web ×3, CoreDNS
		}).WithTimeout(30 * time.Second).Should(Equal(4))

		mustCLI("image", "import", k8s.ImageTar("pause"), "--name", name)
		code, _, errs := vl("image", "import", "/nonexistent.tar", "--name", name)
		Expect(code).To(Equal(2))
		Expect(errs).To(ContainSubstring(`"/nonexistent.tar": not a file`))
		code, _, errs = vl("pods", "add", "default/x", "--name", name)
		Expect(code).NotTo(Equal(0))
		Expect(errs).To(ContainSubstring("kubectl"))
		mustCLI("down", "--name", name)
		expectClean(name)
	})

	It("kubectl against a lab that is not a Kubernetes lab says so, exit 2", func() {
		name := suiteLabName()
		DeferCleanup(func() { _, _, _ = vl("down", "--name", name) })
		mustCLI("up", "--nodes", "1", "--name", name)
		code, _, errs := vl("kubectl", "get", "nodes", "--name", name)
		Expect(code).To(Equal(2))
		Expect(errs).To(ContainSubstring("is not a Kubernetes lab (vpclab up --kubernetes)"))
		mustCLI("down", "--name", name)
	})
})
