package k8s

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
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

// Write writes the image as a docker-archive tarball to w. The layer is
// staged in a temporary file (its digest goes into the config, which
// comes first), so memory stays small whatever the image holds.
func (im Image) Write(w io.Writer) error {
	return im.write(w, "")
}

// WriteFile writes the image's tarball to path (through path.tmp, with the
// layer staged beside it).
func (im Image) WriteFile(p string) error {
	tmp := p + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("image %s: %w", im.Tag, err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	err = im.write(bw, filepath.Dir(p))
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("image %s: %w", im.Tag, err)
	}
	return os.Rename(tmp, p)
}

// write writes the tarball to w, staging the layer in a file in dir ("":
// the system's temporary directory).
func (im Image) write(w io.Writer, dir string) error {
	layer, err := os.CreateTemp(dir, "vpclab-layer-*.tar")
	if err != nil {
		return err
	}
	defer func() {
		layer.Close()
		os.Remove(layer.Name())
	}()
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(layer, h), 1<<20)
	if err := im.writeLayer(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	size, err := layer.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if _, err := layer.Seek(0, io.SeekStart); err != nil {
		return err
	}
	diffID := "sha256:" + hex.EncodeToString(h.Sum(nil))
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
		size int64
		r    io.Reader
	}{{configName, int64(len(config)), bytes.NewReader(config)}, {"layer.tar", size, layer}, {"manifest.json", int64(len(manifest)), bytes.NewReader(manifest)}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: f.size, ModTime: fixed}); err != nil {
			return err
		}
		if n, err := io.Copy(tw, f.r); err != nil {
			return err
		} else if n != f.size {
			return fmt.Errorf("%s: wrote %d of %d bytes", f.name, n, f.size)
		}
	}
	return tw.Close()
}

// writeLayer writes the image's one filesystem layer as a tar to w,
// streaming host files (a file that changes size meanwhile is an error).
func (im Image) writeLayer(w io.Writer) error {
	type entry struct {
		src     string // host file, or
		data    []byte // contents
		mode    int64
		link    string
		symlink bool
	}
	entries := map[string]entry{}
	for dst, src := range im.Files {
		entries[clean(dst)] = entry{src: src}
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
	tw := tar.NewWriter(w)
	for _, n := range names {
		h := &tar.Header{Name: n, ModTime: fixed, Format: tar.FormatPAX}
		e := entries[n]
		switch {
		case strings.HasSuffix(n, "/"):
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
			if n == "tmp/" {
				h.Mode = 0o1777
			}
		case e.symlink:
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, e.link, 0o777
		case e.src != "":
			if err := copyFileEntry(tw, h, e.src); err != nil {
				return err
			}
			continue
		default:
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, e.mode, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

// copyFileEntry writes host file src as the regular file h names.
func copyFileEntry(tw *tar.Writer, h *tar.Header, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	h.Typeflag, h.Mode, h.Size = tar.TypeReg, int64(st.Mode().Perm()), st.Size()
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	return nil
}

func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }
