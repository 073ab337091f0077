package scenarios_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/lab"
)

// The chaos soak: random faults, throttling and ipamd crashes over 2,000
// pod add/delete cycles, with the invariants checked after every phase.
// Run it with: go test ./scenarios/ -ginkgo.label-filter=slow -timeout 60m
var _ = Describe("chaos soak", Label("slow", "chaos"), func() {
	It("keeps every invariant over 2,000 pod cycles with faults, throttling and ipamd crashes", func() {
		ctx := context.Background()
		cfg := lab.Config{Name: labName(), BinDir: *bins, VPCCIDR: "10.0.0.0/16",
			Subnets: []lab.SubnetConfig{{Name: "a", CIDR: "10.0.0.0/24"}},
			Nodes:   []lab.NodeConfig{{Name: "node", InstanceType: "m5.large", Count: 2}},
			Env: map[string]string{"VPCLAB_POOL_INTERVAL": "100ms", "VPCLAB_DECREASE_INTERVAL": "200ms", "VPCLAB_MIN_ENI_LIFETIME": "0s",
				"VPCLAB_IP_COOLDOWN": "200ms", "VPCLAB_INSUFFICIENT_CIDR_COOLDOWN": "500ms", "WARM_IP_TARGET": "2", "MINIMUM_IP_TARGET": "4"}}
		l, err := lab.New(ctx, cfg, nil)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(l.Close()).To(Succeed()) })
		rng := rand.New(rand.NewPCG(2026, 11))
		type live struct {
			n *lab.Node
			p *lab.Pod
		}
		var pods []live
		start := time.Now()
		cycles, failedAdds, windows, restarts := 0, 0, 0, 0
		for phase := 0; phase < 10; phase++ {
			switch rng.IntN(3) {
			case 0:
				_, err := l.Faults().Add(faults.Rule{Action: "Assign*", Code: "RequestLimitExceeded", Probability: 0.5, For: model.Duration(3 * time.Second)})
				Expect(err).NotTo(HaveOccurred())
				windows++
			case 1:
				_, err := l.Faults().Add(faults.Rule{Action: "*NetworkInterface", Code: "InternalError", Probability: 0.3, For: model.Duration(3 * time.Second)})
				Expect(err).NotTo(HaveOccurred())
				windows++
			case 2:
				n := l.Nodes()[rng.IntN(2)]
				Expect(n.RestartIpamd(ctx)).To(Succeed())
				restarts++
			}
			for c := 0; c < 200; c++ {
				cycles++
				n := l.Nodes()[rng.IntN(2)]
				p, err := n.AddPod(ctx, "chaos", fmt.Sprintf("c%d", cycles))
				if err != nil {
					failedAdds++
				} else {
					pods = append(pods, live{n, p})
				}
				if len(pods) > 20 || (len(pods) > 0 && rng.IntN(2) == 0) {
					i := rng.IntN(len(pods))
					Expect(pods[i].n.DelPod(ctx, pods[i].p)).To(Succeed())
					pods = append(pods[:i], pods[i+1:]...)
				}
			}
			l.Faults().Clear()
			Expect(l.CheckInvariants(ctx)).To(Succeed(), "after phase %d", phase)
		}
		AddReportEntry("chaos figures", fmt.Sprintf("cycles %d, failed adds (retried by nobody) %d, fault windows %d, ipamd restarts %d, EC2 errors %d, duration %s",
			cycles, failedAdds, windows, restarts, len(l.Events(ec2query.EventFilter{ErrorsOnly: true})), time.Since(start).Round(time.Second)))
		GinkgoWriter.Printf("CHAOS cycles=%d failedAdds=%d faults=%d restarts=%d ec2Errors=%d duration=%s\n",
			cycles, failedAdds, windows, restarts, len(l.Events(ec2query.EventFilter{ErrorsOnly: true})), time.Since(start).Round(time.Second))
	})
})
