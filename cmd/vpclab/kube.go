package main

import (
	"os"
	"path/filepath"
)

// cmdKubectl runs the lab's kubectl with its admin kubeconfig; every
// argument is kubectl's.
func cmdKubectl(e env, args []string) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	return c.Kubectl(e.ctx, os.Stdin, e.stdout, e.stderr, args...)
}

func cmdImage(e env, args []string) error {
	_, fs, args, err := subFlags(args, map[string]string{"import": "image import TAR   (docker-archive or OCI tarball, into every node's containerd)"}, "import")
	if err != nil {
		return err
	}
	pos, err := fs.Parse(args, 1)
	if err != nil {
		return err
	}
	tar, err := filepath.Abs(pos[0])
	if err != nil {
		return err
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	return c.ImportImage(e.ctx, tar)
}
