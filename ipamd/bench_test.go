package ipamd_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/internal/labtest"
	"github.com/vpclab/vpclab/internal/vlan"
	"github.com/vpclab/vpclab/ipamd/rpc"
)

// benchNode is a node with ipamd, set up without Ginkgo.
type benchNode struct {
	srv    *fakeec2.Server
	client rpc.CNIBackendClient
}

func startBenchNode(b *testing.B, bin string, env ...string) *benchNode {
	b.Helper()
	w := labtest.NewWorld(b, "ib", labtest.WorldOptions{Seed: 5, SubnetCIDR: "10.0.0.0/20", VLAN: vlan.BPF{}})
	_, ns, _ := w.Namespace(b, w.Launch(b, "m5.large"))
	p := labtest.StartIpamd(b, ns, bin, b.TempDir(), append([]string{"AWS_VPC_K8S_CNI_LOGLEVEL=info"}, env...)...)
	return &benchNode{srv: w.Server, client: rpc.NewCNIBackendClient(p.Conn)}
}

func (n *benchNode) add(id string) error {
	r, err := n.client.AddNetwork(context.Background(), &rpc.AddNetworkRequest{K8S_POD_NAME: id, K8S_POD_NAMESPACE: "default", NetworkName: "aws-cni", ContainerID: id, IfName: "eth0"})
	if err == nil && !r.Success {
		err = fmt.Errorf("AddNetwork %s: no address", id)
	}
	return err
}

func (n *benchNode) del(id string) error {
	_, err := n.client.DelNetwork(context.Background(), &rpc.DelNetworkRequest{K8S_POD_NAME: id, K8S_POD_NAMESPACE: "default", NetworkName: "aws-cni", ContainerID: id, IfName: "eth0", Reason: "PodDeleted"})
	return err
}

// mutatingCalls counts EC2 calls other than Describe*.
func (n *benchNode) mutatingCalls() int {
	c := 0
	for _, r := range n.srv.Audit().Events(ec2query.EventFilter{}) {
		if !r.ReadOnly {
			c++
		}
	}
	return c
}

func pct(d []time.Duration, p float64) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// BenchmarkIPAMD prints AddNetwork/DelNetwork latency over gRPC with a warm
// pool, and EC2 calls per 100 pod churn cycles at default settings next to
// WARM_IP_TARGET=1 (the throttling trade-off).
func BenchmarkIPAMD(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("needs root")
	}
	dir, err := labtest.Build("ipamd")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "ipamd")
	for range b.N {
		n := startBenchNode(b, bin, "VPCLAB_IP_COOLDOWN=0s", "VPCLAB_POOL_INTERVAL=100ms")
		time.Sleep(500 * time.Millisecond) // warm pool in place
		var adds, dels []time.Duration
		for i := 0; i < 500; i++ {
			id := fmt.Sprintf("lat%d", i)
			t0 := time.Now()
			if err := n.add(id); err != nil {
				b.Fatal(err)
			}
			adds = append(adds, time.Since(t0))
			t0 = time.Now()
			if err := n.del(id); err != nil {
				b.Fatal(err)
			}
			dels = append(dels, time.Since(t0))
		}
		fmt.Printf("BENCH ipamd_add_network_p50 %.3f ms\n", ms(pct(adds, 0.5)))
		fmt.Printf("BENCH ipamd_add_network_p99 %.3f ms\n", ms(pct(adds, 0.99)))
		fmt.Printf("BENCH ipamd_del_network_p50 %.3f ms\n", ms(pct(dels, 0.5)))
		fmt.Printf("BENCH ipamd_del_network_p99 %.3f ms\n", ms(pct(dels, 0.99)))

		// Churn: 100 cycles of one pod added and deleted, 100 ms apart,
		// with the pool timers scaled down 100x (5 s tick → 50 ms, 30 s
		// decrease spacing and IP cooldown → 300 ms).
		churn := func(env ...string) (calls, failedAdds int) {
			n := startBenchNode(b, bin, append([]string{"VPCLAB_POOL_INTERVAL=50ms", "VPCLAB_DECREASE_INTERVAL=300ms", "VPCLAB_IP_COOLDOWN=300ms", "VPCLAB_MIN_ENI_LIFETIME=600ms"}, env...)...)
			time.Sleep(time.Second)
			before := n.mutatingCalls()
			for i := 0; i < 100; i++ {
				id := fmt.Sprintf("churn%d", i)
				// A failed ADD is retried, as kubelet would, until the pool
				// catches up (with WARM_IP_TARGET=1 the only free address
				// may still be cooling down).
				deadline := time.Now().Add(5 * time.Second)
				for n.add(id) != nil {
					failedAdds++
					if time.Now().After(deadline) {
						b.Fatalf("AddNetwork %s: no address for 5s", id)
					}
					time.Sleep(20 * time.Millisecond)
				}
				time.Sleep(50 * time.Millisecond)
				if err := n.del(id); err != nil {
					b.Fatal(err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			return n.mutatingCalls() - before, failedAdds
		}
		def, defFail := churn()
		warm1, warm1Fail := churn("WARM_IP_TARGET=1")
		fmt.Printf("BENCH ipamd_ec2_calls_per_100_churn_default %d calls\n", def)
		fmt.Printf("BENCH ipamd_ec2_calls_per_100_churn_warm_ip_target_1 %d calls\n", warm1)
		fmt.Printf("BENCH ipamd_failed_adds_per_100_churn_default %d\n", defFail)
		fmt.Printf("BENCH ipamd_failed_adds_per_100_churn_warm_ip_target_1 %d\n", warm1Fail)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
