package lab

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/internal/netx"
)

// Owner is the process that owns a lab. A lab is alive exactly as long as
// its owner holds an exclusive flock on the lab's owner file: the kernel
// drops the lock when the process dies, however it dies, so no pid can be
// mistaken for another and no lab is ever taken for dead while it runs.
type Owner struct {
	PID int `json:"pid"`
	// Kind says what runs the lab: up, demo, scenario, test, gc, …
	Kind  string    `json:"kind"`
	Since time.Time `json:"since"`
}

func (o Owner) String() string {
	if o.PID == 0 {
		return "an unknown process"
	}
	if o.Kind == "" {
		return fmt.Sprintf("pid %d", o.PID)
	}
	return fmt.Sprintf("pid %d (%s)", o.PID, o.Kind)
}

// AliveError says a lab is owned by a running process.
type AliveError struct {
	Name  string
	Owner Owner
}

func (e *AliveError) Error() string {
	return fmt.Sprintf("lab %s exists and is owned by %s", e.Name, e.Owner)
}

// ownerLock is a held owner file.
type ownerLock struct {
	f    *os.File
	path string
}

// acquireOwner takes the lab's owner lock without waiting, or says who
// holds it.
func acquireOwner(p Paths, kind string) (*ownerLock, error) {
	if err := os.MkdirAll(p.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	path := p.Owner()
	for attempt := 0; ; attempt++ {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("owner file: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				o, _, _ := ReadOwner(p)
				return nil, &AliveError{Name: p.Name, Owner: o}
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		// A gc may have removed the file between our open and our lock:
		// then we hold a lock on a file nobody else can see.
		var held, now unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(path, &now) == nil && held.Ino == now.Ino && held.Dev == now.Dev {
			b, _ := json.Marshal(Owner{PID: os.Getpid(), Kind: kind, Since: time.Now().UTC()})
			if err := f.Truncate(0); err == nil {
				_, _ = f.WriteAt(append(b, '\n'), 0)
			}
			return &ownerLock{f: f, path: path}, nil
		}
		f.Close()
		if attempt > 10 {
			return nil, fmt.Errorf("lock %s: the file keeps being replaced", path)
		}
	}
}

// release removes the owner file, then drops the lock.
func (o *ownerLock) release() {
	if o == nil || o.f == nil {
		return
	}
	_ = os.Remove(o.path)
	_ = o.f.Close()
	o.f = nil
}

// ReadOwner says who owns a lab and whether that process still holds the
// lab (it never takes the lock, so it cannot disturb an owner starting up).
// exists is false when there is no owner file.
func ReadOwner(p Paths) (o Owner, alive bool, err error) {
	b, err := os.ReadFile(p.Owner())
	if err != nil {
		if os.IsNotExist(err) {
			return Owner{}, false, nil
		}
		return Owner{}, false, err
	}
	_ = json.Unmarshal(b, &o)
	var st unix.Stat_t
	if err := unix.Stat(p.Owner(), &st); err != nil {
		return o, false, nil
	}
	pid, locked := flockHolder(st)
	if locked && o.PID == 0 {
		o.PID = pid
	}
	return o, locked, nil
}

// flockHolder looks the file up in /proc/locks.
func flockHolder(st unix.Stat_t) (int, bool) {
	f, err := os.Open("/proc/locks")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 1: FLOCK  ADVISORY  WRITE 1234 00:19:5678 0 EOF
		fs := strings.Fields(sc.Text())
		if len(fs) >= 6 && fs[1] == "FLOCK" && fs[5] == want {
			pid, _ := strconv.Atoi(fs[4])
			return pid, true
		}
	}
	return 0, false
}

// LabInfo is one lab found under a state directory.
type LabInfo struct {
	Name  string `json:"name"`
	Alive bool   `json:"alive"`
	Owner Owner  `json:"owner"`
}

// Labs lists the labs with anything under stateDir ("" is the default):
// a state directory, an owner file or a control socket.
func Labs(stateDir string) []LabInfo {
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	names := map[string]bool{}
	ents, _ := os.ReadDir(stateDir)
	for _, e := range ents {
		n := e.Name()
		for _, suffix := range []string{".owner", ".sock", ".log", ".config.json"} {
			n = strings.TrimSuffix(n, suffix)
		}
		if nameRE.MatchString(n) {
			names[n] = true
		}
	}
	var out []LabInfo
	for n := range names {
		o, alive, _ := ReadOwner(PathsFor(n, stateDir))
		out = append(out, LabInfo{Name: n, Alive: alive, Owner: o})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// GC removes what a dead lab left behind: processes in its namespaces,
// mounts, namespaces, kernel objects, its state directory and files. A lab
// whose owner is alive is never touched: GC returns an *AliveError.
func GC(name, stateDir string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("gc %q: not a lab name", name)
	}
	p := PathsFor(name, stateDir)
	own, err := acquireOwner(p, "gc")
	if err != nil {
		return err
	}
	defer own.release()
	err = removeLeftovers(p)
	if rerr := os.Remove(p.Log()); rerr != nil && !os.IsNotExist(rerr) {
		err = errors.Join(err, rerr)
	}
	return err
}

// HasLeftovers says whether anything of lab name is on the machine: a
// state directory, a socket, namespaces.
func HasLeftovers(name, stateDir string) bool {
	p := PathsFor(name, stateDir)
	if _, err := os.Stat(p.Log()); err == nil {
		return true
	}
	return hasLeftovers(p)
}

// removeLeftovers removes everything of lab p; the caller owns the lab.
func removeLeftovers(p Paths) error {
	var errs []error
	killInNamespaces(p)
	root := p.Root()
	errs = append(errs, unmountUnder(root))
	if err := os.RemoveAll(root); err != nil && !os.IsNotExist(err) {
		errs = append(errs, err)
	}
	for _, f := range []string{p.Socket(), p.ConfigFile()} {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, fabric.GC(p.Name))
	return errors.Join(errs...)
}

// hasLeftovers says whether anything of lab p exists.
func hasLeftovers(p Paths) bool {
	if _, err := os.Stat(p.Root()); err == nil {
		return true
	}
	if _, err := os.Stat(p.Socket()); err == nil {
		return true
	}
	names, _ := netx.ListNamed(p.Name + "-")
	return len(names) > 0
}

// killInNamespaces kills every process whose network namespace is one of
// the lab's named namespaces or whose mount namespace is one of its nodes':
// a user's own process in a node dies with the lab instead of surviving in
// an orphaned namespace.
func killInNamespaces(p Paths) {
	inodes := map[uint64]bool{}
	add := func(path string) {
		var st unix.Stat_t
		if unix.Stat(path, &st) == nil {
			inodes[st.Ino] = true
		}
	}
	names, _ := netx.ListNamed(p.Name + "-")
	for _, n := range names {
		add(netx.Path(n))
	}
	mnts, _ := filepath.Glob(filepath.Join(p.Root(), "nodes", "*", "mnt"))
	for _, m := range mnts {
		if isNsfs(m) {
			add(m)
		}
	}
	if len(inodes) == 0 {
		return
	}
	// Kill until nothing is left: a process may fork while we look.
	for round := 0; round < 5; round++ {
		killed := 0
		for _, pid := range pidsInNamespaces(inodes, "net", "mnt") {
			if pid != os.Getpid() && unix.Kill(pid, unix.SIGKILL) == nil {
				killed++
			}
		}
		if killed == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pidsInNamespaces lists the processes whose namespace of one of kinds
// ("net", "mnt") is one of inodes.
func pidsInNamespaces(inodes map[uint64]bool, kinds ...string) []int {
	var out []int
	procs, _ := os.ReadDir("/proc")
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		for _, kind := range kinds {
			var st unix.Stat_t
			if unix.Stat(filepath.Join("/proc", e.Name(), "ns", kind), &st) == nil && inodes[st.Ino] {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// isNsfs says whether path is a bind-mounted namespace file.
func isNsfs(path string) bool {
	var fs unix.Statfs_t
	return unix.Statfs(path, &fs) == nil && fs.Type == unix.NSFS_MAGIC
}

// Sweep garbage-collects one lab (name) or, with name empty, every lab
// under the default state directory, and says what it did, one line per
// lab: removed, left alone because alive, or (for a named lab) nothing to
// remove.
func Sweep(name string) ([]string, error) {
	labs := Labs("")
	if name != "" {
		labs = []LabInfo{{Name: name}}
	}
	var out []string
	var errs []error
	for _, info := range labs {
		if o, alive, _ := ReadOwner(PathsFor(info.Name, "")); !alive && o.PID == 0 && !HasLeftovers(info.Name, "") {
			if name != "" {
				out = append(out, fmt.Sprintf("lab %s: nothing to remove", info.Name))
			}
			continue
		}
		err := GC(info.Name, "")
		var ae *AliveError
		switch {
		case errors.As(err, &ae):
			out = append(out, fmt.Sprintf("lab %s is alive (owned by %s); left alone", info.Name, ae.Owner))
		case err != nil:
			errs = append(errs, fmt.Errorf("lab %s: %w", info.Name, err))
		default:
			out = append(out, fmt.Sprintf("removed leftovers of lab %s", info.Name))
		}
	}
	return out, errors.Join(errs...)
}
