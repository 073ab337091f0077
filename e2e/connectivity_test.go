package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/fakeec2/imds"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/lab"
)

// imdsToken does the IMDSv2 PUT from inside a namespace.
func imdsToken(nsPath string) (string, error) {
	n, err := ns.GetNS(nsPath)
	if err != nil {
		return "", err
	}
	defer n.Close()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: netx.DialContextIn(n), DisableKeepAlives: true}}
	req, _ := http.NewRequest(http.MethodPut, "http://"+fabric.IMDSAddr+"/latest/api/token", nil)
	req.Header.Set(imds.TokenTTLHeader, "60")
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), nil
}

var _ = Describe("connectivity matrix", func() {
	It("pod↔pod on a node and across nodes, pod→VPC host, pod→internet, node→IMDS, pod→IMDS blocked at hop limit 1", func() {
		ctx := context.Background()
		cfg := lab.Default()
		cfg.Name, cfg.BinDir = labName(), *bins
		cfg.Env = map[string]string{"VPCLAB_POOL_INTERVAL": "100ms"}
		l, err := lab.New(ctx, cfg, GinkgoWriter.Printf)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(l.Close()).To(Succeed()) })
		n1, n2 := l.Node("node-1"), l.Node("node-2")
		a, err := n1.AddPod(ctx, "default", "a")
		Expect(err).NotTo(HaveOccurred())
		b, err := n1.AddPod(ctx, "default", "b")
		Expect(err).NotTo(HaveOccurred())
		c, err := n2.AddPod(ctx, "default", "c")
		Expect(err).NotTo(HaveOccurred())
		host, err := l.Region().RunInstances(model.RunInstancesInput{InstanceType: "t3.small", SubnetID: l.Region().Subnets()[0].ID})
		Expect(err).NotTo(HaveOccurred())
		Expect(l.CheckInvariants(ctx)).To(Succeed())

		Expect(a.Ping(ctx, b.IP.String())).To(Succeed(), "pod↔pod same node")
		Expect(b.Ping(ctx, a.IP.String())).To(Succeed())
		Expect(a.Ping(ctx, c.IP.String())).To(Succeed(), "pod↔pod across nodes")
		Expect(c.Ping(ctx, a.IP.String())).To(Succeed())
		Expect(c.Ping(ctx, host[0].PrivateIP.String())).To(Succeed(), "pod→VPC host")
		Expect(a.Ping(ctx, fabric.InternetHostAddr)).To(Succeed(), "pod→internet through SNAT and the NAT gateway")

		tok, err := imdsToken(n1.NetNS())
		Expect(err).NotTo(HaveOccurred(), "node→IMDS")
		Expect(tok).NotTo(BeEmpty())
		_, err = imdsToken(a.NetNS())
		Expect(err).To(HaveOccurred(), "pod→IMDS token must fail at hop limit 1")
		Expect(l.Region().SetMetadataOptions(n1.Instance.ID, model.MetadataOptions{HopLimit: 2})).To(Succeed())
		_, err = imdsToken(a.NetNS())
		Expect(err).NotTo(HaveOccurred(), "pod→IMDS token works at hop limit 2")
	})
})
