package k8s

import (
	"fmt"
	"strings"
)

// Cluster addresses, as on EKS: services in 10.100.0.0/16, the apiserver's
// service address 10.100.0.1, cluster DNS at 10.100.0.10.
const (
	ServiceCIDR   = "10.100.0.0/16"
	APIServiceIP  = "10.100.0.1"
	ClusterDNS    = "10.100.0.10"
	ClusterDomain = "cluster.local"
	APIPort       = 443
)

// ContainerdConfig is a node's containerd configuration (version 3, for
// containerd 2.x): its own root, state and socket at the standard paths
// inside the node's mount namespace, the pinned sandbox image, no OOM
// score changes (this kind of host lacks CAP_SYS_RESOURCE), CNI from the
// node's directories, NRI off (it writes /run/nri).
func ContainerdConfig() string {
	return fmt.Sprintf(`version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"
[plugins."io.containerd.nri.v1.nri"]
  disable = true
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = %q
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  enable_selinux = false
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["/opt/cni/bin"]
  conf_dir = "/etc/cni/net.d"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
`, PauseImage)
}

// KubeletOptions describe one node's kubelet.
type KubeletOptions struct {
	CgroupRoot string
	MaxPods    int
	ProviderID string
	// SystemReserved shapes allocatable to the instance type's size (a
	// node's capacity is always the host's).
	SystemReservedCPU, SystemReservedMemory string
}

// KubeletConfig is a node's KubeletConfiguration: x509 and webhook
// authentication, webhook authorization, the node's own cgroup root,
// cgroup v1 allowed, max pods as EKS computes it, cluster DNS, and the
// node's serving certificate.
func KubeletConfig(o KubeletOptions) string {
	reserved := ""
	if o.SystemReservedCPU != "" {
		reserved = fmt.Sprintf("systemReserved:\n  cpu: %q\n  memory: %q\n", o.SystemReservedCPU, o.SystemReservedMemory)
	}
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: /etc/kubernetes/pki/ca.crt}
authorization: {mode: Webhook}
cgroupRoot: %s
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
maxPods: %d
providerID: %s
clusterDNS: [%s]
clusterDomain: %s
resolvConf: /etc/kubernetes/resolv.conf
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
tlsCertFile: /etc/kubernetes/pki/kubelet.crt
tlsPrivateKeyFile: /etc/kubernetes/pki/kubelet.key
rotateCertificates: false
serverTLSBootstrap: false
registerNode: true
makeIPTablesUtilChains: true
protectKernelDefaults: false
imageGCHighThresholdPercent: 100
evictionHard: {}
enforceNodeAllocatable: []
localStorageCapacityIsolation: false
%s`, o.CgroupRoot, o.MaxPods, o.ProviderID, ClusterDNS, ClusterDomain, reserved)
}

// KubeProxyConfig is a node's kube-proxy configuration (iptables mode).
func KubeProxyConfig(hostname string) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: %s
clientConnection: {kubeconfig: /etc/kubernetes/kube-proxy.conf}
conntrack: {maxPerCore: 0}
`, hostname)
}

// CoreDNSManifest is CoreDNS (one replica, the locally built image) with
// its RBAC, Corefile and the kube-dns Service at ClusterDNS.
func CoreDNSManifest() string {
	return strings.NewReplacer("IMAGE", CoreDNSImage, "DNSIP", ClusterDNS).Replace(`apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: system:coredns}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: system:coredns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:coredns}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
          pods insecure
          fallthrough in-addr.arpa ip6.arpa
        }
        cache 30
        reload
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      tolerations: [{key: CriticalAddonsOnly, operator: Exists}]
      containers:
      - name: coredns
        image: IMAGE
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        volumeMounts: [{name: config, mountPath: /etc/coredns}]
        ports:
        - {containerPort: 53, name: dns, protocol: UDP}
        - {containerPort: 53, name: dns-tcp, protocol: TCP}
        readinessProbe: {httpGet: {path: /ready, port: 8181}, periodSeconds: 2}
        securityContext: {allowPrivilegeEscalation: false, capabilities: {add: [NET_BIND_SERVICE], drop: [ALL]}}
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: DNSIP
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
`)
}

// ResolvConf is what pods with the Default DNS policy (and CoreDNS) get:
// the lab has no upstream resolver, so only the cluster's names resolve.
const ResolvConf = "nameserver 127.0.0.1\n"
