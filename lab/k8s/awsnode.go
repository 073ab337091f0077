package k8s

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/vpclab/vpclab/plugin"
)

// iptablesNames are the names the VPC CNI (both implementations) runs
// iptables by; the host's multi-call xtables binary serves them all.
var iptablesNames = []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"}

// Tools is what an aws-node image needs from the host besides the CNI:
// iptables (the host's, with its libraries and extensions) and busybox
// for a shell.
func Tools() (Image, error) {
	ipt, err := filepath.EvalSymlinks("/usr/sbin/iptables")
	if err != nil {
		return Image{}, fmt.Errorf("iptables: %w", err)
	}
	files, err := HostFiles(ipt)
	if err != nil {
		return Image{}, err
	}
	const ext = "/usr/lib/x86_64-linux-gnu/xtables" // its extensions, loaded by name
	ents, err := os.ReadDir(ext)
	if err != nil {
		return Image{}, fmt.Errorf("iptables extensions: %w", err)
	}
	for _, e := range ents {
		files[filepath.Join(ext, e.Name())] = filepath.Join(ext, e.Name())
	}
	shell, err := Shell()
	if err != nil {
		return Image{}, err
	}
	for k, v := range shell.Files {
		files[k] = v
	}
	links := shell.Symlinks
	for _, n := range iptablesNames {
		links["/usr/sbin/"+n] = ipt
	}
	return Image{Files: files, Symlinks: links}, nil
}

// merge adds more's files and links to im.
func (im Image) merge(more Image) Image {
	if im.Files == nil {
		im.Files = map[string]string{}
	}
	if im.Symlinks == nil {
		im.Symlinks = map[string]string{}
	}
	for k, v := range more.Files {
		im.Files[k] = v
	}
	for k, v := range more.Symlinks {
		im.Symlinks[k] = v
	}
	return im
}

// VpclabAWSNodeImage is aws-node for vpclab's CNI: ipamd, aws-cni,
// egress-cni and the aws-vpc-cni installer from binDir, the reference
// plugins from refDir (under /app/cni), iptables and a shell.
func VpclabAWSNodeImage(tag, binDir, refDir string) (Image, error) {
	tools, err := Tools()
	if err != nil {
		return Image{}, err
	}
	im := Image{Tag: tag, Files: map[string]string{}, WorkingDir: "/app"}
	for _, b := range []string{"ipamd", "aws-cni", "aws-vpc-cni", "egress-cni"} {
		im.Files["/app/"+b] = filepath.Join(binDir, b)
	}
	for _, p := range plugin.RefPlugins {
		im.Files["/app/cni/"+p] = filepath.Join(refDir, p)
	}
	return im.merge(tools), nil
}

// UpstreamImages are the real VPC CNI's two images, as its release builds
// them: the main one with appDir's files in /app (entrypoint aws-vpc-cni)
// and the init one with aws-vpc-cni-init and the reference plugins from
// refDir in /init.
func UpstreamImages(mainTag, initTag, appDir, refDir string) (Image, Image, error) {
	tools, err := Tools()
	if err != nil {
		return Image{}, Image{}, err
	}
	main := Image{Tag: mainTag, Files: map[string]string{}, WorkingDir: "/app", Entrypoint: []string{"/app/aws-vpc-cni"}}
	init := Image{Tag: initTag, Files: map[string]string{}, WorkingDir: "/init", Entrypoint: []string{"/init/aws-vpc-cni-init"}}
	ents, err := os.ReadDir(appDir)
	if err != nil {
		return Image{}, Image{}, err
	}
	for _, e := range ents {
		src := filepath.Join(appDir, e.Name())
		if e.Name() == "aws-vpc-cni-init" {
			init.Files["/init/aws-vpc-cni-init"] = src
			continue
		}
		main.Files["/app/"+e.Name()] = src
	}
	if init.Files["/init/aws-vpc-cni-init"] == "" {
		return Image{}, Image{}, fmt.Errorf("%s has no aws-vpc-cni-init", appDir)
	}
	refs, err := os.ReadDir(refDir)
	if err != nil {
		return Image{}, Image{}, err
	}
	for _, e := range refs {
		if e.Type().IsRegular() {
			init.Files["/init/"+e.Name()] = filepath.Join(refDir, e.Name())
		}
	}
	return main.merge(tools), init.merge(tools), nil
}

// VpclabAWSNodeManifest is the aws-node DaemonSet for vpclab's CNI, shaped
// like upstream's: host network, privileged, an init container copying the
// reference plugins, a main container running ipamd and, once it is
// healthy, installing aws-cni and the conflist; ready once the conflist
// exists.
func VpclabAWSNodeManifest(image string, env map[string]string) string {
	var e strings.Builder
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&e, "        - {name: %s, value: %q}\n", k, env[k])
	}
	return strings.NewReplacer("IMAGE", image, "ENV\n", e.String()).Replace(awsNodeTemplate)
}

const awsNodeTemplate = `apiVersion: v1
kind: ServiceAccount
metadata: {name: aws-node, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: aws-node}
rules:
- apiGroups: [""]
  resources: [nodes, pods, namespaces]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [nodes]
  verbs: [patch]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch, list]
- apiGroups: [vpcresources.k8s.aws]
  resources: [cninodes]
  verbs: [get, list, watch, patch]
- apiGroups: [crd.k8s.amazonaws.com]
  resources: [eniconfigs]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: aws-node}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: aws-node}
subjects: [{kind: ServiceAccount, name: aws-node, namespace: kube-system}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: aws-node, namespace: kube-system, labels: {k8s-app: aws-node}}
spec:
  selector: {matchLabels: {k8s-app: aws-node}}
  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: "10%"}}
  template:
    metadata: {labels: {k8s-app: aws-node}}
    spec:
      hostNetwork: true
      priorityClassName: system-node-critical
      serviceAccountName: aws-node
      terminationGracePeriodSeconds: 10
      tolerations: [{operator: Exists}]
      initContainers:
      - name: aws-vpc-cni-init
        image: IMAGE
        imagePullPolicy: Never
        command: [/bin/sh, -c, "cp /app/cni/* /host/opt/cni/bin/"]
        securityContext: {privileged: true}
        volumeMounts: [{name: cni-bin-dir, mountPath: /host/opt/cni/bin}]
      containers:
      - name: aws-node
        image: IMAGE
        imagePullPolicy: Never
        command: [/bin/sh, -c, "/app/ipamd & /app/aws-vpc-cni --plugin /app/aws-cni --ref-plugins '' --bin-dir /host/opt/cni/bin --conf-dir /host/etc/cni/net.d --wait 120s || exit 1; wait"]
        env:
        - name: MY_NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
        - name: MY_POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: MY_POD_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
ENV
        readinessProbe:
          exec: {command: [test, -f, /host/etc/cni/net.d/10-aws.conflist]}
          periodSeconds: 1
        securityContext: {privileged: true}
        volumeMounts:
        - {name: cni-bin-dir, mountPath: /host/opt/cni/bin}
        - {name: cni-net-dir, mountPath: /host/etc/cni/net.d}
        - {name: log-dir, mountPath: /var/log/aws-routed-eni}
        - {name: run-dir, mountPath: /var/run/aws-node}
        - {name: xtables-lock, mountPath: /run/xtables.lock}
      volumes:
      - {name: cni-bin-dir, hostPath: {path: /opt/cni/bin}}
      - {name: cni-net-dir, hostPath: {path: /etc/cni/net.d}}
      - {name: log-dir, hostPath: {path: /var/log/aws-routed-eni, type: DirectoryOrCreate}}
      - {name: run-dir, hostPath: {path: /var/run/aws-node, type: DirectoryOrCreate}}
      - {name: xtables-lock, hostPath: {path: /run/xtables.lock, type: FileOrCreate}}
`

// UpstreamAWSNodeManifest rewrites the real VPC CNI's own manifest
// (config/master/aws-k8s-cni.yaml of its module) for the lab: its two
// images replaced by the locally built ones, the network policy agent
// container dropped (vpclab does not build it; without
// NETWORK_POLICY_ENFORCING_MODE the plugin does not call it, as upstream
// documents), and env merged into the aws-node container (the fabric's EC2
// endpoint, the lab's aws-node settings).
func UpstreamAWSNodeManifest(manifest []byte, mainImage, initImage string, env map[string]string) ([]byte, error) {
	dec := yaml.NewDecoder(bytes.NewReader(manifest))
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	found := false
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("upstream manifest: %w", err)
		}
		if doc == nil {
			continue
		}
		if doc["kind"] == "DaemonSet" {
			if err := rewriteDaemonSet(doc, mainImage, initImage, env); err != nil {
				return nil, err
			}
			found = true
		}
		if err := enc.Encode(doc); err != nil {
			return nil, err
		}
	}
	if !found {
		return nil, errors.New("upstream manifest has no DaemonSet")
	}
	return out.Bytes(), enc.Close()
}

func rewriteDaemonSet(ds map[string]any, mainImage, initImage string, env map[string]string) error {
	spec, _ := dig(ds, "spec", "template", "spec").(map[string]any)
	if spec == nil {
		return errors.New("upstream DaemonSet has no pod spec")
	}
	for _, c := range list(spec["initContainers"]) {
		c["image"], c["imagePullPolicy"] = initImage, "Never"
	}
	var keep []any
	for _, c := range list(spec["containers"]) {
		if c["name"] != "aws-node" {
			continue // the network policy agent
		}
		c["image"], c["imagePullPolicy"] = mainImage, "Never"
		var envs []any
		seen := map[string]bool{}
		for _, e := range list(c["env"]) {
			name, _ := e["name"].(string)
			if name == "NETWORK_POLICY_ENFORCING_MODE" {
				continue
			}
			if v, ok := env[name]; ok {
				e = map[string]any{"name": name, "value": v}
			}
			seen[name] = true
			envs = append(envs, e)
		}
		names := make([]string, 0, len(env))
		for k := range env {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			if !seen[k] {
				envs = append(envs, map[string]any{"name": k, "value": env[k]})
			}
		}
		c["env"] = envs
		keep = append(keep, c)
	}
	if len(keep) != 1 {
		return errors.New("upstream DaemonSet has no aws-node container")
	}
	spec["containers"] = keep
	return nil
}

func dig(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

func list(v any) []map[string]any {
	var out []map[string]any
	l, _ := v.([]any)
	for _, x := range l {
		if m, ok := x.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}
