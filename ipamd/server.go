package ipamd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/vpclab/vpclab/internal/vethname"
	"github.com/vpclab/vpclab/ipamd/rpc"
)

// HealthService is the service name aws-node marks SERVING (the empty
// service "" is SERVING too, which is what grpc-health-probe asks).
const HealthService = "grpc.health.v1.aws-node"

type servers struct {
	grpc  *grpc.Server
	https []*http.Server
}

func (s *servers) stop() {
	s.grpc.Stop()
	for _, h := range s.https {
		_ = h.Close()
	}
}

// startServers opens the gRPC socket (and TCP listener), metrics and
// introspection.
func (d *Daemon) startServers(ctx context.Context) (*servers, error) {
	s := &servers{grpc: grpc.NewServer()}
	rpc.RegisterCNIBackendServer(s.grpc, &cniBackend{d: d})
	rpc.RegisterConfigServerBackendServer(s.grpc, &configBackend{d: d})
	hs := health.NewServer()
	hs.SetServingStatus(HealthService, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s.grpc, hs)

	if err := os.MkdirAll(filepath.Dir(d.c.SocketPath), 0o755); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if err := os.Remove(d.c.SocketPath); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("remove stale socket %s: %w", d.c.SocketPath, err)
	}
	ul, err := net.Listen("unix", d.c.SocketPath)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", d.c.SocketPath, err)
	}
	if err := os.Chmod(d.c.SocketPath, 0o660); err != nil {
		ul.Close()
		return nil, fmt.Errorf("chmod %s: %w", d.c.SocketPath, err)
	}
	go func() { _ = s.grpc.Serve(ul) }()
	if d.c.TCPAddr != "" {
		tl, err := net.Listen("tcp", d.c.TCPAddr)
		if err != nil {
			s.stop()
			return nil, fmt.Errorf("listen on %s: %w", d.c.TCPAddr, err)
		}
		go func() { _ = s.grpc.Serve(tl) }()
	}
	if !d.c.DisableMetrics {
		mux := http.NewServeMux()
		prom := promhttp.HandlerFor(d.m.reg, promhttp.HandlerOpts{})
		// The pool's gauges are read from the datastore at each scrape, so
		// they stay true while the pool manager is blocked (a long EC2 call,
		// a back-off) between its ticks.
		mux.Handle("/metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			d.updateMetrics()
			prom.ServeHTTP(w, r)
		}))
		if err := d.serveHTTP(s, d.c.MetricsAddr, mux); err != nil {
			s.stop()
			return nil, err
		}
	}
	if !d.c.DisableIntrospection {
		if err := d.serveHTTP(s, d.c.IntrospectionAddr, d.introspection()); err != nil {
			s.stop()
			return nil, err
		}
	}
	return s, nil
}

func (d *Daemon) serveHTTP(s *servers, addr string, h http.Handler) error {
	network := "tcp"
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", p
		_ = os.Remove(p)
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	hs := &http.Server{Handler: h, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	s.https = append(s.https, hs)
	go func() { _ = hs.Serve(ln) }()
	return nil
}

// cniBackend implements rpc.CNIBackend.
type cniBackend struct {
	rpc.UnimplementedCNIBackendServer
	d *Daemon
}

func (b *cniBackend) vpcCIDRs() []string {
	var out []string
	for _, p := range b.d.vpcCIDRs {
		out = append(out, p.String())
	}
	if !b.d.c.ExternalSNAT {
		for _, p := range b.d.c.ExcludeSNATCIDRs {
			out = append(out, p.String())
		}
	}
	return out
}

// AddNetwork assigns the pod an address (idempotently).
func (b *cniBackend) AddNetwork(ctx context.Context, in *rpc.AddNetworkRequest) (*rpc.AddNetworkReply, error) {
	d := b.d
	d.m.addReq.Inc()
	if in.ClientVersion != Version {
		return nil, status.Errorf(codes.FailedPrecondition, "wrong client version %q (ipamd is %q)", in.ClientVersion, Version)
	}
	reply := &rpc.AddNetworkReply{UseExternalSNAT: d.c.ExternalSNAT, VPCv4CIDRs: b.vpcCIDRs(), NetworkPolicyMode: d.c.NetworkPolicyMode}
	key := IPAMKey{NetworkName: in.NetworkName, ContainerID: in.ContainerID, IfName: in.IfName}
	if !key.valid() {
		d.log.Warn("AddNetwork without a full IPAM key", "key", key)
		return reply, nil
	}
	if d.branchReply(ctx, in, reply) {
		return reply, nil
	}
	addr, eni, err := d.ds.AssignPodIP(key, IPAMMetadata{K8SPodNamespace: in.K8S_POD_NAMESPACE, K8SPodName: in.K8S_POD_NAME, InterfacesCount: 1})
	defer d.podWake()
	if err != nil {
		if errors.Is(err, ErrNoAvailableIP) {
			d.m.noAvailableIP.Inc()
			d.log.Warn("AddNetwork: no available IP addresses", "pod", in.K8S_POD_NAMESPACE+"/"+in.K8S_POD_NAME, "condition", d.poolCondition())
			return reply, nil
		}
		d.m.ipamdErr.WithLabelValues("AddNetwork").Inc()
		return nil, err
	}
	reply.IPAllocationMetadata = []*rpc.IPAllocationMetadata{{IPv4Addr: addr.String(), DeviceNumber: int32(eni.DeviceNumber), RouteTableId: int32(eni.RouteTableID)}}
	if d.c.AnnotatePodIP && d.kube != nil {
		// As the VPC CNI: a failed annotation fails the ADD; the address
		// stays the pod's until the kubelet's DEL.
		if err := d.annotatePodIP(ctx, in.K8S_POD_NAMESPACE, in.K8S_POD_NAME, addr.String(), ""); err != nil {
			d.log.Error("AddNetwork: the pod's address annotation", "pod", in.K8S_POD_NAMESPACE+"/"+in.K8S_POD_NAME, "err", err)
			return reply, nil
		}
	}
	reply.Success = true
	d.log.Info("AddNetwork", "pod", in.K8S_POD_NAMESPACE+"/"+in.K8S_POD_NAME, "ip", addr.String(), "eni", eni.ID, "device", eni.DeviceNumber)
	return reply, nil
}

// DelNetwork releases the pod's address into cooldown.
func (b *cniBackend) DelNetwork(ctx context.Context, in *rpc.DelNetworkRequest) (*rpc.DelNetworkReply, error) {
	d := b.d
	d.m.delReq.WithLabelValues(in.Reason).Inc()
	if in.ClientVersion != Version {
		return nil, status.Errorf(codes.FailedPrecondition, "wrong client version %q (ipamd is %q)", in.ClientVersion, Version)
	}
	key := IPAMKey{NetworkName: in.NetworkName, ContainerID: in.ContainerID, IfName: in.IfName}
	addr, eni, err := d.ds.UnassignPodIP(key)
	if errors.Is(err, ErrUnknownPod) {
		// Pre-1.12 CRI backfill placeholders, as the VPC CNI retries.
		addr, eni, err = d.ds.UnassignPodIP(IPAMKey{NetworkName: "_migrated-from-cri", ContainerID: in.ContainerID, IfName: "unknown"})
	}
	if errors.Is(err, ErrUnknownPod) {
		// An allocation recovered from the pod's host route, by its veth.
		veth := vethname.Host(d.c.VethPrefix, in.K8S_POD_NAMESPACE, in.K8S_POD_NAME)
		addr, eni, err = d.ds.UnassignPodIP(IPAMKey{NetworkName: RecoveredNetwork, ContainerID: veth, IfName: "eth0"})
	}
	if errors.Is(err, ErrUnknownPod) {
		if reply, handled, berr := d.branchDelReply(ctx, in); handled {
			return reply, berr
		}
	}
	if err != nil {
		if errors.Is(err, ErrUnknownPod) {
			return nil, fmt.Errorf("%w: %s/%s (container %s)", ErrUnknownPod, in.K8S_POD_NAMESPACE, in.K8S_POD_NAME, in.ContainerID)
		}
		d.m.ipamdErr.WithLabelValues("DelNetwork").Inc()
		return nil, err
	}
	d.podWake()
	if d.c.AnnotatePodIP && d.kube != nil {
		// The address is released whatever the API says; a stale
		// annotation is only logged (the VPC CNI fails the DEL too, and its
		// plugin then tears down from prevResult).
		if err := d.annotatePodIP(ctx, in.K8S_POD_NAMESPACE, in.K8S_POD_NAME, "", addr.String()); err != nil {
			d.log.Warn("DelNetwork: the pod's address annotation", "pod", in.K8S_POD_NAMESPACE+"/"+in.K8S_POD_NAME, "err", err)
		}
	}
	d.log.Info("DelNetwork", "pod", in.K8S_POD_NAMESPACE+"/"+in.K8S_POD_NAME, "ip", addr.String(), "reason", in.Reason)
	return &rpc.DelNetworkReply{Success: true, NetworkPolicyMode: d.c.NetworkPolicyMode,
		IPAllocationMetadata: []*rpc.IPAllocationMetadata{{IPv4Addr: addr.String(), DeviceNumber: int32(eni.DeviceNumber), RouteTableId: int32(eni.RouteTableID)}}}, nil
}

type configBackend struct {
	rpc.UnimplementedConfigServerBackendServer
	d *Daemon
}

// GetNetworkPolicyConfigs answers the network-policy agent.
func (c *configBackend) GetNetworkPolicyConfigs(context.Context, *emptypb.Empty) (*rpc.NetworkPolicyAgentConfigReply, error) {
	return &rpc.NetworkPolicyAgentConfigReply{NetworkPolicyMode: c.d.c.NetworkPolicyMode, NodeIPv4: c.d.primaryIP.String(), InstanceID: c.d.instanceID, Region: c.d.cloud.region}, nil
}

// poolCondition summarises why the pool may be short, for logs and
// introspection.
func (d *Daemon) poolCondition() string {
	room := d.hasRoomForENI() // takes mu itself
	d.mu.Lock()
	defer d.mu.Unlock()
	var parts []string
	if time.Now().Before(d.insufficientUntil) {
		parts = append(parts, "subnet out of addresses (scale-up paused)")
	}
	if time.Now().Before(d.backoffUntil) {
		if d.backoffClass == "error" {
			parts = append(parts, fmt.Sprintf("back-off after errors (%s)", d.errBackoff))
		} else {
			parts = append(parts, "EC2 throttling back-off")
		}
	}
	switch {
	case !room:
		parts = append(parts, "ENI limit reached")
	case d.fullInEC2:
		parts = append(parts, "ENI limit reached in EC2's view (ENIs attached that ipamd has not adopted yet)")
	}
	if d.lastPoolError != "" {
		parts = append(parts, "last error: "+d.lastPoolError)
	}
	return strings.Join(parts, "; ")
}

// introspection serves the VPC CNI's 127.0.0.1:61679 paths.
func (d *Daemon) introspection() http.Handler {
	mux := http.NewServeMux()
	paths := []string{"/v1/enis", "/v1/eni-configs", "/v1/ipamd-env-settings", "/v1/networkutils-env-settings", "/v1/pool"}
	js := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	// Any other path gets the list of paths, as from aws-node.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		js(w, map[string]any{"AvailableCommands": paths})
	})
	// The node's ENIConfig name, as aws-node answers (with or without
	// custom networking); 404 without the Kubernetes API.
	mux.HandleFunc("/v1/eni-configs", func(w http.ResponseWriter, r *http.Request) {
		if d.kube == nil {
			http.Error(w, http.StatusText(http.StatusNotFound), http.StatusNotFound)
			return
		}
		v, err := d.kube.readNode(r.Context())
		if err != nil {
			http.Error(w, http.StatusText(http.StatusNotFound), http.StatusNotFound)
			return
		}
		js(w, v.ENIConfig)
	})
	mux.HandleFunc("/v1/enis", func(w http.ResponseWriter, r *http.Request) {
		s := d.ds.GetStats()
		enis := map[string]ENI{}
		for _, e := range d.ds.ENIs() {
			for _, c := range e.AvailableIPv4Cidrs {
				for _, a := range c.IPAddresses {
					a.IPAMKey.ContainerID, a.IPAMKey.IfName = "", "" // scrubbed, as v1.23 does
				}
			}
			enis[e.ID] = e
		}
		js(w, map[string]any{"0": map[string]any{"TotalIPs": s.TotalIPs, "AssignedIPs": s.AssignedIPs, "ENIs": enis}})
	})
	mux.HandleFunc("/v1/ipamd-env-settings", func(w http.ResponseWriter, r *http.Request) {
		// The VPC CNI's keys and JSON types (numbers and booleans).
		js(w, map[string]any{
			"WARM_IP_TARGET": d.c.WarmIPTarget, "WARM_ENI_TARGET": d.c.WarmENITarget,
			"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": d.c.CustomNetworking, "AWS_MANAGE_ENIS_NON_SCHEDULABLE": d.c.ManageENIsNonSchedulable, "ENABLE_SUBNET_DISCOVERY": d.c.SubnetDiscovery,
		})
	})
	mux.HandleFunc("/v1/networkutils-env-settings", func(w http.ResponseWriter, r *http.Request) {
		var excl, ext []string
		for _, p := range d.c.ExcludeSNATCIDRs {
			excl = append(excl, p.String())
		}
		for _, p := range d.c.ExternalServiceCIDRs {
			ext = append(ext, p.String())
		}
		rnd := map[string]int{"none": 0, "hashrandom": 1, "prng": 2}[d.c.RandomizeSNAT]
		js(w, map[string]any{
			"AWS_VPC_K8S_CNI_CONNMARK": d.c.ConnMark, "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS": excl, "AWS_VPC_K8S_CNI_EXTERNALSNAT": d.c.ExternalSNAT,
			"AWS_EXTERNAL_SERVICE_CIDRS": ext, "AWS_VPC_ENI_MTU": d.c.MTU, "AWS_VPC_K8S_CNI_VETHPREFIX": d.c.VethPrefix,
			"AWS_VPC_CNI_NODE_PORT_SUPPORT": d.c.NodePortSupport, "AWS_VPC_K8S_CNI_RANDOMIZESNAT": rnd,
		})
	})
	mux.HandleFunc("/v1/pool", func(w http.ResponseWriter, r *http.Request) {
		s := d.ds.GetStats()
		js(w, map[string]any{"instanceId": d.instanceID, "instanceType": d.instanceType, "maxENI": d.maxENI, "maxIPsPerENI": d.maxIPsPerENI,
			"unmanagedENIs": d.unmanagedCount(), "totalIPs": s.TotalIPs, "assignedIPs": s.AssignedIPs, "cooldownIPs": s.CooldownIPs,
			"totalPrefixes": s.TotalPrefixes, "freePrefixes": s.FreePrefixes, "tooLow": d.tooLow(s), "tooHigh": d.tooHigh(s), "condition": d.poolCondition()})
	})
	return mux
}
