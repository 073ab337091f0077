package lab

import (
	"os"
	"path/filepath"
	"testing"
)

// newApp lays out an app directory with one binary saying which build it is.
func newApp(t *testing.T, parent, which string) string {
	t.Helper()
	tmp, err := os.MkdirTemp(parent, "new-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "aws-k8s-agent"), []byte(which), 0o755); err != nil {
		t.Fatal(err)
	}
	app, err := publishApp(parent, tmp)
	if err != nil {
		t.Fatal(err)
	}
	return app
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAppDirectoryHeldByALabSurvivesRebuilds pins what a CI run showed
// missing: a rebuild of a CNI (another vpclab's, or a checkout's next) must
// not remove the binaries a running lab's node re-executes when its ipamd
// restarts; once the lab lets go, the next build prunes them.
func TestAppDirectoryHeldByALabSurvivesRebuilds(t *testing.T) {
	parent := t.TempDir()
	// The layout before links: parent/app is a directory a lab may use.
	old := filepath.Join(parent, "app")
	if err := os.MkdirAll(old, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(old, "aws-k8s-agent"), []byte("old"), 0o755); err != nil {
		t.Fatal(err)
	}
	oldHold, err := holdApp(old)
	if err != nil {
		t.Fatal(err)
	}
	first := newApp(t, parent, "first")
	if got, err := filepath.EvalSymlinks(filepath.Join(parent, "app")); err != nil || got != first {
		t.Fatalf("parent/app resolves to %q (%v), want %q", got, err, first)
	}
	held, err := holdApp(first)
	if err != nil {
		t.Fatal(err)
	}
	second := newApp(t, parent, "second")
	third := newApp(t, parent, "third")
	if got := read(t, filepath.Join(first, "aws-k8s-agent")); got != "first" {
		t.Fatalf("held build now says %q", got)
	}
	if _, err := os.Stat(second); !os.IsNotExist(err) {
		t.Fatalf("unheld earlier build %s not pruned (%v)", second, err)
	}
	moved, _ := filepath.Glob(filepath.Join(parent, "app-*"))
	if len(moved) != 3 { // the held old layout, first, third
		t.Fatalf("app directories %v, want the old one, first and third", moved)
	}
	if got := read(t, filepath.Join(parent, "app", "aws-k8s-agent")); got != "third" {
		t.Fatalf("current build says %q, want third", got)
	}
	held()
	oldHold()
	newApp(t, parent, "fourth")
	for _, d := range []string{first, third} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Fatalf("released build %s not pruned (%v)", d, err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(parent, "app-*")); len(left) != 1 {
		t.Fatalf("left %v, want only the current build", left)
	}
	if _, err := holdApp(second); err == nil {
		t.Fatal("holding a pruned build succeeded")
	}
}
