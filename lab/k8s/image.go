package k8s

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

// Image is a single-layer container image built from files, written as a
// docker-archive tarball that `ctr images import` reads (no registry is
// needed, and none is reachable offline).
type Image struct {
	// Tag is the image reference, e.g. "vpclab.local/aws-node:dev".
	Tag string
	// Files maps a path in the image to a file on the host; Data maps a
	// path to contents. Directories are created as needed; Symlinks maps a
	// path to its target.
	Files    map[string]string
	Data     map[string][]byte
	Symlinks map[string]string
	// Entrypoint, Cmd, Env and WorkingDir are the image's config.
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
}

// fixed is the modification time of every file in built images, so that
// identical inputs give identical layers.
var fixed = time.Unix(0, 0)

// Write writes the image as a docker-archive tarball to w.
func (im Image) Write(w io.Writer) error {
	layer, err := im.layer()
	if err != nil {
		return err
	}
	sum := sha256.Sum256(layer)
	diffID := "sha256:" + hex.EncodeToString(sum[:])
	env := im.Env
	if len(env) == 0 {
		env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux", "created": fixed.UTC().Format(time.RFC3339),
		"config": map[string]any{"Entrypoint": im.Entrypoint, "Cmd": im.Cmd, "Env": env, "WorkingDir": im.WorkingDir},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{diffID}},
	})
	if err != nil {
		return err
	}
	csum := sha256.Sum256(config)
	configName := hex.EncodeToString(csum[:]) + ".json"
	manifest, err := json.Marshal([]map[string]any{{"Config": configName, "RepoTags": []string{im.Tag}, "Layers": []string{"layer.tar"}}})
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	for _, f := range []struct {
		name string
		data []byte
	}{{configName, config}, {"layer.tar", layer}, {"manifest.json", manifest}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: fixed}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// WriteFile writes the image's tarball to path.
func (im Image) WriteFile(p string) error {
	var b bytes.Buffer
	if err := im.Write(&b); err != nil {
		return fmt.Errorf("image %s: %w", im.Tag, err)
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// layer is the image's one filesystem layer as a tar.
func (im Image) layer() ([]byte, error) {
	type entry struct {
		data    []byte
		mode    int64
		link    string
		symlink bool
	}
	entries := map[string]entry{}
	for dst, src := range im.Files {
		b, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		st, err := os.Stat(src)
		if err != nil {
			return nil, err
		}
		entries[clean(dst)] = entry{data: b, mode: int64(st.Mode().Perm())}
	}
	for dst, b := range im.Data {
		entries[clean(dst)] = entry{data: b, mode: 0o644}
	}
	for dst, target := range im.Symlinks {
		entries[clean(dst)] = entry{link: target, symlink: true}
	}
	dirs := map[string]bool{"tmp": true}
	for p := range entries {
		for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	var names []string
	for d := range dirs {
		names = append(names, d+"/")
	}
	for p := range entries {
		names = append(names, p)
	}
	sort.Strings(names)
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, n := range names {
		h := &tar.Header{Name: n, ModTime: fixed, Format: tar.FormatPAX}
		if strings.HasSuffix(n, "/") {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
			if n == "tmp/" {
				h.Mode = 0o1777
			}
		} else if e := entries[n]; e.symlink {
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, e.link, 0o777
		} else {
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, e.mode, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if e := entries[n]; h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }
