package plugin

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vpclab/vpclab/internal/version"
	"github.com/vpclab/vpclab/ipamd/rpc"
)

// checkpointAlloc is one allocation of ipamd's checkpoint (the VPC CNI's
// ipam.json), the only list of attachments the node keeps.
type checkpointAlloc struct {
	NetworkName string `json:"networkName"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	IPv4        string `json:"ipv4"`
	Metadata    struct {
		K8SPodNamespace string `json:"k8sPodNamespace"`
		K8SPodName      string `json:"k8sPodName"`
	} `json:"metadata"`
}

// CmdGC is GC (CNI 1.1): every allocation of this network that the runtime
// no longer lists in cni.dev/valid-attachments is released through ipamd
// and its host plumbing removed.
func CmdGC(args *skel.CmdArgs) error {
	conf, err := LoadConf(args.StdinData)
	if err != nil {
		return err
	}
	log, done := logger(conf)
	defer done()
	b, err := os.ReadFile(conf.Checkpoint)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("read ipamd checkpoint %s", conf.Checkpoint), err.Error())
	}
	var file struct {
		Allocations []checkpointAlloc `json:"allocations"`
	}
	if err := json.Unmarshal(b, &file); err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("parse ipamd checkpoint %s", conf.Checkpoint), err.Error())
	}
	valid := map[types.GCAttachment]bool{}
	for _, a := range conf.ValidAttachments {
		valid[a] = true
	}
	conn, err := dial(conf)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := rpc.NewCNIBackendClient(conn)
	for _, a := range file.Allocations {
		if a.NetworkName != conf.Name || valid[types.GCAttachment{ContainerID: a.ContainerID, IfName: a.IfName}] {
			continue
		}
		ctx, cancel := callCtx()
		reply, err := client.DelNetwork(ctx, &rpc.DelNetworkRequest{ClientVersion: version.Version, ContainerID: a.ContainerID, IfName: a.IfName,
			NetworkName: a.NetworkName, K8S_POD_NAME: a.Metadata.K8SPodName, K8S_POD_NAMESPACE: a.Metadata.K8SPodNamespace, Reason: "GC"})
		cancel()
		if err != nil {
			log.Warn("GC: release failed", "container", a.ContainerID, "err", err)
			continue
		}
		ip, _ := netip.ParseAddr(a.IPv4)
		if len(reply.IPAllocationMetadata) > 0 {
			ip, _ = netip.ParseAddr(reply.IPAllocationMetadata[0].IPv4Addr)
		}
		_ = teardownHost(HostVethName(conf.VethPrefix, a.Metadata.K8SPodNamespace, a.Metadata.K8SPodName), ip, true)
		log.Info("GC: released", "container", a.ContainerID, "ip", a.IPv4)
	}
	return nil
}
