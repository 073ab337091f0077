package k8s

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// HostFiles maps the host's programs (absolute paths) and the shared
// libraries `ldd` says they load, at the same paths, for an image: how a
// container gets iptables or a shell without a registry or a base image.
func HostFiles(programs ...string) (map[string]string, error) {
	files := map[string]string{}
	for _, p := range programs {
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return nil, fmt.Errorf("host program %s: %w", p, err)
		}
		files[p] = real
		out, err := exec.Command("ldd", real).CombinedOutput()
		if err != nil {
			if strings.Contains(string(out), "not a dynamic executable") {
				continue
			}
			return nil, fmt.Errorf("ldd %s: %v: %s", real, err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			lib := ""
			switch {
			case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
				lib = f[2]
			case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
				lib = f[0] // the loader
			}
			if lib == "" {
				continue
			}
			r, err := filepath.EvalSymlinks(lib)
			if err != nil {
				return nil, fmt.Errorf("library %s of %s: %w", lib, p, err)
			}
			files[lib] = r
		}
	}
	return files, nil
}
