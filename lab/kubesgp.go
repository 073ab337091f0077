package lab

// Security groups for pods in a Kubernetes lab: the real VPC Resource
// Controller (built unmodified from its Go module by make kubernetes) runs
// in the control plane's namespace as EKS runs it — with the identity its
// own admission webhook insists on (eks:vpc-resource-controller), its own
// CRDs and RBAC, its webhooks registered by URL, fakeec2 as its EC2 and
// the control-plane instance's IMDS for its region and credentials. The
// nodes' aws-node runs with ENABLE_POD_ENI=true, so ipamd asks for a trunk
// in the node's CNINode; the controller attaches one, gives each pod a
// SecurityGroupPolicy selects a branch ENI, and the plugin wires the pod
// to it on its VLAN.

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/internal/netx"
	"github.com/vpclab/vpclab/lab/k8s"
)

// rcUser is the Kubernetes user the controller must be: its validating
// webhook lets only it write the pod-eni annotation.
const rcUser = "eks:vpc-resource-controller"

// rcWebhookPort is the controller's (fixed) webhook port.
const rcWebhookPort = "9443"

// sgpEnabled says whether the lab runs security groups for pods.
func (l *Lab) sgpEnabled() bool {
	return l.cfg.Kubernetes != nil && l.cfg.Kubernetes.SecurityGroupsForPods
}

// startResourceController applies the controller's CRDs, RBAC and webhooks,
// starts it, and waits for its webhook server.
func (l *Lab) startResourceController(ctx context.Context, progress Progress) error {
	if err := k8s.BuiltRC(); err != nil {
		return err
	}
	k := l.kube
	dir := filepath.Join(k.dir, "rc")
	certs := filepath.Join(dir, "k8s-webhook-server", "serving-certs")
	if err := os.MkdirAll(certs, 0o700); err != nil {
		return err
	}
	ip := k.cp.PrivateIP.String()
	client, err := k.ca.Issue(rcUser, nil)
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, k8s.Kubeconfig("https://"+ip, k.ca.PEM, rcUser, client), 0o600); err != nil {
		return err
	}
	serving, err := k.ca.Issue("vpc-resource-controller-webhook", nil, ip)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(certs, "tls.crt"), serving.Cert, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(certs, "tls.key"), serving.Key, 0o600); err != nil {
		return err
	}
	for _, m := range k8s.RCManifests {
		b, err := os.ReadFile(k8s.RCManifest(m))
		if err != nil {
			return err
		}
		if strings.HasSuffix(m, "leader_election_role.yaml") && !strings.Contains(string(b), "namespace:") {
			b = []byte(strings.Replace(string(b), "metadata:\n", "metadata:\n  namespace: kube-system\n", 1))
		}
		if _, err := l.Kubectl(ctx, b, "apply", "-f", "-"); err != nil {
			return fmt.Errorf("VPC Resource Controller %s: %w", filepath.Base(m), err)
		}
	}
	if _, err := l.Kubectl(ctx, []byte(rcBindings+rcWebhooks(ip, k.ca.PEM)), "apply", "-f", "-"); err != nil {
		return fmt.Errorf("VPC Resource Controller RBAC and webhooks: %w", err)
	}
	path, _ := l.fab.NodeNamespace(k.cp.ID)
	env := []string{"TMPDIR=" + dir, "AWS_ENDPOINT_URL_EC2=" + fabric.EC2Endpoint, "AWS_EC2_METADATA_SERVICE_ENDPOINT=http://" + fabric.IMDSAddr + "/",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}
	if err := k.startProg(path, k8s.ResourceControllerBin, env, k8s.Bin(k8s.ResourceControllerBin),
		"--cluster-name", l.cfg.Name, "--vpc-id", l.vpcID, "--kubeconfig", kubeconfig, "--leader-elect=false",
		"--metrics-bind-address", "127.0.0.1:8080", "--introspect-bind-addr", "127.0.0.1:22775"); err != nil {
		return err
	}
	dial := netx.DialContextIn(k.cpNS)
	wait := l.cfg.slow(90 * time.Second)
	deadline := time.Now().Add(wait)
	for {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := dial(dctx, "tcp", net.JoinHostPort(ip, rcWebhookPort))
		cancel()
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the VPC Resource Controller's webhook did not listen within %s (%v); see %s", wait, err, filepath.Join(k.dir, k8s.ResourceControllerBin+".log"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	progress("VPC Resource Controller %s running (security groups for pods; log %s)", k8s.ResourceControllerVersion, filepath.Join(k.dir, k8s.ResourceControllerBin+".log"))
	return nil
}

// rcBindings bind the controller's own roles to its user.
const rcBindings = `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: vpclab-vpc-resource-controller}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: controller-role}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "` + rcUser + `"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: vpclab-vpc-resource-controller, namespace: kube-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: controller-role}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "` + rcUser + `"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: vpclab-vpc-resource-controller-leader-election, namespace: kube-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: leader-election-role}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "` + rcUser + `"}]
---
`

// rcWebhooks registers the controller's webhooks by URL: the pod mutator
// (injects the pod-eni resource into pods a SecurityGroupPolicy selects)
// and the pod and node validators. Ignored when the controller is down, as
// on EKS.
func rcWebhooks(ip string, ca []byte) string {
	cfg := func(path string) string {
		return fmt.Sprintf("{url: \"https://%s:%s%s\", caBundle: %s}", ip, rcWebhookPort, path, base64.StdEncoding.EncodeToString(ca))
	}
	return fmt.Sprintf(`apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: vpclab-vpc-resource-controller}
webhooks:
- name: mpod.vpc.k8s.aws
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Ignore
  clientConfig: %s
  rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods]}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: vpclab-vpc-resource-controller}
webhooks:
- name: vpod.vpc.k8s.aws
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Ignore
  clientConfig: %s
  rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [pods]}]
- name: vnode.vpc.k8s.aws
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Ignore
  clientConfig: %s
  rules: [{apiGroups: [""], apiVersions: [v1], operations: [UPDATE], resources: [nodes]}]
`, cfg("/mutate-v1-pod"), cfg("/validate-v1-pod"), cfg("/validate-v1-node"))
}
