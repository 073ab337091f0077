package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// ConflistName is the file aws-node writes into the CNI conf dir.
const ConflistName = "10-aws.conflist"

// RefPlugins are the CNI project's reference plugins aws-node installs
// beside aws-cni (its init container copies them): loopback, and the ones
// its conflist may chain.
var RefPlugins = []string{"loopback", "portmap", "bandwidth", "tuning"}

// InstallOptions are what aws-node's entrypoint decides from its
// environment.
type InstallOptions struct {
	Plugin string // the aws-cni binary to install
	// Egress is the egress-cni binary to install and chain after aws-cni
	// (disabled, as aws-node writes it for IPv4); "" leaves it out.
	Egress        string
	BinDir        string // e.g. /opt/cni/bin
	ConfDir       string // e.g. /etc/cni/net.d
	RefPluginsDir string // reference plugins (RefPlugins); "" skips
	Socket        string // ipamd socket; also written to the conflist when not the default
	Checkpoint    string // ipamd checkpoint, when not the default
	Wait          time.Duration
	CNIVersion    string // aws-node writes 0.4.0
	// DisableCheck sets the conflist's disableCheck (aws-node's does: the
	// runtime never calls CHECK).
	DisableCheck bool
	// Bandwidth (ENABLE_BANDWIDTH_PLUGIN) chains the bandwidth plugin (pod
	// ingress/egress shaping from the kubernetes.io/*-bandwidth
	// annotations).
	Bandwidth bool
	// DisablePodV6 (DISABLE_POD_V6) chains the tuning plugin turning IPv6
	// off in every pod's network namespace.
	DisablePodV6 bool
	VethPrefix   string
	MTU          int
	PodSGMode    string
	LogFile      string
	LogLevel     string
}

// Conflist returns the 10-aws.conflist aws-node would write: aws-cni,
// egress-cni (disabled) when o.Egress is set, portmap with snat, then
// bandwidth and tuning when asked for, in aws-node's order.
func Conflist(o InstallOptions) ([]byte, error) {
	aws := map[string]any{
		"name": "aws-cni", "type": "aws-cni", "vethPrefix": o.VethPrefix, "mtu": fmt.Sprint(o.MTU),
		"podSGEnforcingMode": o.PodSGMode, "pluginLogFile": o.LogFile, "pluginLogLevel": o.LogLevel,
		"capabilities": map[string]bool{"io.kubernetes.cri.pod-annotations": true},
	}
	if o.Socket != "" && o.Socket != DefaultSocket {
		aws["ipamdSocket"] = o.Socket
	}
	if o.Checkpoint != "" && o.Checkpoint != DefaultCheckpoint {
		aws["ipamdCheckpoint"] = o.Checkpoint
	}
	plugins := []any{aws}
	if o.Egress != "" {
		// What aws-node writes for an IPv4 cluster whose node has no IPv6
		// address: IPv6 egress off.
		plugins = append(plugins, map[string]any{
			"name": "egress-cni", "type": "egress-cni", "mtu": fmt.Sprint(o.MTU), "enabled": "false", "randomizeSNAT": "prng", "nodeIP": "",
			"ipam": map[string]any{
				"type": "host-local", "ranges": [][]map[string]string{{{"subnet": "fd00::ac:00/118"}}},
				"routes": []map[string]string{{"dst": "::/0"}}, "dataDir": "/run/cni/v4pd/egress-v6-ipam",
			},
			"pluginLogFile": "/var/log/aws-routed-eni/egress-v6-plugin.log", "pluginLogLevel": o.LogLevel,
		})
	}
	plugins = append(plugins, map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true})
	if o.Bandwidth {
		plugins = append(plugins, map[string]any{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}})
	}
	if o.DisablePodV6 {
		plugins = append(plugins, map[string]any{"type": "tuning", "sysctl": map[string]string{
			"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1", "net.ipv6.conf.lo.disable_ipv6": "1",
		}})
	}
	list := map[string]any{"cniVersion": o.CNIVersion, "name": "aws-cni", "disableCheck": o.DisableCheck, "plugins": plugins}
	return json.MarshalIndent(list, "", "  ")
}

// WaitHealthy blocks until ipamd's gRPC health check on socket answers
// SERVING, or the timeout passes.
func WaitHealthy(ctx context.Context, socket string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if _, err := os.Stat(socket); err == nil {
			conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err == nil {
				c, cc := context.WithTimeout(ctx, time.Second)
				r, err := healthpb.NewHealthClient(conn).Check(c, &healthpb.HealthCheckRequest{})
				cc()
				conn.Close()
				if err == nil && r.Status == healthpb.HealthCheckResponse_SERVING {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ipamd at %s not healthy within %s", socket, timeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Install does what aws-node's entrypoint does, in its order: copy the
// binaries, wait for ipamd, then (atomically) write the conflist.
func Install(ctx context.Context, o InstallOptions) error {
	if err := copyAtomic(o.Plugin, filepath.Join(o.BinDir, "aws-cni"), 0o755); err != nil {
		return err
	}
	if o.Egress != "" {
		if err := copyAtomic(o.Egress, filepath.Join(o.BinDir, "egress-cni"), 0o755); err != nil {
			return err
		}
	}
	if o.RefPluginsDir != "" {
		for _, p := range RefPlugins {
			src := filepath.Join(o.RefPluginsDir, p)
			if _, err := os.Stat(src); err == nil {
				if err := copyAtomic(src, filepath.Join(o.BinDir, p), 0o755); err != nil {
					return err
				}
			}
		}
	}
	// The conflist appearing is what makes a kubelet call the plugin: only
	// once ipamd answers.
	if err := WaitHealthy(ctx, o.Socket, o.Wait); err != nil {
		return err
	}
	b, err := Conflist(o)
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(o.ConfDir, ConflistName), b, 0o644)
}

func copyAtomic(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("install %s: %w", src, err)
	}
	defer in.Close()
	b, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("install %s: %w", src, err)
	}
	return writeAtomic(dst, b, mode)
}

func writeAtomic(dst string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp*")
	if err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	_, werr := f.Write(b)
	f.Chmod(mode)
	serr := f.Sync()
	cerr := f.Close()
	if werr != nil || serr != nil || cerr != nil {
		os.Remove(f.Name())
		return fmt.Errorf("install %s: write failed: %v %v %v", dst, werr, serr, cerr)
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("install %s: %w", dst, err)
	}
	return nil
}
