package ipamd

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
)

// PodIPsAnnotation is the pod annotation ANNOTATE_POD_IP keeps: the pod's
// address, for controllers that must know it before the kubelet reports
// the pod's status.
const PodIPsAnnotation = "vpc.amazonaws.com/pod-ips"

// annotatePodIP sets the pod's PodIPsAnnotation to ip (ADD), or, with ip
// "", clears it if it still names released (DEL), as the VPC CNI with
// ANNOTATE_POD_IP: an unchanged value is not patched, a pod gone by its
// DEL is no error, and the merge patch is guarded by the pod's
// resourceVersion and retried on a conflict (four tries).
func (d *Daemon) annotatePodIP(ctx context.Context, namespace, name, ip, released string) error {
	path := "/api/v1/namespaces/" + url.PathEscape(namespace) + "/pods/" + url.PathEscape(name)
	var err error
	for range 4 {
		var p podView
		var found bool
		if p, found, err = d.kube.readPod(ctx, namespace, name); err != nil {
			return fmt.Errorf("pod %s/%s: %w", namespace, name, err)
		}
		if !found {
			if released != "" {
				return nil
			}
			return fmt.Errorf("pod %s/%s not found", namespace, name)
		}
		old, ok := p.Annotations[PodIPsAnnotation]
		switch {
		case ip != "" && ok && old == ip, ip == "" && !ok:
			return nil
		case ip == "" && old != released:
			return fmt.Errorf("pod %s/%s: released address %s is not the annotation's %q: not patched", namespace, name, released, old)
		}
		patch := map[string]any{"metadata": map[string]any{"resourceVersion": p.ResourceVersion, "annotations": map[string]string{PodIPsAnnotation: ip}}}
		err = d.kube.doAs(ctx, http.MethodPatch, path, "application/merge-patch+json", patch, nil)
		var se *statusError
		if !errors.As(err, &se) || se.code != http.StatusConflict {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("pod %s/%s: annotate %s: %w", namespace, name, PodIPsAnnotation, err)
	}
	return nil
}
