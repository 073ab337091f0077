package ipamd

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// serviceAccountDir is where a pod finds its service account's token and
// the cluster's CA (in-cluster configuration).
var serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// kubeClient reads and writes what ipamd in aws-node reads and writes in
// the Kubernetes API: its Node (capacity.pods caps the pool; the
// unschedulable taint stops ENI and address growth) and Events on its own
// pod. It speaks the REST API with the pod's service account, like
// client-go's in-cluster configuration.
type kubeClient struct {
	base  string // https://host:port
	token string
	http  *http.Client
	node  string // MY_NODE_NAME
	pod   string // MY_POD_NAME ("" posts no events)
	ns    string // MY_POD_NAMESPACE
	// the node label and annotation naming its ENIConfig
	eniConfigLabel, eniConfigAnnotation string
}

// newKubeClient is the in-cluster client, or nil outside a cluster
// (no KUBERNETES_SERVICE_HOST, or no node name to read).
func newKubeClient(c *Config) (*kubeClient, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" || c.NodeName == "" {
		return nil, nil
	}
	token, err := os.ReadFile(filepath.Join(serviceAccountDir, "token"))
	if err != nil {
		return nil, fmt.Errorf("in-cluster token: %w", err)
	}
	ca, err := os.ReadFile(filepath.Join(serviceAccountDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("in-cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("in-cluster CA %s: no certificate", filepath.Join(serviceAccountDir, "ca.crt"))
	}
	return &kubeClient{
		base: "https://" + net.JoinHostPort(host, port), token: string(bytes.TrimSpace(token)),
		http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}},
		node: c.NodeName, pod: c.PodName, ns: c.PodNamespace,
		eniConfigLabel: c.ENIConfigLabel, eniConfigAnnotation: c.ENIConfigAnnotation,
	}, nil
}

// statusError is a non-2xx answer from the API server.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string { return e.msg }

// do sends one request; out, when set, receives the JSON answer.
func (k *kubeClient) do(ctx context.Context, method, path string, body, out any) error {
	return k.doAs(ctx, method, path, "application/json", body, out)
}

// doAs is do with the body's content type.
func (k *kubeClient) doAs(ctx context.Context, method, path, contentType string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, k.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+k.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := k.http.Do(req)
	if err != nil {
		return fmt.Errorf("kubernetes %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode/100 != 2 {
		return &statusError{code: resp.StatusCode, msg: fmt.Sprintf("kubernetes %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))}
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// nodeView is what ipamd takes from its Node.
type nodeView struct {
	// MaxPods is status.capacity.pods (0 if absent).
	MaxPods int
	// Unschedulable: the node carries node.kubernetes.io/unschedulable:NoSchedule
	// (cordoned).
	Unschedulable bool
	// ENIConfig is the name of the node's ENIConfig (custom networking).
	ENIConfig string
}

// readNode reads the node ipamd runs on.
func (k *kubeClient) readNode(ctx context.Context) (nodeView, error) {
	var n struct {
		Metadata struct {
			Labels, Annotations map[string]string
		}
		Spec struct {
			Taints []struct{ Key, Effect string }
		}
		Status struct {
			Capacity map[string]string
		}
	}
	if err := k.do(ctx, http.MethodGet, "/api/v1/nodes/"+url.PathEscape(k.node), nil, &n); err != nil {
		return nodeView{}, err
	}
	v := nodeView{ENIConfig: eniConfigName(n.Metadata.Labels, n.Metadata.Annotations, k.eniConfigLabel, k.eniConfigAnnotation)}
	v.MaxPods, _ = strconv.Atoi(n.Status.Capacity["pods"])
	for _, t := range n.Spec.Taints {
		if t.Key == "node.kubernetes.io/unschedulable" && t.Effect == "NoSchedule" {
			v.Unschedulable = true
		}
	}
	return v, nil
}

// event posts a core/v1 Event about ipamd's own pod, as aws-node does
// (MissingIAMPermissions …).
func (k *kubeClient) event(ctx context.Context, typ, reason, message string) error {
	if k.pod == "" {
		return nil
	}
	now := time.Now().UTC().Format(time.RFC3339)
	ev := map[string]any{
		"metadata":       map[string]any{"generateName": k.pod + ".", "namespace": k.ns},
		"involvedObject": map[string]any{"kind": "Pod", "name": k.pod, "namespace": k.ns, "apiVersion": "v1"},
		"reason":         reason, "message": message, "type": typ, "count": 1,
		"firstTimestamp": now, "lastTimestamp": now,
		"source": map[string]any{"component": "aws-node", "host": k.node},
	}
	return k.do(ctx, http.MethodPost, "/api/v1/namespaces/"+url.PathEscape(k.ns)+"/events", ev, nil)
}

// nodeLoop follows the node: max pods and the unschedulable taint, every
// interval (aws-node's cached client sees changes within seconds too).
func (d *Daemon) nodeLoop(ctx context.Context) {
	if d.kube == nil {
		return
	}
	every(ctx, d.c.NodeInterval, func() {
		d.readNode(ctx)
		d.requestTrunk(ctx)
		if d.awaitingTrunk() {
			// The controller attaches the trunk: adopt it without waiting
			// for the next reconciliation (aws-node checks every pool tick).
			if err := d.reconcile(ctx); err != nil {
				d.log.Warn("reconcile while waiting for the trunk", "err", err)
			}
		}
	})
}

// readNode refreshes what the node says and returns it; a failure keeps
// the last view (logged; the error is returned for callers that need the
// node now).
func (d *Daemon) readNode(ctx context.Context) (nodeView, error) {
	v, err := d.kube.readNode(ctx)
	if err != nil {
		d.log.Warn("reading the node failed; keeping the last view", "node", d.c.NodeName, "err", err)
		return nodeView{}, err
	}
	d.mu.Lock()
	changed := v != d.nodeView
	d.nodeView = v
	d.mu.Unlock()
	if changed {
		d.log.Info("node", "name", d.c.NodeName, "maxPods", v.MaxPods, "unschedulable", v.Unschedulable, "eniConfig", v.ENIConfig)
		d.wake()
	}
	return v, nil
}

// maxPods is the pool's cap (TotalIPs ≥ it: the pool is not low), in both
// modes, as the VPC CNI's: VPCLAB_MAX_PODS, else the node's capacity.pods
// in a cluster, else the instance type's figure from eni-max-pods.txt
// (the secondary-IP figure, also with prefix delegation).
func (d *Daemon) maxPods() int {
	if d.c.MaxPods > 0 {
		return d.c.MaxPods
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.nodeView.MaxPods > 0 {
		return d.nodeView.MaxPods
	}
	return d.typeMaxPods
}

// growthBlocked says whether a cordoned node stops ENI and address growth
// (unless AWS_MANAGE_ENIS_NON_SCHEDULABLE).
func (d *Daemon) growthBlocked() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.nodeView.Unschedulable && !d.c.ManageENIsNonSchedulable
}

// reportIAM posts MissingIAMPermissions on ipamd's pod when EC2 refuses a
// call as unauthorized, at most once a minute.
func (d *Daemon) reportIAM(err error) {
	if d.kube == nil || errorCode(err) != "UnauthorizedOperation" {
		return
	}
	d.mu.Lock()
	if time.Since(d.lastIAMEvent) < time.Minute {
		d.mu.Unlock()
		return
	}
	d.lastIAMEvent = time.Now()
	d.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.kube.event(ctx, "Warning", "MissingIAMPermissions", fmt.Sprintf("Unauthorized operation: %v", err)); err != nil {
			d.log.Warn("posting an event failed", "err", err)
		}
	}()
}
