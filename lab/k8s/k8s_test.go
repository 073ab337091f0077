package k8s

import (
	"archive/tar"
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// upstreamManifest is the shape of the VPC CNI's config/master/aws-k8s-cni.yaml
// that matters: two documents, the DaemonSet with an init container, aws-node
// and the network policy agent.
const upstreamManifest = `apiVersion: v1
kind: ServiceAccount
metadata: {name: aws-node, namespace: kube-system}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: aws-node, namespace: kube-system}
spec:
  template:
    spec:
      initContainers:
      - name: aws-vpc-cni-init
        image: 602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni-init:v1.23.2
      containers:
      - name: aws-node
        image: 602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni:v1.23.2
        env:
        - {name: WARM_ENI_TARGET, value: "1"}
        - {name: NETWORK_POLICY_ENFORCING_MODE, value: standard}
        - name: MY_NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
      - name: aws-eks-nodeagent
        image: 602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon/aws-network-policy-agent:v1.2.0
`

func TestUpstreamAWSNodeManifest(t *testing.T) {
	out, err := UpstreamAWSNodeManifest([]byte(upstreamManifest), "vpclab.local/amazon-k8s-cni:v1", "vpclab.local/amazon-k8s-cni-init:v1",
		map[string]string{"WARM_ENI_TARGET": "0", "AWS_EC2_ENDPOINT": "http://169.254.169.250"})
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	var docs []map[string]any
	for {
		var d map[string]any
		if err := dec.Decode(&d); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, d)
	}
	if len(docs) != 2 {
		t.Fatalf("%d documents, want 2:\n%s", len(docs), out)
	}
	spec := dig(docs[1], "spec", "template", "spec").(map[string]any)
	if img := list(spec["initContainers"])[0]["image"]; img != "vpclab.local/amazon-k8s-cni-init:v1" {
		t.Errorf("init image %v", img)
	}
	cs := list(spec["containers"])
	if len(cs) != 1 || cs[0]["name"] != "aws-node" || cs[0]["image"] != "vpclab.local/amazon-k8s-cni:v1" || cs[0]["imagePullPolicy"] != "Never" {
		t.Fatalf("containers %v, want aws-node alone with the local image", cs)
	}
	env := map[string]any{}
	for _, e := range list(cs[0]["env"]) {
		env[e["name"].(string)] = e["value"]
		if e["name"] == "MY_NODE_NAME" && e["valueFrom"] == nil {
			t.Error("MY_NODE_NAME lost its fieldRef")
		}
	}
	if env["WARM_ENI_TARGET"] != "0" || env["AWS_EC2_ENDPOINT"] != "http://169.254.169.250" {
		t.Errorf("env %v: the lab's values must win and be added", env)
	}
	if _, ok := env["NETWORK_POLICY_ENFORCING_MODE"]; ok {
		t.Error("NETWORK_POLICY_ENFORCING_MODE kept without the agent")
	}
	if _, err := UpstreamAWSNodeManifest([]byte("kind: ConfigMap\n"), "a", "b", nil); err == nil || !strings.Contains(err.Error(), "no DaemonSet") {
		t.Errorf("a manifest without a DaemonSet: %v", err)
	}
}

func TestKubeletConfigPinsTheHostPitfalls(t *testing.T) {
	c := KubeletConfig(KubeletOptions{CgroupRoot: "/vpclab-l-node", MaxPods: 29, ProviderID: "aws:///us-west-2a/i-1"})
	var v map[string]any
	if err := yaml.Unmarshal([]byte(c), &v); err != nil {
		t.Fatalf("%v:\n%s", err, c)
	}
	for k, want := range map[string]any{"failCgroupV1": false, "maxPods": 29, "providerID": "aws:///us-west-2a/i-1", "cgroupRoot": "/vpclab-l-node"} {
		if v[k] != want {
			t.Errorf("%s = %v, want %v", k, v[k], want)
		}
	}
	if !strings.Contains(ContainerdConfig(), "restrict_oom_score_adj = true") {
		t.Error("containerd must not change OOM scores (no CAP_SYS_RESOURCE)")
	}
}

func TestImageIsADockerArchive(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "prog")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	im := Image{Tag: "vpclab.local/t:1", Files: map[string]string{"/app/prog": bin}, Data: map[string][]byte{"/etc/x": []byte("x")},
		Symlinks: map[string]string{"/bin/sh": "/app/prog"}, Entrypoint: []string{"/app/prog"}}
	var a, b bytes.Buffer
	if err := im.Write(&a); err != nil {
		t.Fatal(err)
	}
	if err := im.Write(&b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("the same inputs gave different tarballs")
	}
	out := filepath.Join(t.TempDir(), "t.tar")
	if err := im.WriteFile(out); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, a.Bytes()) {
		t.Errorf("WriteFile differs from Write (%v)", err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), "*")); len(left) != 1 {
		t.Errorf("WriteFile left %v beside the tarball", left)
	}
	if err := (Image{Tag: "x", Files: map[string]string{"/a": filepath.Join(dir, "missing")}}).WriteFile(filepath.Join(filepath.Dir(out), "bad.tar")); err == nil {
		t.Error("an image of a missing file was written")
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), "*")); len(left) != 1 {
		t.Errorf("a failed WriteFile left %v", left)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(&a)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		files[h.Name], _ = io.ReadAll(tr)
	}
	var manifest []struct {
		Config           string
		RepoTags, Layers []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil || len(manifest) != 1 || manifest[0].RepoTags[0] != im.Tag {
		t.Fatalf("manifest %s (%v)", files["manifest.json"], err)
	}
	layer := map[string]*tar.Header{}
	lr := tar.NewReader(bytes.NewReader(files[manifest[0].Layers[0]]))
	for {
		h, err := lr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		layer[h.Name] = h
	}
	if h := layer["app/prog"]; h == nil || h.Mode&0o111 == 0 {
		t.Errorf("app/prog missing or not executable: %v", layer)
	}
	if h := layer["bin/sh"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "/app/prog" {
		t.Errorf("bin/sh link: %+v", h)
	}
	if layer["etc/x"] == nil {
		t.Error("data file missing")
	}
}

func TestPKI(t *testing.T) {
	ca, err := NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ca.Issue("system:node:n1", []string{"system:nodes"}, "10.0.0.5", "n1")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(p.Cert)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "n1", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("node certificate does not verify against the CA: %v", err)
	}
	if cert.Subject.CommonName != "system:node:n1" || len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != "system:nodes" {
		t.Errorf("subject %v: the apiserver maps CN to the user and O to groups", cert.Subject)
	}
	if len(cert.IPAddresses) != 1 || cert.IPAddresses[0].String() != "10.0.0.5" {
		t.Errorf("IP SANs %v", cert.IPAddresses)
	}
}
