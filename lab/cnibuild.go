package lab

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/sys/unix"

	"github.com/vpclab/vpclab/fakeec2/catalog"
	"github.com/vpclab/vpclab/internal/cache"
)

// upstreamModule is the real VPC CNI's Go module.
const upstreamModule = "github.com/aws/amazon-vpc-cni-k8s"

// upstreamCmds maps the aws-node image's file names (/app) to the module's
// command packages.
var upstreamCmds = []struct{ file, pkg string }{
	{"aws-k8s-agent", "cmd/aws-k8s-agent"},
	{"aws-cni", "cmd/routed-eni-cni-plugin"},
	{"egress-cni", "cmd/egress-cni-plugin"},
	{"grpc-health-probe", "cmd/grpc-health-probe"},
	{"aws-vpc-cni", "cmd/aws-vpc-cni"},
	{"aws-vpc-cni-init", "cmd/aws-vpc-cni-init"}, // the init container's, for Kubernetes mode
}

// CNIBuild is a node CNI ready to run: for the real VPC CNI, a directory
// laid out like the aws-node image's /app (aws-vpc-cni, aws-k8s-agent,
// aws-cni, egress-cni, grpc-health-probe, 10-aws.conflist,
// eni-max-pods.txt).
type CNIBuild struct {
	CNI CNI `json:"cni"`
	// Version is the upstream version, what `git describe` says of a
	// checkout, or "" (vpclab's own, prebuilt binaries).
	Version string `json:"version,omitempty"`
	// AppDir is the /app directory (empty for vpclab's own).
	AppDir string `json:"appDir,omitempty"`
}

// CacheDir is where vpclab keeps what it builds: $VPCLAB_CACHE, else
// $XDG_CACHE_HOME/vpclab, else ~/.cache/vpclab.
func CacheDir() string { return cache.Dir() }

// BuildCNI makes c runnable: an upstream version is built once into the
// cache (later calls reuse it), a checkout is built on every call (Go's
// build cache keeps that quick), prebuilt binaries are checked. Failures
// are one line naming what is wrong.
func BuildCNI(ctx context.Context, c CNI, progress Progress) (CNIBuild, error) {
	if progress == nil {
		progress = func(string, ...any) {}
	}
	b := CNIBuild{CNI: c}
	var err error
	switch c.Kind {
	case "", CNIVpclab:
		b.CNI = CNI{Kind: CNIVpclab}
		return b, nil
	case CNIUpstream:
		b.Version = c.Version
		b.AppDir, err = buildUpstream(ctx, c.Version, progress)
	case CNIPath:
		b.AppDir, b.Version, err = buildCheckout(ctx, c.Dir, progress)
	case CNIBin:
		b.AppDir, err = prebuilt(c.Dir)
	default:
		err = fmt.Errorf("unknown kind %q", c.Kind)
	}
	if err != nil {
		if ctx.Err() != nil {
			return CNIBuild{}, fmt.Errorf("building VPC CNI %s: %w", c, context.Cause(ctx))
		}
		return CNIBuild{}, fmt.Errorf("%w %s: %v", ErrNoCNI, c, err)
	}
	return b, nil
}

// buildUpstream builds a released version through a generated wrapper
// module (the upstream module has replace directives, so `go install
// module@version` refuses it): the wrapper requires the module at that
// version and repeats its replaces.
func buildUpstream(ctx context.Context, version string, progress Progress) (string, error) {
	dir := filepath.Join(CacheDir(), "cni", version)
	if app, ok := currentApp(dir); ok {
		return app, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(dir + ".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if app, ok := currentApp(dir); ok { // another process built it meanwhile
		return app, nil
	}
	src, gomod, err := downloadModule(ctx, version)
	if err != nil {
		_ = os.RemoveAll(dir) // nothing of an unknown version stays
		_ = os.Remove(dir + ".lock")
		return "", err
	}
	progress("building VPC CNI %s (first time: ~5 min on 2 cores; cached in %s)…", version, dir)
	wrapper := filepath.Join(dir, "wrapper")
	if err := writeWrapper(wrapper, version, gomod); err != nil {
		return "", err
	}
	var pkgs []string
	for _, c := range upstreamCmds {
		pkgs = append(pkgs, upstreamModule+"/"+c.pkg+"@"+version)
	}
	if _, err := goCmd(ctx, wrapper, append([]string{"get", "-tool"}, pkgs...)...); err != nil {
		return "", err
	}
	return assembleApp(ctx, wrapper, upstreamModule+"/", src, version, dir)
}

// buildCheckout builds a local checkout of the upstream source in place
// (it is its own main module, so its replaces apply).
func buildCheckout(ctx context.Context, dir string, progress Progress) (string, string, error) {
	mf, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return "", "", fmt.Errorf("no go.mod in %s: want a checkout of %s", dir, upstreamModule)
	}
	if modfile.ModulePath(mf) != upstreamModule {
		return "", "", fmt.Errorf("%s is module %q, not %s", dir, modfile.ModulePath(mf), upstreamModule)
	}
	version := "dev"
	if out, err := exec.CommandContext(ctx, "git", "-C", dir, "describe", "--tags", "--always", "--dirty").Output(); err == nil {
		version = strings.TrimSpace(string(out))
	}
	sum := sha256.Sum256([]byte(dir))
	parent := filepath.Join(CacheDir(), "cni", "path-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", "", err
	}
	unlock, err := lockFile(parent + ".lock")
	if err != nil {
		return "", "", err
	}
	defer unlock()
	progress("building VPC CNI from %s (%s)…", dir, version)
	app, err := assembleApp(ctx, dir, "./", dir, version, parent)
	return app, version, err
}

// assembleApp builds the commands (packages prefix+cmd/… run in dir),
// lays out a new app directory in parent — the binaries under their image
// names, the conflist template from the source's misc/, eni-max-pods.txt
// from vpclab's catalog — and publishes it. A failed build leaves the
// current one.
func assembleApp(ctx context.Context, dir, prefix, src, version, parent string) (string, error) {
	tmp, err := os.MkdirTemp(parent, "new-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // a failed build leaves nothing half-made
	if err := fillApp(ctx, dir, prefix, src, version, tmp); err != nil {
		return "", err
	}
	return publishApp(parent, tmp)
}

func fillApp(ctx context.Context, dir, prefix, src, version, tmp string) error {
	bin := filepath.Join(tmp, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	// The flags of upstream's Makefile (its -X paths are not full package
	// paths, so release binaries report the version "" in the gRPC
	// handshake, which is what vpclab's plugin and ipamd send too).
	args := []string{"build", "-ldflags", "-s -w -X pkg/version/info.Version=" + version + " -X pkg/awsutils/awssession.version=" + version, "-o", bin + "/"}
	for _, c := range upstreamCmds {
		args = append(args, prefix+c.pkg)
	}
	if _, err := goCmd(ctx, dir, args...); err != nil {
		return err
	}
	for _, c := range upstreamCmds {
		if err := os.Rename(filepath.Join(bin, filepath.Base(c.pkg)), filepath.Join(tmp, c.file)); err != nil {
			return err
		}
	}
	_ = os.Remove(bin)
	tpl, err := os.ReadFile(filepath.Join(src, "misc", "10-aws.conflist"))
	if err != nil {
		return fmt.Errorf("conflist template: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "10-aws.conflist"), tpl, 0o644); err != nil {
		return err
	}
	if err := writeMaxPods(filepath.Join(tmp, "eni-max-pods.txt")); err != nil {
		return err
	}
	if m, err := os.ReadFile(filepath.Join(src, "config", "master", manifestFile)); err == nil {
		if err := os.WriteFile(filepath.Join(tmp, manifestFile), m, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// manifestFile is where an app directory keeps the release's own
// Kubernetes manifest (config/master/aws-k8s-cni.yaml), for Kubernetes mode.
const manifestFile = "aws-k8s-cni.yaml"

// prebuilt lays out binaries built elsewhere (upstream's `make build-linux`
// output, or an image's /app) as an app directory of links, adding
// eni-max-pods.txt when the directory has none.
func prebuilt(dir string) (string, error) {
	var missing []string
	for _, f := range []string{"aws-vpc-cni", "aws-k8s-agent", "aws-cni", "egress-cni", "grpc-health-probe", "10-aws.conflist"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.IsDir() {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("%s lacks %s (want the aws-node image's /app layout)", dir, strings.Join(missing, ", "))
	}
	sum := sha256.Sum256([]byte(dir))
	parent := filepath.Join(CacheDir(), "cni", "bin-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(parent + ".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	tmp, err := os.MkdirTemp(parent, "new-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		if err := os.Symlink(filepath.Join(dir, e.Name()), filepath.Join(tmp, e.Name())); err != nil {
			return "", err
		}
	}
	if _, err := os.Stat(filepath.Join(tmp, "eni-max-pods.txt")); err != nil {
		if err := writeMaxPods(filepath.Join(tmp, "eni-max-pods.txt")); err != nil {
			return "", err
		}
	}
	return publishApp(parent, tmp)
}

func writeMaxPods(path string) error {
	var b bytes.Buffer
	if err := catalog.WriteENIMaxPods(&b); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// appComplete says whether app holds every file a node needs.
func appComplete(app string) bool {
	for _, c := range upstreamCmds {
		if _, err := os.Stat(filepath.Join(app, c.file)); err != nil {
			return false
		}
	}
	for _, f := range []string{"10-aws.conflist", "eni-max-pods.txt"} {
		if _, err := os.Stat(filepath.Join(app, f)); err != nil {
			return false
		}
	}
	return true
}

// downloadModule fetches the upstream module at version from the Go module
// proxy and returns its source directory and go.mod file.
func downloadModule(ctx context.Context, version string) (string, string, error) {
	out, err := goCmd(ctx, "", "mod", "download", "-json", upstreamModule+"@"+version)
	var info struct{ Dir, GoMod, Error string }
	if jerr := json.Unmarshal(out, &info); jerr == nil && info.Error != "" {
		return "", "", fmt.Errorf("not on the Go module proxy (`go list -m -versions %s` lists what is): %s", upstreamModule, info.Error)
	}
	if err != nil {
		return "", "", err
	}
	return info.Dir, info.GoMod, nil
}

// writeWrapper writes the wrapper module: it requires the upstream module
// at version and repeats the upstream go.mod's go version and replaces.
func writeWrapper(dir, version, upstreamGoMod string) error {
	data, err := os.ReadFile(upstreamGoMod)
	if err != nil {
		return err
	}
	up, err := modfile.ParseLax(upstreamGoMod, data, nil)
	if err != nil {
		return fmt.Errorf("upstream go.mod: %w", err)
	}
	w := &modfile.File{}
	_ = w.AddModuleStmt("vpclab.local/vpc-cni-wrapper")
	if up.Go != nil {
		_ = w.AddGoStmt(up.Go.Version)
	}
	_ = w.AddRequire(upstreamModule, version)
	for _, r := range up.Replace {
		if modfile.IsDirectoryPath(r.New.Path) {
			continue // a path inside the upstream tree, not a module to fetch
		}
		if err := w.AddReplace(r.Old.Path, r.Old.Version, r.New.Path, r.New.Version); err != nil {
			return err
		}
	}
	out, err := w.Format()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(dir, "go.sum"))
	return os.WriteFile(filepath.Join(dir, "go.mod"), out, 0o644)
}

// goCmd runs the go command in dir (CGO off, no workspace) and returns its
// stdout; a failure is its first error line.
func goCmd(ctx context.Context, dir string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		return out, fmt.Errorf("go %s: %s", args[0], firstError(stderr.String(), err))
	}
	return out, nil
}

// firstError picks the line of go's output that says what failed.
func firstError(out string, err error) string {
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "go: downloading") && !strings.HasPrefix(l, "go: finding") && !strings.HasPrefix(l, "#") {
			return l
		}
	}
	return err.Error()
}

// lockFile takes an exclusive lock on path (waiting for it); builds of one
// version by two processes take turns.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
