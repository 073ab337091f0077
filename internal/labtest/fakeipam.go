package labtest

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/vpclab/vpclab/ipamd/rpc"
)

// FakeIPAM is a CNIBackend with no EC2 behind it: it hands out the
// addresses it was given, on device Device (route table Device+1 when not
// the primary ENI), so the plugin's datapath can be tested without a
// region, as the reference plugins test against a fake IPAM.
type FakeIPAM struct {
	rpc.UnimplementedCNIBackendServer
	// Device is the ENI device number every address is on.
	Device int32
	// VPCCIDRs are returned on ADD.
	VPCCIDRs []string

	mu sync.Mutex
	// Branches answers pods (by name) with a branch ENI, as ipamd does for
	// a pod the VPC Resource Controller annotated; set before their ADD.
	Branches map[string]BranchPod
	free     []string
	held     map[string]string // IPAM key -> address
	Adds     int
	Dels     int
	Fails    int // ADDs refused for want of an address
}

// ServeFakeIPAM serves a FakeIPAM (with the gRPC health service, as ipamd
// does) on a unix socket until the spec ends.
func ServeFakeIPAM(t TB, socket string, addrs ...string) *FakeIPAM {
	t.Helper()
	f := &FakeIPAM{free: append([]string(nil), addrs...), held: map[string]string{}, VPCCIDRs: []string{"10.0.0.0/16"}}
	_ = os.Remove(socket)
	ln, err := net.Listen("unix", socket)
	must(t, err, "listen")
	s := grpc.NewServer()
	rpc.RegisterCNIBackendServer(s, f)
	healthpb.RegisterHealthServer(s, health.NewServer())
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return f
}

// BranchPod is a branch ENI answer for one pod (security groups for pods).
type BranchPod struct {
	IP            string
	VlanID        int32
	MAC           string
	SubnetGW      string
	ParentIfIndex int32
}

// SetBranch makes ADDs of the named pod answer with a branch ENI.
func (f *FakeIPAM) SetBranch(pod string, b BranchPod) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Branches == nil {
		f.Branches = map[string]BranchPod{}
	}
	f.Branches[pod] = b
}

// pod runs fn on the address held for a pod (held false if none) under
// f's lock, after counting the call in *calls.
func (f *FakeIPAM) pod(calls *int, network, container, ifname string, fn func(k, ip string, held bool)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	*calls++
	k := network + "/" + container + "/" + ifname
	ip, held := f.held[k]
	fn(k, ip, held)
}

func (f *FakeIPAM) meta(ip string) []*rpc.IPAllocationMetadata {
	return []*rpc.IPAllocationMetadata{{IPv4Addr: ip, DeviceNumber: f.Device, RouteTableId: f.Device + 1}}
}

// AddNetwork hands out the next address (the same one again for the same
// pod, as ipamd does).
func (f *FakeIPAM) AddNetwork(_ context.Context, r *rpc.AddNetworkRequest) (*rpc.AddNetworkReply, error) {
	reply := &rpc.AddNetworkReply{}
	f.pod(&f.Adds, r.NetworkName, r.ContainerID, r.IfName, func(k, ip string, held bool) {
		if b, ok := f.Branches[r.K8S_POD_NAME]; ok {
			reply = &rpc.AddNetworkReply{Success: true, VPCv4CIDRs: f.VPCCIDRs, PodVlanId: b.VlanID, PodENIMAC: b.MAC, PodENISubnetGW: b.SubnetGW, ParentIfIndex: b.ParentIfIndex,
				IPAllocationMetadata: []*rpc.IPAllocationMetadata{{IPv4Addr: b.IP, DeviceNumber: -1}}}
			return
		}
		if !held {
			if len(f.free) == 0 {
				f.Fails++
				return
			}
			ip, f.free = f.free[0], f.free[1:]
			f.held[k] = ip
		}
		reply = &rpc.AddNetworkReply{Success: true, VPCv4CIDRs: f.VPCCIDRs, IPAllocationMetadata: f.meta(ip)}
	})
	return reply, nil
}

// DelNetwork releases the pod's address; an unknown pod gets ipamd's error.
func (f *FakeIPAM) DelNetwork(_ context.Context, r *rpc.DelNetworkRequest) (*rpc.DelNetworkReply, error) {
	var reply *rpc.DelNetworkReply
	f.pod(&f.Dels, r.NetworkName, r.ContainerID, r.IfName, func(k, ip string, held bool) {
		if held {
			delete(f.held, k)
			f.free = append(f.free, ip)
			reply = &rpc.DelNetworkReply{Success: true, IPAllocationMetadata: f.meta(ip)}
		}
	})
	if reply == nil {
		return nil, errors.New("datastore: unknown pod")
	}
	return reply, nil
}

// Held returns how many addresses are handed out.
func (f *FakeIPAM) Held() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.held)
}
