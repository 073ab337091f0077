// Package cache knows where vpclab keeps what it builds (the real VPC CNI,
// Kubernetes, containerd, images): $VPCLAB_CACHE, else
// $XDG_CACHE_HOME/vpclab, else ~/.cache/vpclab.
package cache

import (
	"os"
	"path/filepath"
)

// Dir is vpclab's cache directory.
func Dir() string {
	if d := os.Getenv("VPCLAB_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "vpclab")
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		home = "/root"
	}
	return filepath.Join(home, ".cache", "vpclab")
}
