package lab

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// NodeDirs are the directories a node sees at the standard paths (DESIGN.md).
var NodeDirs = []string{"/var/run/aws-node", "/var/log/aws-routed-eni", "/opt/cni/bin", "/etc/cni/net.d"}

// hostDir maps a node path ("/var/run/aws-node") to its directory on the
// host under the node's root.
func hostDir(root, nodePath string) string {
	return filepath.Join(root, strings.ReplaceAll(strings.TrimPrefix(nodePath, "/"), "/", "_"))
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// makePrivate makes dir a private mount point, so namespace files can be
// bind-mounted inside it.
func makePrivate(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", dir, err)
	}
	return nil
}

// newMountNS creates a persistent mount namespace (held by a bind mount on
// file) in which each of NodeDirs is bind-mounted from the node's root,
// and each of extra (node path → host directory) after them.
func newMountNS(file, root string, extra [][2]string) error {
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		return err
	}
	// Slave: the host's later mounts (pod namespaces under /run/netns)
	// appear inside; the node's own mounts stay inside.
	if err := run("unshare", "--mount="+file, "--propagation", "slave", "true"); err != nil {
		return fmt.Errorf("mount namespace: %w", err)
	}
	var script []string
	for _, d := range NodeDirs {
		src := hostDir(root, d)
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
		script = append(script, fmt.Sprintf("mkdir -p %s && mount --bind %s %s", d, src, d))
	}
	for _, m := range extra {
		if err := os.MkdirAll(m[1], 0o755); err != nil {
			return err
		}
		script = append(script, fmt.Sprintf("mkdir -p %s && mount --bind %s %s", m[0], m[1], m[0]))
	}
	if err := run("nsenter", "--mount="+file, "--", "sh", "-ec", strings.Join(script, "\n")); err != nil {
		return fmt.Errorf("node mounts: %w", err)
	}
	return nil
}

// unmountUnder lazily unmounts every mount at or below dir, deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			mp := strings.ReplaceAll(fields[4], `\040`, " ")
			if mp == dir || strings.HasPrefix(mp, dir+"/") {
				mounts = append(mounts, mp)
			}
		}
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	var first error
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && first == nil && err != unix.EINVAL && err != unix.ENOENT {
			first = fmt.Errorf("unmount %s: %w", m, err)
		}
	}
	return first
}

// ensureSharedNetnsDir makes the named-namespace directory a shared mount
// (as `ip netns add` does), so namespaces created later are visible inside
// node mount namespaces.
func ensureSharedNetnsDir(dir string) error {
	real, err := filepath.EvalSymlinks(filepath.Dir(dir))
	if err != nil {
		return err
	}
	dir = filepath.Join(real, filepath.Base(dir))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 6 && f[4] == dir {
			if strings.Contains(l, " shared:") {
				return nil
			}
			return unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, "")
		}
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", dir, err)
	}
	return unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, "")
}
