package ipamd

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/fakeec2/model"
)

// fakeENIConfigAPI serves node-1 (labels and annotations as set), the
// ENIConfigs and the node's CNINode, recording CNINode patches.
type fakeENIConfigAPI struct {
	mu                  sync.Mutex
	labels, annotations map[string]string
	configs             map[string]ENIConfigSpec
	features            []map[string]any
	patches             int
}

func (f *fakeENIConfigAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !withToken(w, r) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1/nodes/node-1":
		_ = json.NewEncoder(w).Encode(map[string]any{"metadata": map[string]any{"labels": f.labels, "annotations": f.annotations}})
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, eniConfigPath):
		spec, ok := f.configs[strings.TrimPrefix(r.URL.Path, eniConfigPath)]
		if !ok {
			http.Error(w, `{"kind":"Status","reason":"NotFound"}`, http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"spec": spec})
	case r.Method == http.MethodGet && r.URL.Path == cniNodePath+"node-1":
		_ = json.NewEncoder(w).Encode(map[string]any{"metadata": map[string]any{"resourceVersion": "1"}, "spec": map[string]any{"features": f.features}})
	case r.Method == http.MethodPatch && r.URL.Path == cniNodePath+"node-1":
		var patch struct {
			Spec struct {
				Features []map[string]any `json:"features"`
			} `json:"spec"`
		}
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &patch)
		f.features = patch.Spec.Features
		f.patches++
		w.WriteHeader(http.StatusOK)
	default:
		http.NotFound(w, r)
	}
}

// TestCustomNetworking pins custom networking as the VPC CNI does it: the
// ENIConfig's name from the external label, then the annotation, then the
// label, else "default"; a new ENI goes to its subnet with its groups (the
// primary ENI's when it names none); the CNINode learns the name when pod
// ENIs are on (not for "default"); and vpclab refuses, with the reason,
// an ENIConfig that does not exist or whose subnet is in another zone.
func TestCustomNetworking(t *testing.T) {
	if got := eniConfigName(map[string]string{DefaultENIConfigKey: "l", ExternalENIConfigLabel: "x"}, map[string]string{DefaultENIConfigKey: "a"}, DefaultENIConfigKey, DefaultENIConfigKey); got != "x" {
		t.Errorf("external label first: got %q", got)
	}
	if got := eniConfigName(map[string]string{DefaultENIConfigKey: "l"}, map[string]string{DefaultENIConfigKey: "a"}, DefaultENIConfigKey, DefaultENIConfigKey); got != "a" {
		t.Errorf("annotation before label: got %q", got)
	}
	if got := eniConfigName(map[string]string{"custom/key": "l"}, nil, "custom/key", DefaultENIConfigKey); got != "l" {
		t.Errorf("ENI_CONFIG_LABEL_DEF's label: got %q", got)
	}
	if got := eniConfigName(nil, nil, DefaultENIConfigKey, DefaultENIConfigKey); got != DefaultENIConfigName {
		t.Errorf("nothing named: got %q", got)
	}

	ctx := context.Background()
	region := model.NewRegion(model.Options{Seed: 1})
	srv := httptest.NewServer(fakeec2.NewServer(region, fakeec2.ServerOptions{}))
	t.Cleanup(srv.Close)
	vpc, err := region.CreateVPC(model.CreateVPCInput{CIDR: netip.MustParsePrefix("10.0.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	zones := model.ZoneNames(model.DefaultRegion)
	subnet := func(cidr, az string) string {
		s, err := region.CreateSubnet(model.CreateSubnetInput{VPCID: vpc.ID, CIDR: netip.MustParsePrefix(cidr), AZ: az})
		if err != nil {
			t.Fatal(err)
		}
		return s.ID
	}
	nodes := subnet("10.0.0.0/24", zones[0])
	pods := subnet("10.0.64.0/18", zones[0])
	elsewhere := subnet("10.0.128.0/18", zones[1])

	group := func(name string) string {
		g, err := region.CreateSecurityGroup(model.CreateSecurityGroupInput{VPCID: vpc.ID, Name: name, Description: name})
		if err != nil {
			t.Fatal(err)
		}
		return g.ID
	}
	g1, g2 := group("pods1"), group("pods2")
	api := &fakeENIConfigAPI{labels: map[string]string{DefaultENIConfigKey: "pods"}, configs: map[string]ENIConfigSpec{
		"pods":    {Subnet: pods, SecurityGroups: []string{g2, g1}},
		"default": {Subnet: pods},
		"away":    {Subnet: elsewhere},
	}}
	c := &Config{CustomNetworking: true, EnablePodENI: true, NodeName: "node-1", ENIConfigLabel: DefaultENIConfigKey, ENIConfigAnnotation: DefaultENIConfigKey}
	m := newMetrics("")
	client := ec2.NewFromConfig(aws.Config{Region: model.DefaultRegion, Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")},
		func(o *ec2.Options) { o.BaseEndpoint = aws.String(srv.URL) })
	d := &Daemon{c: c, kube: inClusterClient(t, api, c), m: m, log: slog.New(slog.DiscardHandler),
		cloud: &cloud{ec2: client, m: m, lim: newLimiter(100, 100), log: slog.New(slog.DiscardHandler)},
		vpcID: vpc.ID, az: zones[0], groupsSorted: []string{"sg-primary"}}

	if err := d.initCustomNetworking(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.initCustomNetworking(ctx); err != nil {
		t.Fatal(err)
	}
	api.mu.Lock()
	if api.patches != 1 || len(api.features) != 1 || api.features[0]["name"] != FeatureCustomNetworking || api.features[0]["value"] != "pods" {
		t.Errorf("CNINode: %d patches, features %v; want one adding CustomNetworking=pods", api.patches, api.features)
	}
	api.mu.Unlock()

	place, groups, err := d.customENIPlace(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if place.id != pods || place.cidr != netip.MustParsePrefix("10.0.64.0/18") || !slices.Equal(groups, []string{g2, g1}) {
		t.Errorf("place %+v groups %v; want the ENIConfig's subnet %s with its groups as written", place, groups, pods)
	}

	// A node that names none: "default", with the primary ENI's groups;
	// the CNINode is not told.
	api.mu.Lock()
	api.labels = nil
	api.mu.Unlock()
	if err := d.initCustomNetworking(ctx); err != nil {
		t.Fatal(err)
	}
	if _, groups, err = d.customENIPlace(ctx); err != nil || !slices.Equal(groups, []string{"sg-primary"}) {
		t.Errorf("default ENIConfig without groups: %v %v; want the primary ENI's", groups, err)
	}
	api.mu.Lock()
	if api.patches != 1 {
		t.Errorf("%d CNINode patches; the default ENIConfig is not a feature", api.patches)
	}
	api.labels = map[string]string{ExternalENIConfigLabel: "missing"}
	api.mu.Unlock()
	d.readNode(ctx)
	if _, _, err := d.customENIPlace(ctx); err == nil || !strings.Contains(err.Error(), `ENIConfig "missing" does not exist`) {
		t.Errorf("missing ENIConfig: %v", err)
	}
	api.mu.Lock()
	api.labels = map[string]string{ExternalENIConfigLabel: "away"}
	api.mu.Unlock()
	d.readNode(ctx)
	if _, _, err := d.customENIPlace(ctx); err == nil || !strings.Contains(err.Error(), elsewhere) || !strings.Contains(err.Error(), zones[1]) {
		t.Errorf("subnet in another zone: %v", err)
	}

	// The primary ENI serves no pod, whatever it holds; a node whose
	// ENIConfig is missing fails start-up (its pool stays empty), naming it.
	insts, err := region.RunInstances(model.RunInstancesInput{InstanceType: "m5.large", SubnetID: nodes})
	if err != nil {
		t.Fatal(err)
	}
	inst := insts[0]
	d.instanceID, d.primaryENI, d.maxENI, d.maxIPsPerENI, d.typeMaxPods = inst.ID, inst.PrimaryENI, 3, 9, 20
	d.ds, d.unmanagedIDs, d.devices = NewDataStore(false, 0, nil), map[string]bool{}, map[int]bool{0: true}
	if err := d.addENI(ctx, imdsENI{ID: inst.PrimaryENI, IPv4s: []netip.Addr{inst.PrivateIP}, SubnetID: nodes}, false, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := d.ds.AddCIDR(inst.PrimaryENI, netip.MustParsePrefix("10.0.0.200/32"), false); err != nil {
		t.Fatal(err)
	}
	if s := d.ds.GetStats(); s.TotalIPs != 0 {
		t.Errorf("stats %+v: the primary ENI's addresses are not the pool's with custom networking", s)
	}
	if _, _, err := d.ds.AssignPodIP(IPAMKey{ContainerID: "c1", IfName: "eth0", NetworkName: "aws-cni"}, IPAMMetadata{}); err == nil {
		t.Error("a pod got an address of the primary ENI")
	}
	api.mu.Lock()
	api.labels = map[string]string{ExternalENIConfigLabel: "missing"}
	api.mu.Unlock()
	d.readNode(ctx)
	if err := d.preScaleCustom(ctx); err == nil || !strings.Contains(err.Error(), "failed to attach any ENI") || !strings.Contains(err.Error(), `"missing"`) {
		t.Errorf("pre-scaling with a missing ENIConfig: %v; want start-up to fail naming it", err)
	}
	api.mu.Lock()
	api.labels = map[string]string{DefaultENIConfigKey: "pods"}
	api.mu.Unlock()
	d.readNode(ctx)
	c.EnablePodENI = false
	// (no node namespace here: the new ENI's link never shows, so the
	// pool stays empty, but the ENI was created in the ENIConfig's subnet)
	d.c.ENIAttachWait = 10 * time.Millisecond
	_ = d.preScaleCustom(ctx)
	var created []model.NetworkInterface
	for _, e := range region.NetworkInterfaces() {
		if e.Attachment != nil && e.Attachment.InstanceID == inst.ID && e.ID != inst.PrimaryENI {
			created = append(created, e)
		}
	}
	if len(created) != 1 || created[0].SubnetID != pods || !slices.Equal(created[0].SecurityGroups, []string{g2, g1}) {
		t.Errorf("ENIs created: %+v; want one in %s with the ENIConfig's groups", created, pods)
	}

	d.kube = nil
	if err := d.initCustomNetworking(ctx); err == nil || !strings.Contains(err.Error(), "needs the Kubernetes API") {
		t.Errorf("without the API: %v", err)
	}
}
