package ipamd

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/vpclab/vpclab/ipamd/rpc"
)

// fakePodAPI serves pods and one CNINode, recording patches.
type fakePodAPI struct {
	mu       sync.Mutex
	pods     map[string]map[string]any // "ns/name" -> pod object
	features []map[string]any
	rv       int
	patches  []map[string]any
	// Pod patches applied, and how many to refuse with a conflict first.
	podPatches, conflicts int
}

func (f *fakePodAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !withToken(w, r) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	const cn = "/apis/vpcresources.k8s.aws/v1alpha1/cninodes/node-1"
	var pod map[string]any
	if rest, ok := strings.CutPrefix(r.URL.Path, "/api/v1/namespaces/"); ok {
		parts := strings.Split(rest, "/")
		if pod = f.pods[parts[0]+"/"+parts[len(parts)-1]]; pod == nil {
			http.Error(w, `{"kind":"Status","reason":"NotFound"}`, http.StatusNotFound)
			return
		}
	}
	switch {
	case r.Method == http.MethodGet && pod != nil:
		_ = json.NewEncoder(w).Encode(pod)
	case r.Method == http.MethodPatch && pod != nil:
		p := pod
		var patch struct {
			Metadata struct {
				ResourceVersion string            `json:"resourceVersion"`
				Annotations     map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &patch)
		md := p["metadata"].(map[string]any)
		if f.conflicts > 0 || patch.Metadata.ResourceVersion != md["resourceVersion"] {
			f.conflicts--
			md["resourceVersion"] = md["resourceVersion"].(string) + "+" // someone else wrote it
			http.Error(w, "conflict", http.StatusConflict)
			return
		}
		ann, _ := md["annotations"].(map[string]string)
		if ann == nil {
			ann = map[string]string{}
		}
		for k, v := range patch.Metadata.Annotations {
			ann[k] = v
		}
		md["annotations"], md["resourceVersion"] = ann, md["resourceVersion"].(string)+"1"
		f.podPatches++
		_ = json.NewEncoder(w).Encode(p)
	case r.Method == http.MethodGet && r.URL.Path == cn:
		_ = json.NewEncoder(w).Encode(map[string]any{"metadata": map[string]any{"name": "node-1", "resourceVersion": itoa(f.rv)}, "spec": map[string]any{"features": f.features}})
	case r.Method == http.MethodPatch && r.URL.Path == cn:
		if r.Header.Get("Content-Type") != "application/merge-patch+json" {
			http.Error(w, "want a merge patch", http.StatusUnsupportedMediaType)
			return
		}
		var patch map[string]any
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &patch)
		md, _ := patch["metadata"].(map[string]any)
		if md["resourceVersion"] != itoa(f.rv) {
			http.Error(w, "conflict", http.StatusConflict)
			return
		}
		f.patches = append(f.patches, patch)
		spec, _ := patch["spec"].(map[string]any)
		f.features = nil
		for _, x := range spec["features"].([]any) {
			f.features = append(f.features, x.(map[string]any))
		}
		f.rv++
		_ = json.NewEncoder(w).Encode(map[string]any{})
	default:
		http.NotFound(w, r)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func branchPodObject(uid string, limits map[string]any, annotation string) map[string]any {
	md := map[string]any{"uid": uid}
	if annotation != "" {
		md["annotations"] = map[string]string{PodENIAnnotation: annotation}
	}
	return map[string]any{"metadata": md, "spec": map[string]any{"containers": []any{map[string]any{"resources": map[string]any{"limits": limits}}}}}
}

// TestPodENI pins ipamd's side of security groups for pods against a fake
// API server: the trunk's ENI slot, the CNINode feature (added once, by a
// guarded merge patch, only with a free slot), AddNetwork answered from the
// controller's annotation (address, VLAN, MAC, gateway, the trunk's link)
// or refused until there is a trunk and an annotation, and DelNetwork for
// pods ipamd holds no address for.
func TestPodENI(t *testing.T) {
	ann := `[{"eniId":"eni-0b1","ifAddress":"02:aa:bb:cc:dd:ee","privateIp":"10.0.2.34","vlanID":5,"subnetCidr":"10.0.0.0/22","associationID":"trunk-assoc-1"}]`
	api := &fakePodAPI{pods: map[string]map[string]any{
		"default/sgp":   branchPodObject("u1", map[string]any{"vpc.amazonaws.com/pod-eni": "1", "cpu": "1"}, ann),
		"default/plain": branchPodObject("u2", map[string]any{"cpu": "1"}, ""),
		"default/early": branchPodObject("u3", map[string]any{"vpc.amazonaws.com/pod-eni": "1"}, ""),
	}, features: []map[string]any{{"name": "CustomNetworking", "value": "a"}}}
	c := &Config{EnablePodENI: true, NodeName: "node-1"}
	d := &Daemon{c: c, kube: inClusterClient(t, api, c), m: newMetrics(""), log: slog.New(slog.DiscardHandler), kick: make(chan struct{}, 1),
		ds: NewDataStore(false, 0, nil), maxENI: 3}
	ctx := context.Background()
	if err := d.ds.AddENI(&ENI{ID: "eni-primary", IsPrimary: true}); err != nil {
		t.Fatal(err)
	}
	if err := d.ds.AddENI(&ENI{ID: "eni-second", DeviceNumber: 1}); err != nil {
		t.Fatal(err)
	}

	// m5.large-like: 3 ENIs, one kept for the trunk.
	if d.hasRoomForENI() {
		t.Error("2 of 3 ENIs attached with pod ENIs on and no trunk: the last slot is the trunk's")
	}
	c.EnablePodENI = false
	if !d.hasRoomForENI() {
		t.Error("without ENABLE_POD_ENI no slot is kept")
	}
	c.EnablePodENI = true
	d.instanceType = "t2.medium" // 3 ENIs, no trunking in the controller's table
	if !d.hasRoomForENI() {
		t.Error("t2.medium cannot have a trunk: no slot is kept for one (as aws-node)")
	}
	d.instanceType = "m5.large"
	if d.hasRoomForENI() {
		t.Error("m5.large is trunking-compatible: its last slot is the trunk's")
	}

	d.requestTrunk(ctx)
	d.requestTrunk(ctx)
	api.mu.Lock()
	if len(api.patches) != 1 || len(api.features) != 2 || api.features[1]["name"] != FeatureSecurityGroupsForPods || api.features[0]["name"] != "CustomNetworking" {
		t.Errorf("CNINode: %d patches, features %v; want one patch adding SecurityGroupsForPods beside CustomNetworking", len(api.patches), api.features)
	}
	api.mu.Unlock()

	add := func(name string) *rpc.AddNetworkReply {
		t.Helper()
		reply := &rpc.AddNetworkReply{}
		if !d.branchReply(ctx, &rpc.AddNetworkRequest{K8S_POD_NAMESPACE: "default", K8S_POD_NAME: name}, reply) {
			return nil
		}
		return reply
	}
	if r := add("plain"); r != nil {
		t.Errorf("a pod without the pod-eni resource is ipamd's own: %v", r)
	}
	if r := add("sgp"); r == nil || r.Success {
		t.Errorf("no trunk yet: want a refusal, got %v", r)
	}

	// The controller attaches a trunk; its link is found by MAC (in a
	// scratch namespace standing in for the node).
	node, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Close(); _ = testutils.UnmountNS(node) })
	const trunkMAC = "02:00:00:00:00:77"
	if err := d.ds.AddENI(&ENI{ID: "eni-trunk", DeviceNumber: 2, IsTrunk: true, mac: trunkMAC}); err != nil {
		t.Fatal(err)
	}
	if d.hasRoomForENI() {
		t.Error("3 of 3 ENIs with the trunk attached: no room")
	}
	var r *rpc.AddNetworkReply
	var trunkIndex int
	err = node.Do(func(ns.NetNS) error {
		hw, _ := net.ParseMAC(trunkMAC)
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth2", HardwareAddr: hw}, PeerName: "peer"}); err != nil {
			return err
		}
		l, err := netlink.LinkByName("eth2")
		if err != nil {
			return err
		}
		trunkIndex = l.Attrs().Index
		r = add("sgp")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if r == nil || !r.Success || r.PodVlanId != 5 || r.PodENIMAC != "02:aa:bb:cc:dd:ee" || r.PodENISubnetGW != "10.0.0.1" ||
		r.ParentIfIndex != int32(trunkIndex) || r.IPAllocationMetadata[0].IPv4Addr != "10.0.2.34" || r.IPAllocationMetadata[0].DeviceNumber != -1 {
		t.Errorf("branch pod: %+v", r)
	}
	if r := add("early"); r == nil || r.Success {
		t.Errorf("no annotation yet: want a refusal the kubelet retries, got %v", r)
	}

	del := func(name, uid string) (*rpc.DelNetworkReply, bool, error) {
		return d.branchDelReply(ctx, &rpc.DelNetworkRequest{K8S_POD_NAMESPACE: "default", K8S_POD_NAME: name, K8S_POD_UID: uid})
	}
	if r, handled, err := del("sgp", "u1"); !handled || err != nil || r.PodVlanId != 5 || r.IPAllocationMetadata[0].IPv4Addr != "10.0.2.34" {
		t.Errorf("DEL of a branch pod: %v %v %v", r, handled, err)
	}
	if _, _, err := del("sgp", "other"); err == nil || !strings.Contains(err.Error(), "UID mismatch") {
		t.Errorf("DEL with another pod's UID: %v", err)
	}
	if r, handled, err := del("gone", ""); !handled || err != nil || !r.Success {
		t.Errorf("DEL of a pod the API no longer has: %v %v %v", r, handled, err)
	}
	if _, handled, _ := del("plain", "u2"); handled {
		t.Error("DEL of an unannotated pod is not a branch pod's")
	}
}

func TestParsePodENI(t *testing.T) {
	for _, bad := range []string{"", "{}", "[]", `[{"privateIp":"10.0.0.9","vlanId":3,"subnetCidr":"10.0.0.0/24"}]`,
		`[{"privateIp":"x","ifAddress":"02:00:00:00:00:01","vlanId":3,"subnetCidr":"10.0.0.0/24"}]`,
		`[{"privateIp":"10.0.0.9","ifAddress":"02:00:00:00:00:01","vlanId":3}]`} {
		if _, err := parsePodENI(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
	e, err := parsePodENI(`[{"eniId":"eni-1","ifAddress":"02:00:00:00:00:01","privateIp":"10.0.0.9","vlanId":3,"subnetCidr":"10.0.0.0/24"}]`)
	if err != nil || e.VlanID != 3 || netip.MustParseAddr(e.PrivateIP) != netip.MustParseAddr("10.0.0.9") {
		t.Errorf("%+v %v", e, err)
	}
}

// TestAnnotatePodIP pins ANNOTATE_POD_IP against a fake API server: ADD
// writes the pod's address into vpc.amazonaws.com/pod-ips (once; retried
// on a conflict) and fails when the pod cannot be annotated; DEL clears it
// only while it still names the released address.
func TestAnnotatePodIP(t *testing.T) {
	pod := func(rv string) map[string]any {
		return map[string]any{"metadata": map[string]any{"uid": "u-" + rv, "resourceVersion": rv}, "spec": map[string]any{}}
	}
	api := &fakePodAPI{pods: map[string]map[string]any{"default/a": pod("1"), "default/b": pod("7")}}
	c := &Config{AnnotatePodIP: true, NodeName: "node-1"}
	d := &Daemon{c: c, kube: inClusterClient(t, api, c), m: newMetrics(""), log: slog.New(slog.DiscardHandler), kick: make(chan struct{}, 1),
		ds: NewDataStore(false, 0, nil), maxENI: 3}
	if err := d.ds.AddENI(&ENI{ID: "eni-primary", IsPrimary: true}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"10.0.0.5", "10.0.0.6", "10.0.0.7"} {
		if err := d.ds.AddCIDR("eni-primary", netip.PrefixFrom(netip.MustParseAddr(a), 32), false); err != nil {
			t.Fatal(err)
		}
	}
	b := &cniBackend{d: d}
	ctx := context.Background()
	add := func(name string) *rpc.AddNetworkReply {
		t.Helper()
		r, err := b.AddNetwork(ctx, &rpc.AddNetworkRequest{ClientVersion: Version, K8S_POD_NAME: name, K8S_POD_NAMESPACE: "default", ContainerID: "c-" + name, NetworkName: "aws-cni", IfName: "eth0"})
		if err != nil {
			t.Fatalf("AddNetwork %s: %v", name, err)
		}
		return r
	}
	del := func(name string) {
		t.Helper()
		r, err := b.DelNetwork(ctx, &rpc.DelNetworkRequest{ClientVersion: Version, K8S_POD_NAME: name, K8S_POD_NAMESPACE: "default", ContainerID: "c-" + name, NetworkName: "aws-cni", IfName: "eth0"})
		if err != nil || !r.Success {
			t.Fatalf("DelNetwork %s: %v %v", name, r, err)
		}
	}
	annotation := func(name string) (string, bool) {
		api.mu.Lock()
		defer api.mu.Unlock()
		ann, _ := api.pods["default/"+name]["metadata"].(map[string]any)["annotations"].(map[string]string)
		v, ok := ann[PodIPsAnnotation]
		return v, ok
	}
	patches := func() int { api.mu.Lock(); defer api.mu.Unlock(); return api.podPatches }

	r := add("a")
	ip := r.IPAllocationMetadata[0].IPv4Addr
	if v, _ := annotation("a"); !r.Success || v != ip {
		t.Fatalf("ADD a: success %v, annotation %q; want %s", r.Success, v, ip)
	}
	if add("a"); patches() != 1 {
		t.Errorf("a repeated ADD patched again: %d patches", patches())
	}
	del("a")
	if v, ok := annotation("a"); !ok || v != "" {
		t.Errorf("DEL a: annotation %q (present %v), want cleared", v, ok)
	}

	api.mu.Lock()
	api.conflicts = 2
	api.mu.Unlock()
	r = add("b")
	if v, _ := annotation("b"); !r.Success || v != r.IPAllocationMetadata[0].IPv4Addr {
		t.Errorf("ADD b through 2 conflicts: success %v, annotation %q", r.Success, v)
	}
	api.mu.Lock()
	api.pods["default/b"]["metadata"].(map[string]any)["annotations"].(map[string]string)[PodIPsAnnotation] = "10.9.9.9" // another writer
	api.mu.Unlock()
	del("b")
	if v, _ := annotation("b"); v != "10.9.9.9" {
		t.Errorf("DEL b cleared an annotation naming another address: %q", v)
	}

	if r := add("gone"); r.Success {
		t.Error("ADD of a pod the API does not have succeeded; the VPC CNI fails it")
	}
}
