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

// InstallOptions are what aws-node's entrypoint decides from its
// environment.
type InstallOptions struct {
	Plugin        string // the aws-cni binary to install
	BinDir        string // e.g. /opt/cni/bin
	ConfDir       string // e.g. /etc/cni/net.d
	RefPluginsDir string // reference plugins (loopback, portmap, bandwidth); "" skips
	Socket        string // ipamd socket; also written to the conflist when not the default
	Checkpoint    string // ipamd checkpoint, when not the default
	Wait          time.Duration
	CNIVersion    string
	VethPrefix    string
	MTU           int
	PodSGMode     string
	LogFile       string
	LogLevel      string
}

// Conflist returns the 10-aws.conflist aws-node would write: aws-cni, then
// portmap with snat.
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
	list := map[string]any{
		"cniVersion": o.CNIVersion, "name": "aws-cni",
		"plugins": []any{aws, map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true}},
	}
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

// Install does what aws-node's entrypoint does: wait for ipamd, copy the
// binaries, then (atomically) write the conflist.
func Install(ctx context.Context, o InstallOptions) error {
	if err := WaitHealthy(ctx, o.Socket, o.Wait); err != nil {
		return err
	}
	if err := copyAtomic(o.Plugin, filepath.Join(o.BinDir, "aws-cni"), 0o755); err != nil {
		return err
	}
	if o.RefPluginsDir != "" {
		for _, p := range []string{"loopback", "portmap", "bandwidth"} {
			src := filepath.Join(o.RefPluginsDir, p)
			if _, err := os.Stat(src); err == nil {
				if err := copyAtomic(src, filepath.Join(o.BinDir, p), 0o755); err != nil {
					return err
				}
			}
		}
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
