package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/lab/k8s"
)

// vpclabAWSNodeImage is the tag of aws-node for vpclab's CNI in a lab.
const vpclabAWSNodeImage = "vpclab.local/aws-node:dev"

// upstreamImageTags are the tags of the real VPC CNI's images built for
// a version.
func upstreamImageTags(version string) (main, init string) {
	v := version
	if v == "" {
		v = "dev"
	}
	return "vpclab.local/amazon-k8s-cni:" + v, "vpclab.local/amazon-k8s-cni-init:" + v
}

// prepareAWSNodeImages writes the aws-node image tarballs for the lab's
// CNI into its k8s directory, and returns them.
func (l *Lab) prepareAWSNodeImages(b CNIBuild) ([]string, error) {
	dir := l.kubeDir()
	if !b.CNI.IsUpstream() {
		im, err := k8s.VpclabAWSNodeImage(vpclabAWSNodeImage, l.cfg.BinDir, l.cfg.RefPluginsDir)
		if err != nil {
			return nil, err
		}
		tar := filepath.Join(dir, "aws-node.tar")
		return []string{tar}, im.WriteFile(tar)
	}
	mainTag, initTag := upstreamImageTags(b.Version)
	main, init, err := k8s.UpstreamImages(mainTag, initTag, b.AppDir, l.cfg.RefPluginsDir)
	if err != nil {
		return nil, err
	}
	// the manifest is not part of the image
	delete(main.Files, "/app/"+manifestFile)
	tars := []string{filepath.Join(dir, "amazon-k8s-cni.tar"), filepath.Join(dir, "amazon-k8s-cni-init.tar")}
	if err := main.WriteFile(tars[0]); err != nil {
		return nil, err
	}
	return tars, init.WriteFile(tars[1])
}

// awsNodeEnv is the environment the aws-node container gets besides what
// its manifest sets: the fabric's EC2 endpoint (both spellings, see
// baseNodeEnv), and the lab's aws-node settings.
func (l *Lab) awsNodeEnv(upstream bool) map[string]string {
	env := map[string]string{"AWS_EC2_ENDPOINT": fabric.EC2Endpoint, "AWS_ENDPOINT_URL_EC2": fabric.EC2Endpoint}
	if !upstream {
		env = baseNodeEnv()
	}
	if l.sgpEnabled() {
		env["ENABLE_POD_ENI"] = "true"
	}
	for k, v := range l.cfg.Env {
		env[k] = v
	}
	return env
}

// installAddons deploys aws-node (vpclab's or the real VPC CNI's own
// manifest) and CoreDNS, then waits until every node is Ready (which
// needs aws-node's conflist), aws-node runs everywhere and DNS serves.
func (l *Lab) installAddons(ctx context.Context, b CNIBuild, progress Progress) error {
	var manifest []byte
	if b.CNI.IsUpstream() {
		raw, err := os.ReadFile(filepath.Join(b.AppDir, manifestFile))
		if err != nil {
			return fmt.Errorf("the VPC CNI's manifest (%s): %w", manifestFile, err)
		}
		mainTag, initTag := upstreamImageTags(b.Version)
		if manifest, err = k8s.UpstreamAWSNodeManifest(raw, mainTag, initTag, l.awsNodeEnv(true)); err != nil {
			return err
		}
	} else {
		manifest = []byte(k8s.VpclabAWSNodeManifest(vpclabAWSNodeImage, l.awsNodeEnv(false)))
	}
	if err := l.applyENIConfigs(ctx); err != nil {
		return err
	}
	if _, err := l.Kubectl(ctx, manifest, "apply", "-f", "-"); err != nil {
		return fmt.Errorf("aws-node: %w", err)
	}
	// CoreDNS's image (and agnhost's) is imported while aws-node starts.
	for _, n := range l.Nodes() {
		select {
		case err := <-n.imagesDone:
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if _, err := l.Kubectl(ctx, []byte(k8s.CoreDNSManifest()), "apply", "-f", "-"); err != nil {
		return fmt.Errorf("CoreDNS: %w", err)
	}
	timeout := "--timeout=" + l.cfg.slow(180*time.Second).String()
	steps := [][]string{
		{"wait", "--for=condition=Ready", "node", "--all", timeout},
		{"-n", "kube-system", "rollout", "status", "daemonset/aws-node", timeout},
		{"-n", "kube-system", "rollout", "status", "deployment/coredns", timeout},
	}
	for _, s := range steps {
		if _, err := l.Kubectl(ctx, nil, s...); err != nil {
			return err
		}
	}
	progress("Kubernetes: %d nodes Ready, aws-node (%s) running, CoreDNS at %s", len(l.Nodes()), b.CNI, k8s.ClusterDNS)
	return nil
}

// applyENIConfigs defines ENIConfig and creates the lab's ENIConfigs
// (their subnets and "default" groups resolved to ids) before aws-node
// starts, so custom networking finds the node's at once.
func (l *Lab) applyENIConfigs(ctx context.Context) error {
	if _, err := l.Kubectl(ctx, []byte(k8s.ENIConfigCRD), "apply", "-f", "-"); err != nil {
		return fmt.Errorf("ENIConfig definition: %w", err)
	}
	if _, err := l.Kubectl(ctx, nil, "wait", "--for=condition=Established", "crd/eniconfigs.crd.k8s.amazonaws.com", "--timeout="+l.cfg.slow(time.Minute).String()); err != nil {
		return fmt.Errorf("ENIConfig definition: %w", err)
	}
	var docs []string
	for _, e := range l.cfg.Kubernetes.ENIConfigs {
		subnet, ok := l.SubnetID(e.Subnet)
		if !ok {
			return fmt.Errorf("ENIConfig %s: no subnet %q", e.Name, e.Subnet)
		}
		groups := make([]string, 0, len(e.SecurityGroups))
		for _, g := range e.SecurityGroups {
			if g == "default" {
				id, ok := l.SecurityGroupID("default")
				if !ok {
					return fmt.Errorf("the lab's VPC %s has no default security group", l.vpcID)
				}
				g = id
			}
			groups = append(groups, g)
		}
		docs = append(docs, k8s.ENIConfigManifest(e.Name, subnet, groups))
	}
	if len(docs) == 0 {
		return nil
	}
	if _, err := l.Kubectl(ctx, []byte(strings.Join(docs, "---\n")), "apply", "-f", "-"); err != nil {
		return fmt.Errorf("ENIConfigs: %w", err)
	}
	return nil
}
