package lab

import "path/filepath"

// DefaultStateDir is where labs keep their state unless a config says
// otherwise.
const DefaultStateDir = "/run/vpclab"

// Paths is the one place that knows where a lab's files are.
type Paths struct {
	// StateDir holds every lab's files (DefaultStateDir when empty).
	StateDir string
	// Name is the lab's name.
	Name string
}

// PathsFor returns the paths of lab name under stateDir ("" means
// DefaultStateDir).
func PathsFor(name, stateDir string) Paths {
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	return Paths{StateDir: stateDir, Name: name}
}

// Root is the lab's state directory: node directories, mount namespaces,
// CNI caches.
func (p Paths) Root() string { return filepath.Join(p.StateDir, p.Name) }

// Socket is the lab's root-only control socket (status, pods, faults,
// events, the fake EC2's control API).
func (p Paths) Socket() string { return filepath.Join(p.StateDir, p.Name+".sock") }

// Owner is the file the owning process holds an exclusive lock on for the
// lab's whole life; it also names the owner.
func (p Paths) Owner() string { return filepath.Join(p.StateDir, p.Name+".owner") }

// Log is the log of a background supervisor (vpclab up).
func (p Paths) Log() string { return filepath.Join(p.StateDir, p.Name+".log") }

// ConfigFile hands a lab's config from `vpclab up` to its supervisor.
func (p Paths) ConfigFile() string { return filepath.Join(p.StateDir, p.Name+".config.json") }
