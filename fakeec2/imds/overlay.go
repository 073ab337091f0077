package imds

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/vpclab/vpclab/fakeec2/model"
)

// Overlay changes what one instance's metadata service shows, apart from
// EC2's state, for a while: IMDS faults per path. Paths are relative to
// /latest/ (meta-data/network/interfaces/macs/*/local-ipv4s), each
// segment a glob.
type Overlay struct {
	ID       string `json:"id,omitempty" yaml:"id,omitempty"`
	Instance string `json:"instance" yaml:"instance"`
	// Kind is what the overlay does to the paths it matches:
	//   freeze  the whole tree as it was when the overlay was added (Path
	//           unused);
	//   stale   the matched paths as they were when it was added, while the
	//           rest moves on (paths that appear later stay hidden): one
	//           path lagging behind the others, e.g. local-ipv4s but not
	//           macs/;
	//   hide    the matched paths are absent (an attached ENI's MAC
	//           directory: an ENI IMDS does not list yet);
	//   set     the path reads Value, created if absent (a ghost MAC's
	//           fields, a wrong device-number).
	Kind  string `json:"kind" yaml:"kind"`
	Path  string `json:"path,omitempty" yaml:"path,omitempty"`
	Value string `json:"value,omitempty" yaml:"value,omitempty"`
	// For bounds the overlay; 0 means until removed.
	For   model.Duration `json:"for,omitempty" yaml:"for,omitempty"`
	Added time.Time      `json:"added" yaml:"-"`

	// snapshot is the tree (freeze) or the matched paths' values (stale)
	// when the overlay was added.
	tree  *mdDir
	paths map[string]any
}

// Validate checks an overlay's kind and path.
func (o *Overlay) Validate() error {
	switch o.Kind {
	case "freeze":
	case "stale", "hide", "set":
		if strings.Trim(o.Path, "/") == "" {
			return fmt.Errorf("imds overlay %s: needs a path (e.g. meta-data/network/interfaces/macs/*/local-ipv4s)", o.Kind)
		}
	default:
		return fmt.Errorf("imds overlay kind %q: want freeze, stale, hide or set", o.Kind)
	}
	if o.For < 0 {
		return fmt.Errorf("imds overlay %s: for must not be negative", o.Kind)
	}
	for _, s := range splitPath(o.Path) {
		if _, err := path.Match(s, ""); err != nil {
			return fmt.Errorf("imds overlay path %q: %w", o.Path, err)
		}
	}
	return nil
}

func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// AddOverlay installs an overlay on an instance's metadata service; it
// takes effect for the next request. Stale and freeze overlays capture
// the tree now.
func (m *Service) AddOverlay(o Overlay) (Overlay, error) {
	if err := o.Validate(); err != nil {
		return Overlay{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sync()
	v, ok := m.insts[o.Instance]
	if !ok || v.terminated {
		return Overlay{}, model.ErrInstanceNotFound(o.Instance)
	}
	now := m.region.Now()
	v.catchUp(now)
	o.Added = now
	m.nextOverlay++
	if o.ID == "" {
		o.ID = fmt.Sprintf("imds-%d", m.nextOverlay)
	}
	root := m.root(v, now)
	switch o.Kind {
	case "freeze":
		o.tree = root
	case "stale":
		o.paths = map[string]any{}
		for _, p := range matchPaths(root, splitPath(o.Path), nil) {
			o.paths[strings.Join(p, "/")] = getNode(root, p)
		}
	}
	m.overlays = append(m.overlays, &o)
	return o, nil
}

// ClearOverlays removes every overlay (of instance, or all when empty).
func (m *Service) ClearOverlays(instance string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.overlays = slices.DeleteFunc(m.overlays, func(o *Overlay) bool { return instance == "" || o.Instance == instance })
}

// Overlays lists the overlays in force.
func (m *Service) Overlays() []Overlay {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Overlay, 0, len(m.overlays))
	for _, o := range m.overlays {
		out = append(out, *o)
	}
	return out
}

// overlay applies the instance's overlays in force to root, the tree it
// would show now, and returns the tree to serve (m.mu held).
func (m *Service) overlay(id string, root *mdDir, now time.Time) *mdDir {
	m.overlays = slices.DeleteFunc(m.overlays, func(o *Overlay) bool {
		return o.For > 0 && !now.Before(o.Added.Add(time.Duration(o.For)))
	})
	for _, o := range m.overlays {
		if o.Instance != id {
			continue
		}
		segs := splitPath(o.Path)
		switch o.Kind {
		case "freeze":
			root = clone(o.tree).(*mdDir)
		case "hide":
			for _, p := range matchPaths(root, segs, nil) {
				delNode(root, p)
			}
		case "set":
			if slices.ContainsFunc(segs, func(s string) bool { return strings.ContainsAny(s, "*?[") }) {
				for _, p := range matchPaths(root, segs, nil) {
					setNode(root, p, o.Value)
				}
			} else {
				setNode(root, segs, o.Value)
			}
		case "stale":
			for _, p := range matchPaths(root, segs, nil) {
				delNode(root, p)
			}
			for p, v := range o.paths {
				setNode(root, strings.Split(p, "/"), clone(v))
			}
		}
	}
	return root
}

// matchPaths returns the concrete paths under d that segs (globs) match.
func matchPaths(d *mdDir, segs []string, prefix []string) [][]string {
	if len(segs) == 0 {
		return [][]string{slices.Clone(prefix)}
	}
	var out [][]string
	for _, name := range d.names {
		if ok, _ := path.Match(segs[0], name); !ok {
			continue
		}
		p := append(slices.Clone(prefix), name)
		if len(segs) == 1 {
			out = append(out, p)
			continue
		}
		if sub, ok := d.kids[name].(*mdDir); ok {
			out = append(out, matchPaths(sub, segs[1:], p)...)
		}
	}
	return out
}

func getNode(d *mdDir, p []string) any {
	var cur any = d
	for _, s := range p {
		dir, ok := cur.(*mdDir)
		if !ok {
			return nil
		}
		cur = dir.kids[s]
	}
	return cur
}

// setNode sets the node at p, creating directories on the way.
func setNode(d *mdDir, p []string, v any) {
	for _, s := range p[:len(p)-1] {
		d = d.dir(s)
	}
	d.set(p[len(p)-1], v)
}

func delNode(d *mdDir, p []string) {
	for _, s := range p[:len(p)-1] {
		sub, ok := d.kids[s].(*mdDir)
		if !ok {
			return
		}
		d = sub
	}
	name := p[len(p)-1]
	if _, ok := d.kids[name]; ok {
		delete(d.kids, name)
		d.names = slices.DeleteFunc(d.names, func(n string) bool { return n == name })
	}
}

// clone deep-copies a tree node (later overlays edit the served tree; a
// snapshot must stay as taken).
func clone(v any) any {
	d, ok := v.(*mdDir)
	if !ok {
		return v
	}
	c := &mdDir{names: slices.Clone(d.names), kids: make(map[string]any, len(d.kids)), ordered: d.ordered}
	for k, x := range d.kids {
		c.kids[k] = clone(x)
	}
	return c
}
