package k8s

import (
	"archive/tar"
	"bufio"
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

// Write writes the image as a docker-archive tarball to w. The layer is
// made twice, streamed from the host files each time: once for its digest
// (the config, which comes first, names it) and once into the tarball, so
// neither memory nor a staging file grows with the image.
func (im Image) Write(w io.Writer) error {
	h := sha256.New()
	n := &countingWriter{w: h}
	if err := im.writeLayer(n); err != nil {
		return err
	}
	size := n.n
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
	file := func(name string, size int64, write func(io.Writer) error) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: fixed}); err != nil {
			return err
		}
		return write(tw)
	}
	bytesOf := func(b []byte) func(io.Writer) error {
		return func(w io.Writer) error { _, err := w.Write(b); return err }
	}
	if err := file(configName, int64(len(config)), bytesOf(config)); err != nil {
		return err
	}
	// A host file that changed between the passes makes the tar writer
	// refuse the layer (too long or too short).
	if err := file("layer.tar", size, im.writeLayer); err != nil {
		return fmt.Errorf("layer (changed while written?): %w", err)
	}
	if err := file("manifest.json", int64(len(manifest)), bytesOf(manifest)); err != nil {
		return err
	}
	return tw.Close()
}

// WriteFile writes the image's tarball to path (through path.tmp).
func (im Image) WriteFile(p string) error {
	tmp := p + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("image %s: %w", im.Tag, err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	err = im.Write(bw)
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

// countingWriter counts what passes through to w.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
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
