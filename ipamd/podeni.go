package ipamd

// Security groups for pods (ENABLE_POD_ENI), ipamd's half, as aws-node
// does it: keep an ENI slot free for the trunk until the VPC Resource
// Controller attaches one, tell the controller the node wants one (the
// SecurityGroupsForPods feature in the node's CNINode), recognise the
// trunk (no pod addresses, never freed), and answer the plugin for a pod
// the controller gave a branch ENI from the pod's annotation: its address,
// VLAN id, the branch's MAC, the subnet gateway and the trunk's link. The
// branch itself is the controller's: ipamd allocates nothing for it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"github.com/vpclab/vpclab/ipamd/rpc"
)

// Names shared with the VPC Resource Controller.
const (
	// PodENIAnnotation is the controller's annotation on a branch pod.
	PodENIAnnotation = "vpc.amazonaws.com/pod-eni"
	// podENIResource (a prefix of it) in a pod's limits asks for a branch.
	podENIResource = "vpc.amazonaws.com/pod-eni"
	// FeatureSecurityGroupsForPods is the CNINode feature that asks the
	// controller for a trunk.
	FeatureSecurityGroupsForPods = "SecurityGroupsForPods"
	cniNodePath                  = "/apis/vpcresources.k8s.aws/v1alpha1/cninodes/"
)

// PodENI is one entry of the pod-eni annotation. The controller writes
// "vlanId"; Go's case-insensitive decoding also takes aws-node's "vlanID".
type PodENI struct {
	ENIID         string `json:"eniId"`
	IfAddress     string `json:"ifAddress"`
	PrivateIP     string `json:"privateIp"`
	IPv6Addr      string `json:"ipv6Addr,omitempty"`
	VlanID        int    `json:"vlanId"`
	SubnetCIDR    string `json:"subnetCidr"`
	SubnetV6CIDR  string `json:"subnetV6Cidr,omitempty"`
	AssociationID string `json:"associationID,omitempty"`
}

// podView is what ipamd reads of a pod.
type podView struct {
	UID             string
	ResourceVersion string
	Annotations     map[string]string
	// WantsBranch: the first container's limits hold a
	// vpc.amazonaws.com/pod-eni resource.
	WantsBranch bool
}

// readPod reads a pod; found is false when the API says it does not exist.
func (k *kubeClient) readPod(ctx context.Context, namespace, name string) (v podView, found bool, err error) {
	var p struct {
		Metadata struct {
			UID             string            `json:"uid"`
			ResourceVersion string            `json:"resourceVersion"`
			Annotations     map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec struct {
			Containers []struct {
				Resources struct {
					Limits map[string]any `json:"limits"`
				} `json:"resources"`
			} `json:"containers"`
		} `json:"spec"`
	}
	err = k.do(ctx, http.MethodGet, "/api/v1/namespaces/"+url.PathEscape(namespace)+"/pods/"+url.PathEscape(name), nil, &p)
	var se *statusError
	if errors.As(err, &se) && se.code == http.StatusNotFound {
		return v, false, nil
	}
	if err != nil {
		return v, false, err
	}
	v = podView{UID: p.Metadata.UID, ResourceVersion: p.Metadata.ResourceVersion, Annotations: p.Metadata.Annotations}
	if len(p.Spec.Containers) > 0 {
		for r := range p.Spec.Containers[0].Resources.Limits {
			if strings.HasPrefix(r, podENIResource) {
				v.WantsBranch = true
			}
		}
	}
	return v, true, nil
}

// addCNINodeFeature adds a feature to the node's CNINode unless it is
// there (a feature of the same name with another value is replaced), with
// a merge patch guarded by the object's resourceVersion.
func (k *kubeClient) addCNINodeFeature(ctx context.Context, name, value string) error {
	type feature struct {
		Name  string `json:"name"`
		Value string `json:"value,omitempty"`
	}
	var cn struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Spec struct {
			Features []feature `json:"features"`
		} `json:"spec"`
	}
	path := cniNodePath + url.PathEscape(k.node)
	if err := k.do(ctx, http.MethodGet, path, nil, &cn); err != nil {
		return err
	}
	want := feature{Name: name, Value: value}
	if slices.Contains(cn.Spec.Features, want) {
		return nil
	}
	fs := slices.DeleteFunc(slices.Clone(cn.Spec.Features), func(f feature) bool { return f.Name == name })
	patch := map[string]any{
		"metadata": map[string]any{"resourceVersion": cn.Metadata.ResourceVersion},
		"spec":     map[string]any{"features": append(fs, want)},
	}
	return k.doAs(ctx, http.MethodPatch, path, "application/merge-patch+json", patch, nil)
}

// trunkENI returns the trunk in the datastore ("" when none is attached).
func (d *DataStore) trunkENI() (id, mac string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range d.enis {
		if e.IsTrunk {
			return e.ID, e.mac
		}
	}
	return "", ""
}

// trunkReserve is the ENI slot kept for a trunk: 1 while pod ENIs are on,
// the instance type is trunking-compatible (as aws-node reads it from the
// controller's table) and no trunk is attached.
func (d *Daemon) trunkReserve() int {
	if !d.c.EnablePodENI || !trunkingCompatible(d.instanceType) {
		return 0
	}
	if id, _ := d.ds.trunkENI(); id != "" {
		return 0
	}
	return 1
}

// requestTrunk asks the controller for a trunk (the CNINode feature) when
// pod ENIs are on, there is none yet, and a slot is free for it.
func (d *Daemon) requestTrunk(ctx context.Context) {
	if !d.c.EnablePodENI || d.kube == nil {
		return
	}
	if id, _ := d.ds.trunkENI(); id != "" {
		return
	}
	if d.ds.ENICount() >= d.maxENI-d.unmanagedCount() {
		d.log.Error("no slot available for a trunk ENI to be attached")
		return
	}
	if err := d.kube.addCNINodeFeature(ctx, FeatureSecurityGroupsForPods, ""); err != nil {
		d.m.podENIErr.WithLabelValues("tryEnableSecurityGroupsForPods").Inc()
		d.log.Error("adding the SecurityGroupsForPods feature to the CNINode failed", "node", d.c.NodeName, "err", err)
		return
	}
	d.mu.Lock()
	first := !d.trunkRequested
	d.trunkRequested = true
	d.mu.Unlock()
	if first {
		d.log.Info("asked for a trunk ENI: SecurityGroupsForPods in the CNINode", "node", d.c.NodeName)
	}
}

// awaitingTrunk: the CNINode asks for a trunk and none is in the
// datastore yet.
func (d *Daemon) awaitingTrunk() bool {
	d.mu.Lock()
	asked := d.trunkRequested
	d.mu.Unlock()
	if !asked {
		return false
	}
	id, _ := d.ds.trunkENI()
	return id == ""
}

// branchReply answers AddNetwork for a pod with a branch ENI; it reports
// whether it answered (false: the pod does not ask for one, and ipamd
// hands out one of its own addresses). A pod that asks for one but cannot
// have it yet (no trunk, no annotation) gets a failure, which the kubelet
// retries.
func (d *Daemon) branchReply(ctx context.Context, in *rpc.AddNetworkRequest, reply *rpc.AddNetworkReply) bool {
	if !d.c.EnablePodENI || d.kube == nil {
		return false
	}
	pod, found, err := d.kube.readPod(ctx, in.K8S_POD_NAMESPACE, in.K8S_POD_NAME)
	if err != nil || !found {
		d.log.Warn("AddNetwork: reading the pod failed", "pod", in.K8S_POD_NAMESPACE+"/"+in.K8S_POD_NAME, "found", found, "err", err)
		return true
	}
	if !pod.WantsBranch {
		return false
	}
	_, mac := d.ds.trunkENI()
	if mac == "" {
		d.log.Warn("AddNetwork: no trunk ENI yet; cannot add a pod ENI", "pod", in.K8S_POD_NAMESPACE+"/"+in.K8S_POD_NAME)
		return true
	}
	b, err := parsePodENI(pod.Annotations[PodENIAnnotation])
	if err != nil {
		d.m.podENIErr.WithLabelValues("AddNetwork").Inc()
		d.log.Warn("AddNetwork: no usable pod-eni annotation yet", "pod", in.K8S_POD_NAMESPACE+"/"+in.K8S_POD_NAME, "err", err)
		return true
	}
	link, err := linkByMAC(mac)
	if err != nil {
		d.log.Warn("AddNetwork: the trunk ENI's link is not there", "mac", mac, "err", err)
		return true
	}
	subnet, _ := netip.ParsePrefix(b.SubnetCIDR)
	reply.Success = true
	reply.PodVlanId = int32(b.VlanID)
	reply.PodENIMAC = b.IfAddress
	reply.PodENISubnetGW = subnet.Masked().Addr().Next().String()
	reply.ParentIfIndex = int32(link.Attrs().Index)
	reply.IPAllocationMetadata = []*rpc.IPAllocationMetadata{{IPv4Addr: b.PrivateIP, DeviceNumber: -1, RouteTableId: 0}}
	d.log.Info("AddNetwork (branch ENI)", "pod", in.K8S_POD_NAMESPACE+"/"+in.K8S_POD_NAME, "ip", b.PrivateIP, "eni", b.ENIID, "vlan", b.VlanID)
	return true
}

// parsePodENI reads the first entry of a pod-eni annotation, which must
// name an address, a MAC, a VLAN id and the subnet.
func parsePodENI(val string) (PodENI, error) {
	if val == "" {
		return PodENI{}, errors.New("no " + PodENIAnnotation + " annotation")
	}
	var es []PodENI
	if err := json.Unmarshal([]byte(val), &es); err != nil || len(es) == 0 {
		return PodENI{}, fmt.Errorf("annotation %q: want a JSON array of branch ENIs", val)
	}
	e := es[0]
	if _, err := netip.ParseAddr(e.PrivateIP); err != nil || e.IfAddress == "" || e.VlanID == 0 {
		return PodENI{}, fmt.Errorf("annotation %q: privateIp, ifAddress and vlanId are required", val)
	}
	if _, err := netip.ParsePrefix(e.SubnetCIDR); err != nil {
		return PodENI{}, fmt.Errorf("annotation %q: subnetCidr: %w", val, err)
	}
	return e, nil
}

// branchDelReply answers DelNetwork for a pod ipamd holds no address for:
// a pod that is gone is done; a pod of another UID is an error; a branch
// pod gets its VLAN id and address back so the plugin can tear it down.
func (d *Daemon) branchDelReply(ctx context.Context, in *rpc.DelNetworkRequest) (*rpc.DelNetworkReply, bool, error) {
	if !d.c.EnablePodENI || d.kube == nil {
		return nil, false, nil
	}
	pod, found, err := d.kube.readPod(ctx, in.K8S_POD_NAMESPACE, in.K8S_POD_NAME)
	if err != nil {
		return nil, true, fmt.Errorf("reading pod %s/%s: %w", in.K8S_POD_NAMESPACE, in.K8S_POD_NAME, err)
	}
	if !found {
		return &rpc.DelNetworkReply{Success: true}, true, nil
	}
	if in.K8S_POD_UID != "" && pod.UID != in.K8S_POD_UID {
		return nil, true, fmt.Errorf("pod UID mismatch: got %s, expected %s", in.K8S_POD_UID, pod.UID)
	}
	val, ok := pod.Annotations[PodENIAnnotation]
	if !ok {
		return nil, false, nil
	}
	b, err := parsePodENI(val)
	if err != nil {
		return nil, true, err
	}
	return &rpc.DelNetworkReply{Success: true, PodVlanId: int32(b.VlanID), NetworkPolicyMode: d.c.NetworkPolicyMode,
		IPAllocationMetadata: []*rpc.IPAllocationMetadata{{IPv4Addr: b.PrivateIP}}}, true, nil
}
