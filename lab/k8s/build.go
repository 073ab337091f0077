// Package k8s is what vpclab's Kubernetes mode is made of, apart from the
// lab itself: the pinned builds (one multi-call Kubernetes binary,
// containerd, CoreDNS, the images), the cluster's PKI and kubeconfigs,
// and the configuration files of the control plane, kubelets, containerd
// and kube-proxy. The lab package runs them.
package k8s

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/vpclab/vpclab/internal/cache"
)

// Pinned versions; changing one rebuilds what depends on it.
const (
	KubeVersion       = "v1.37.2"
	ContainerdVersion = "v2.4.2"
	CoreDNSVersion    = "v1.14.7"
	// ResourceControllerVersion is the VPC Resource Controller that
	// labs with security groups for pods run (pinned in tools/rc/go.mod).
	ResourceControllerVersion = "v1.8.1"
)

// Image tags the cluster uses; every image is built locally and imported
// into each node's containerd (pods use them with imagePullPolicy Never or
// IfNotPresent).
const (
	PauseImage   = "registry.k8s.io/pause:3.10"
	AgnhostImage = "vpclab.local/agnhost:" + KubeVersion
	CoreDNSImage = "vpclab.local/coredns:" + CoreDNSVersion
)

// Dir is the cache directory of the pinned build.
func Dir() string {
	return filepath.Join(cache.Dir(), "k8s", KubeVersion+"-containerd-"+ContainerdVersion+"-coredns-"+CoreDNSVersion)
}

// Bin is the path of a built program: kube, agnhost, containerd,
// containerd-shim-runc-v2, ctr, coredns, pause.
func Bin(name string) string { return filepath.Join(Dir(), "bin", name) }

// imagesRevision names how the images are made: a change to their
// contents (Shell's applets, say) bumps it, so they are built again.
const imagesRevision = "r2"

// ImageTar is the path of a built image's tarball (pause, agnhost,
// coredns).
func ImageTar(name string) string { return filepath.Join(Dir(), "images-"+imagesRevision, name+".tar") }

// Built says whether the pinned build is complete; if not, the error says
// how to make it.
func Built() error {
	for _, f := range []string{Bin("kube"), Bin("containerd"), Bin("containerd-shim-runc-v2"), Bin("ctr"), ImageTar("pause"), ImageTar("agnhost"), ImageTar("coredns")} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("Kubernetes mode needs its build (%s is missing): run make kubernetes (the first time takes ~15 min on 2 cores)", f)
		}
	}
	if _, err := exec.LookPath("runc"); err != nil {
		return fmt.Errorf("Kubernetes mode needs runc on PATH (make deps installs it)")
	}
	return nil
}

// Build builds what Built checks, each piece only when it is missing:
// Kubernetes and agnhost from repo/tools/kube (a module of its own), the
// pause program from repo/tools/pause, containerd and CoreDNS from their
// Go modules, then the images.
func Build(ctx context.Context, repo string, progress func(string, ...any)) error {
	bin := filepath.Join(Dir(), "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(ImageTar("pause")), 0o755); err != nil {
		return err
	}
	kube := filepath.Join(repo, "tools", "kube")
	ver := "-X k8s.io/component-base/version.gitVersion=" + KubeVersion + " -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=" + strings.Split(KubeVersion, ".")[1] +
		" -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=" + KubeVersion
	steps := []struct {
		out, what string
		dir       string
		env       []string
		args      []string
	}{
		{Bin("kube"), "Kubernetes " + KubeVersion + " (one binary; ~8 min the first time)", kube, nil, []string{"build", "-ldflags", "-s -w " + ver, "-o", Bin("kube"), "."}},
		{Bin("agnhost"), "agnhost (the Kubernetes test image's program)", kube, nil, []string{"build", "-ldflags", "-s -w", "-o", Bin("agnhost"), "k8s.io/kubernetes/test/images/agnhost"}},
		{Bin("containerd"), "containerd " + ContainerdVersion, "", []string{"GOBIN=" + bin}, []string{"install", "-tags", "no_btrfs", "-ldflags", "-s -w",
			"github.com/containerd/containerd/v2/cmd/containerd@" + ContainerdVersion, "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@" + ContainerdVersion,
			"github.com/containerd/containerd/v2/cmd/ctr@" + ContainerdVersion}},
		{Bin("coredns"), "CoreDNS " + CoreDNSVersion, "", []string{"GOBIN=" + bin}, []string{"install", "-ldflags", "-s -w", "github.com/coredns/coredns@" + CoreDNSVersion}},
		{Bin("pause"), "pause", repo, nil, []string{"build", "-ldflags", "-s -w", "-o", Bin("pause"), "./tools/pause"}},
		{Bin(ResourceControllerBin), "the VPC Resource Controller " + ResourceControllerVersion + " (~5 min the first time)", filepath.Join(repo, "tools", "rc"), nil,
			[]string{"build", "-ldflags", "-s -w", "-o", Bin(ResourceControllerBin), "github.com/aws/amazon-vpc-resource-controller-k8s"}},
	}
	for _, s := range steps {
		if _, err := os.Stat(s.out); err == nil {
			continue
		}
		progress("building %s…", s.what)
		cmd := exec.CommandContext(ctx, "go", s.args...)
		cmd.Dir = s.dir
		cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS="), s.env...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build %s: %v: %s", s.what, err, tail(out.String()))
		}
	}
	if err := copyRCManifests(ctx, repo); err != nil {
		return err
	}
	return buildImages(progress)
}

// ResourceControllerBin is the VPC Resource Controller's program in Bin.
const ResourceControllerBin = "vpc-resource-controller"

// RCManifests are the controller module's own manifests a lab applies
// (its CRDs and RBAC), copied into the cache by Build.
var RCManifests = []string{
	"config/crd/bases/vpcresources.k8s.aws_cninodes.yaml",
	"config/crd/bases/vpcresources.k8s.aws_securitygrouppolicies.yaml",
	"config/rbac/role.yaml",
	"config/rbac/leader_election_role.yaml",
}

// RCManifest is the cached copy of one of RCManifests.
func RCManifest(name string) string {
	return filepath.Join(Dir(), "rc-"+ResourceControllerVersion, filepath.Base(name))
}

// BuiltRC says whether the VPC Resource Controller and its manifests are
// in the cache.
func BuiltRC() error {
	files := []string{Bin(ResourceControllerBin)}
	for _, m := range RCManifests {
		files = append(files, RCManifest(m))
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("security groups for pods need the VPC Resource Controller's build (%s is missing): run make kubernetes", f)
		}
	}
	return nil
}

// copyRCManifests copies the controller module's manifests into the cache.
func copyRCManifests(ctx context.Context, repo string) error {
	if _, err := os.Stat(RCManifest(RCManifests[len(RCManifests)-1])); err == nil {
		return nil
	}
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "github.com/aws/amazon-vpc-resource-controller-k8s")
	cmd.Dir = filepath.Join(repo, "tools", "rc")
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("locate the VPC Resource Controller's module: %w", err)
	}
	src := strings.TrimSpace(string(out))
	if err := os.MkdirAll(filepath.Dir(RCManifest(RCManifests[0])), 0o755); err != nil {
		return err
	}
	for _, m := range RCManifests {
		b, err := os.ReadFile(filepath.Join(src, m))
		if err != nil {
			return fmt.Errorf("the VPC Resource Controller's %s: %w", m, err)
		}
		if err := os.WriteFile(RCManifest(m), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// buildImages writes the image tarballs that are missing.
func buildImages(progress func(string, ...any)) error {
	shell, err := Shell()
	if err != nil {
		return err
	}
	agnhost := map[string]string{"/agnhost": Bin("agnhost")}
	for k, v := range shell.Files {
		agnhost[k] = v
	}
	images := []struct {
		name string
		im   Image
	}{
		{"pause", Image{Tag: PauseImage, Files: map[string]string{"/pause": Bin("pause")}, Entrypoint: []string{"/pause"}}},
		{"agnhost", Image{Tag: AgnhostImage, Files: agnhost, Symlinks: shell.Symlinks, Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}}},
		{"coredns", Image{Tag: CoreDNSImage, Files: map[string]string{"/coredns": Bin("coredns")}, Entrypoint: []string{"/coredns"}}},
	}
	for _, i := range images {
		if _, err := os.Stat(ImageTar(i.name)); err == nil {
			continue
		}
		progress("image %s", i.im.Tag)
		if err := i.im.WriteFile(ImageTar(i.name)); err != nil {
			return err
		}
	}
	return nil
}

// Shell is the host's busybox (with its libraries when it is dynamically
// linked) and the usual applet links (sh, ls, cat, ip, ping, nc, nslookup
// …): a shell and network tools for `kubectl exec`. Not wget: Debian
// 12's busybox wget crashes before it connects (SIGSEGV, static or not);
// `printf 'GET / HTTP/1.0\r\n\r\n' | nc HOST PORT` does its job.
func Shell() (Image, error) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return Image{}, fmt.Errorf("busybox not found on PATH (make deps installs busybox-static)")
	}
	files, err := HostFiles(bb)
	if err != nil {
		return Image{}, err
	}
	files["/bin/busybox"] = files[bb]
	delete(files, bb)
	links := map[string]string{}
	for _, a := range []string{"sh", "ls", "cat", "cp", "mv", "rm", "mkdir", "echo", "printf", "sleep", "ip", "ping", "nc", "nslookup", "ps", "grep", "sed", "awk", "env", "hostname", "test", "true", "false", "sysctl", "tail", "head", "wc", "date"} {
		links["/bin/"+a] = "/bin/busybox"
	}
	return Image{Files: files, Symlinks: links}, nil
}

func tail(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, "\n")
}
