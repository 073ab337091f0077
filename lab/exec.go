package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// nodeExec runs CNI plugins on a node (inside its network and mount
// namespaces), the way a runtime on that node would: plugin paths are the
// node's (/opt/cni/bin/...).
type nodeExec struct {
	n *Node
	version.PluginDecoder
}

// ExecPlugin implements invoke.Exec.
func (e *nodeExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+e.n.netns, "--mount="+e.n.mntns, "--", pluginPath)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		var te types.Error
		if json.Unmarshal(out.Bytes(), &te) == nil && (te.Code != 0 || te.Msg != "") {
			return nil, &te
		}
		return nil, fmt.Errorf("%s on %s: %w: %s%s", filepath.Base(pluginPath), e.n.Name, err, out.String(), stderr.String())
	}
	return out.Bytes(), nil
}

// FindInPath implements invoke.Exec: it looks in the node's directories.
func (e *nodeExec) FindInPath(plugin string, paths []string) (string, error) {
	for _, p := range paths {
		full := filepath.Join(p, plugin)
		host := filepath.Join(e.n.path(p), plugin)
		if _, err := os.Stat(host); err == nil {
			return full, nil
		}
	}
	return "", fmt.Errorf("CNI plugin %s not found on node %s in %v", plugin, e.n.Name, paths)
}

func resultIP(res types.Result) (netip.Addr, error) {
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("CNI result: %w", err)
	}
	for _, ip := range r.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok && a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("CNI result has no IPv4 address: %v", r)
}
