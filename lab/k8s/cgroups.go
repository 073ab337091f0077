package k8s

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// cgroupBase is where the hierarchies are mounted.
const cgroupBase = "/sys/fs/cgroup"

// hierarchies lists the mounted cgroup hierarchies (each v1 controller,
// named ones, the unified v2 tree).
func hierarchies() []string {
	if _, err := os.Stat(filepath.Join(cgroupBase, "cgroup.controllers")); err == nil {
		return []string{cgroupBase} // a pure v2 host (its directories are cgroups, not hierarchies)
	}
	ents, _ := os.ReadDir(cgroupBase)
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, filepath.Join(cgroupBase, e.Name()))
		}
	}
	if len(out) == 0 { // a pure v2 host
		out = append(out, cgroupBase)
	}
	return out
}

// CreateCgroups makes root (e.g. "/vpclab-lab1-node-1") in every hierarchy,
// as a kubelet's cgroupRoot must exist; cpuset needs its cpus and mems
// copied from the parent before anything can join it.
func CreateCgroups(root string) error {
	// On cgroup v2 a child has the controllers its parent delegates: the
	// kubelet needs these below its cgroup root (systemd delegates some
	// of them only once a unit asks for them).
	if b, err := os.ReadFile(filepath.Join(cgroupBase, "cgroup.controllers")); err == nil {
		for _, c := range strings.Fields(string(b)) {
			if slices.Contains([]string{"cpu", "cpuset", "memory", "pids", "io", "hugetlb"}, c) {
				_ = os.WriteFile(filepath.Join(cgroupBase, "cgroup.subtree_control"), []byte("+"+c), 0o644)
			}
		}
	}
	for _, h := range hierarchies() {
		dir := filepath.Join(h, root)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if b, err := os.ReadFile(filepath.Join(h, f)); err == nil {
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// KillCgroups SIGKILLs every process in root, in any hierarchy (a node's
// pods: their containers are in neither the node's network nor its mount
// namespace).
func KillCgroups(root string) int {
	killed := 0
	for _, h := range hierarchies() {
		_ = filepath.WalkDir(filepath.Join(h, root), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
					if syscall.Kill(pid, syscall.SIGKILL) == nil {
						killed++
					}
				}
			}
			return nil
		})
	}
	return killed
}

// RemoveCgroups removes root and everything below it from every hierarchy,
// deepest first; its processes must be gone.
func RemoveCgroups(root string) error {
	var errs []error
	for _, h := range hierarchies() {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(h, root), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
