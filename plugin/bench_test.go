package plugin_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpclab/vpclab/internal/labtest"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/internal/vlan"
)

func pctl(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func msf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// benchPlugin measures ADD and DEL through libcni for pods pods in the node
// namespace node with the given conflist.
func benchPlugin(b *testing.B, node ns.NetNS, cni *libcni.CNIConfig, list *libcni.NetworkConfigList, prefix string, pods int) (adds, dels []time.Duration) {
	var rts []*libcni.RuntimeConf
	for i := 0; i < pods; i++ {
		name := fmt.Sprintf("%s-%d", prefix, i)
		if err := exec.Command("ip", "netns", "add", name).Run(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = netx.DeleteNamed(name) })
		rts = append(rts, &libcni.RuntimeConf{ContainerID: "cid-" + name, NetNS: netx.Path(name), IfName: "eth0",
			Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", name}, {"K8S_POD_INFRA_CONTAINER_ID", "cid-" + name}}})
	}
	ctx := context.Background()
	for _, rt := range rts {
		t0 := time.Now()
		if err := node.Do(func(ns.NetNS) error { _, err := cni.AddNetworkList(ctx, list, rt); return err }); err != nil {
			b.Fatalf("%s ADD %s: %v", list.Name, rt.ContainerID, err)
		}
		adds = append(adds, time.Since(t0))
	}
	for _, rt := range rts {
		t0 := time.Now()
		if err := node.Do(func(ns.NetNS) error { return cni.DelNetworkList(ctx, list, rt) }); err != nil {
			b.Fatalf("%s DEL %s: %v", list.Name, rt.ContainerID, err)
		}
		dels = append(dels, time.Since(t0))
	}
	return adds, dels
}

// BenchmarkPlugin compares aws-cni (with ipamd, warm pool) to the
// reference ptp + host-local plugins doing the same job (a veth per pod, a
// /32 route each way), over 200 pods each, on one node, in one run.
func BenchmarkPlugin(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("needs root")
	}
	bin, err := labtest.Build("ipamd", "aws-cni", labtest.RefPlugins)
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(bin)
	const pods = 200
	for range b.N {
		w := labtest.NewWorld(b, "pb", labtest.WorldOptions{Seed: 17, SubnetCIDR: "10.0.0.0/20", VLAN: vlan.BPF{}})
		inst := w.Launch(b, "m5.4xlarge")
		_, nsName, ns := w.Namespace(b, inst)
		dir := b.TempDir()
		sock := labtest.StartIpamd(b, nsName, filepath.Join(bin, "ipamd"), dir, "AWS_VPC_K8S_CNI_LOGLEVEL=info", "WARM_IP_TARGET=10", "MINIMUM_IP_TARGET=210", "VPCLAB_POOL_INTERVAL=100ms").Socket()
		name := w.Name
		// Warm pool: wait until ipamd holds the minimum.
		deadline := time.Now().Add(60 * time.Second)
		for {
			n := 0
			for _, e := range w.Region.NetworkInterfaces() {
				if e.Attachment != nil && e.Attachment.InstanceID == inst.ID {
					n += len(e.SecondaryIPs)
				}
			}
			if n >= 210 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("warm pool only %d addresses", n)
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(time.Second) // let IMDS-based setup of the last ENI finish

		awsList, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"aws-cni","plugins":[{"type":"aws-cni","name":"aws-cni","vethPrefix":"eni","mtu":"9001","ipamdSocket":%q}]}`, sock)))
		if err != nil {
			b.Fatal(err)
		}
		awsCNI := libcni.NewCNIConfigWithCacheDir([]string{bin}, filepath.Join(dir, "cache-aws"), nil)
		ptpList, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"ptp","plugins":[{"type":"ptp","ipMasq":false,"mtu":9001,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.200.0.0/16"}]],"dataDir":%q}}]}`, filepath.Join(dir, "hl"))))
		if err != nil {
			b.Fatal(err)
		}
		// ptp and host-local from the CNI plugins module version go.mod pins.
		ptpCNI := libcni.NewCNIConfigWithCacheDir([]string{filepath.Join(bin, labtest.RefPlugins)}, filepath.Join(dir, "cache-ptp"), nil)

		awsAdd, awsDel := benchPlugin(b, ns, awsCNI, awsList, name+"-a", pods)
		ptpAdd, ptpDel := benchPlugin(b, ns, ptpCNI, ptpList, name+"-r", pods)
		fmt.Printf("BENCH aws_cni_add_p50 %.2f ms\n", msf(pctl(awsAdd, 0.5)))
		fmt.Printf("BENCH aws_cni_add_p99 %.2f ms\n", msf(pctl(awsAdd, 0.99)))
		fmt.Printf("BENCH aws_cni_del_p50 %.2f ms\n", msf(pctl(awsDel, 0.5)))
		fmt.Printf("BENCH aws_cni_del_p99 %.2f ms\n", msf(pctl(awsDel, 0.99)))
		fmt.Printf("BENCH ptp_host_local_add_p50 %.2f ms\n", msf(pctl(ptpAdd, 0.5)))
		fmt.Printf("BENCH ptp_host_local_add_p99 %.2f ms\n", msf(pctl(ptpAdd, 0.99)))
		fmt.Printf("BENCH ptp_host_local_del_p50 %.2f ms\n", msf(pctl(ptpDel, 0.5)))
		fmt.Printf("BENCH ptp_host_local_del_p99 %.2f ms\n", msf(pctl(ptpDel, 0.99)))
		fmt.Printf("BENCH add_p50_ratio_vs_ptp %.2f\n", float64(pctl(awsAdd, 0.5))/float64(pctl(ptpAdd, 0.5)))
		fmt.Printf("BENCH del_p50_ratio_vs_ptp %.2f\n", float64(pctl(awsDel, 0.5))/float64(pctl(ptpDel, 0.5)))
	}
}
