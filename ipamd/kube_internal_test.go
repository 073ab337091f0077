package ipamd

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/smithy-go"
)

// fakeAPIServer serves one Node and records posted Events, checking the
// service account's token.
type fakeAPIServer struct {
	mu            sync.Mutex
	pods          string
	unschedulable bool
	events        []map[string]any
}

// withToken answers 401 unless the request carries the service
// account's token ("tok"), as the API server does.
func withToken(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("Authorization") != "Bearer tok" {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return false
	}
	return true
}

func (f *fakeAPIServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !withToken(w, r) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1/nodes/node-1":
		taints := []map[string]string{}
		if f.unschedulable {
			taints = append(taints, map[string]string{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"spec": map[string]any{"taints": taints}, "status": map[string]any{"capacity": map[string]string{"pods": f.pods}}})
	case r.Method == http.MethodPost && r.URL.Path == "/api/v1/namespaces/kube-system/events":
		var ev map[string]any
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &ev)
		f.events = append(f.events, ev)
		w.WriteHeader(http.StatusCreated)
	default:
		http.NotFound(w, r)
	}
}

// inClusterClient serves h over TLS and returns ipamd's in-cluster client
// for it, as aws-node's pod would see it (service account token "tok").
func inClusterClient(t *testing.T, h http.Handler, c *Config) *kubeClient {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	old := serviceAccountDir
	serviceAccountDir = dir
	t.Cleanup(func() { serviceAccountDir = old })
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o600); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(srv.URL)
	t.Setenv("KUBERNETES_SERVICE_HOST", u.Hostname())
	t.Setenv("KUBERNETES_SERVICE_PORT", u.Port())
	k, err := newKubeClient(c)
	if err != nil || k == nil {
		t.Fatalf("in-cluster client: %v %v", k, err)
	}
	return k
}

// TestKubernetesNodeShapesThePool pins what ipamd takes from the API in a
// cluster, as aws-node does: capacity.pods caps the pool, the
// unschedulable taint stops growth unless AWS_MANAGE_ENIS_NON_SCHEDULABLE,
// and an UnauthorizedOperation from EC2 becomes a MissingIAMPermissions
// Event on ipamd's own pod (at most once a minute).
func TestKubernetesNodeShapesThePool(t *testing.T) {
	api := &fakeAPIServer{pods: "110"}
	c := &Config{EnablePrefixDelegation: true, WarmPrefixTarget: 8, NodeName: "node-1", PodName: "aws-node-x", PodNamespace: "kube-system"}
	k := inClusterClient(t, api, c)
	d := &Daemon{c: c, kube: k, m: newMetrics(""), log: slog.New(slog.DiscardHandler), kick: make(chan struct{}, 1), maxPrefixesPerENI: 9, maxIPsPerENI: 144}
	ctx := context.Background()
	d.readNode(ctx)
	// m5.large in prefix mode: EKS's max pods is 110; the 7th prefix (112
	// addresses) is the last the pool asks for.
	if !d.tooLow(Stats{TotalIPs: 96, TotalPrefixes: 6, FreePrefixes: 6}) {
		t.Error("6 prefixes (96 < 110 max pods) with WARM_PREFIX_TARGET=8: want the pool to grow")
	}
	if d.tooLow(Stats{TotalIPs: 112, TotalPrefixes: 7, FreePrefixes: 7}) {
		t.Error("7 prefixes (112 ≥ 110 max pods): want no more growth")
	}
	if d.growthBlocked() {
		t.Error("a schedulable node blocks growth")
	}
	api.mu.Lock()
	api.unschedulable = true
	api.mu.Unlock()
	d.readNode(ctx)
	if !d.growthBlocked() {
		t.Error("a cordoned node must stop ENI and address growth")
	}
	c.ManageENIsNonSchedulable = true
	if d.growthBlocked() {
		t.Error("AWS_MANAGE_ENIS_NON_SCHEDULABLE=true lets a cordoned node grow")
	}
	c.MaxPods = 20
	if d.maxPods() != 20 {
		t.Error("VPCLAB_MAX_PODS wins over the node")
	}

	unauthorized := &smithy.GenericAPIError{Code: "UnauthorizedOperation", Message: "You are not authorized to perform this operation."}
	d.noteResult("increase", unauthorized)
	d.noteResult("increase", unauthorized)
	deadline := time.Now().Add(5 * time.Second)
	for {
		api.mu.Lock()
		n := len(api.events)
		api.mu.Unlock()
		if n >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	api.mu.Lock()
	defer api.mu.Unlock()
	if len(api.events) != 1 {
		t.Fatalf("%d events, want one MissingIAMPermissions (once a minute)", len(api.events))
	}
	ev := api.events[0]
	obj, _ := ev["involvedObject"].(map[string]any)
	if ev["reason"] != "MissingIAMPermissions" || ev["type"] != "Warning" || obj["name"] != "aws-node-x" || obj["kind"] != "Pod" {
		t.Errorf("event %v", ev)
	}
	if _, err := newKubeClient(&Config{}); err != nil {
		t.Errorf("no node name: want no client and no error, got %v", err)
	}
}
