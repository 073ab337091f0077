package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// An app directory (the aws-node image's /app: binaries, conflist
// template, eni-max-pods.txt) is never changed or removed while a lab
// uses it. Each build lays out a new one, parent/app-<time>, and points the
// symbolic link parent/app at it; a lab resolves the link once and holds a
// shared lock on the directory it got until it closes. A later build — the
// same version built by another vpclab, a checkout's next build — prunes
// only directories nobody holds, so no binary is pulled from under a node
// that restarts its ipamd.

// currentApp is parent's published app directory, if it holds every file
// a node needs.
func currentApp(parent string) (string, bool) {
	app, err := filepath.EvalSymlinks(filepath.Join(parent, "app"))
	if err != nil || !appComplete(app) {
		return "", false
	}
	return app, true
}

// publishApp makes the finished directory tmp parent's current app
// directory and prunes the earlier ones no lab holds. It returns the new
// directory's path.
func publishApp(parent, tmp string) (string, error) {
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	name := fmt.Sprintf("app-%d", time.Now().UnixNano())
	dir := filepath.Join(parent, name)
	if err := os.Rename(tmp, dir); err != nil {
		return "", fmt.Errorf("publish %s: %w", dir, err)
	}
	link := filepath.Join(parent, "app")
	// An app directory of the layout before links moves aside (a rename
	// leaves a bind mount of it intact) and is pruned like the others.
	if st, err := os.Lstat(link); err == nil && st.IsDir() {
		if err := os.Rename(link, filepath.Join(parent, fmt.Sprintf("app-%d", st.ModTime().UnixNano()))); err != nil {
			return "", fmt.Errorf("move aside %s: %w", link, err)
		}
	}
	tmpLink := link + ".new"
	_ = os.Remove(tmpLink)
	if err := os.Symlink(name, tmpLink); err != nil {
		return "", err
	}
	if err := os.Rename(tmpLink, link); err != nil {
		return "", fmt.Errorf("publish %s: %w", link, err)
	}
	pruneApps(parent, name)
	return dir, nil
}

// pruneApps removes parent's app directories other than keep that no lab
// holds (and left-over half-made builds).
func pruneApps(parent, keep string) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.IsDir() || e.Name() == keep || !strings.HasPrefix(e.Name(), "app-") {
			continue
		}
		dir := filepath.Join(parent, e.Name())
		f, err := os.Open(dir)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			_ = os.RemoveAll(dir)
		}
		_ = f.Close()
	}
}

// holdApp takes a shared lock on the app directory dir for as long as a lab
// runs nodes from it; release drops it. It fails when dir is gone (pruned
// between the build and the hold: build again).
func holdApp(dir string) (release func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("hold %s: %w", dir, err)
	}
	// Pruned after the open and before the lock (a pruner removes while
	// it holds the exclusive lock): the directory is gone.
	if _, err := os.Stat(dir); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("hold %s: %w", dir, errAppGone)
	}
	return func() { _ = f.Close() }, nil
}

var errAppGone = errors.New("app directory was pruned")
