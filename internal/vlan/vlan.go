// Package vlan makes links that send and receive 802.1Q-tagged frames on a
// parent link, the way trunk and branch ENIs need. Kernels with the 8021q
// module get real VLAN links; kernels without it (the CI machine) get the
// same frames from tc BPF programs: a macvlan (source mode) per VLAN whose
// egress program pushes the tag and redirects to the parent, and a program
// on the parent's ingress, at priority = VLAN id, that pops the tag and
// redirects into the VLAN link. Which one runs is chosen once by probing.
package vlan

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpclab/vpclab/internal/netx"
)

// Kinds of datapath.
const (
	Kind8021Q = "8021q"
	KindBPF   = "bpf"
)

// EnvDatapath forces a datapath: "8021q", "bpf" or "auto" (the default).
const EnvDatapath = "VPCLAB_VLAN_DATAPATH"

// Link describes a VLAN link to create.
type Link struct {
	// Name of the new link, e.g. "vlan.eth.5" (at most 15 bytes).
	Name string
	// VID is the 802.1Q VLAN id, 1–4094.
	VID int
	// MAC of the new link; random when nil.
	MAC net.HardwareAddr
	// MTU of the new link; the parent's when 0.
	MTU int
	// Tag names the BPF programs (at most 8 characters of [a-z0-9_]), so a
	// lab's programs can be told apart from others'.
	Tag string
}

// Datapath creates and removes VLAN links. Every method works in the
// namespace the handle h belongs to.
type Datapath interface {
	// Kind is Kind8021Q or KindBPF.
	Kind() string
	// Add creates the link on parent and brings it up. The parent must be up
	// for traffic to flow.
	Add(h netlinksafe.Handle, parent netlink.Link, l Link) (netlink.Link, error)
	// Del removes the link named name (VLAN vid on parent) and anything
	// installed for it on the parent. A missing link is not an error.
	Del(h netlinksafe.Handle, parent netlink.Link, name string, vid int) error
}

func (l Link) check() error {
	if l.VID < 1 || l.VID > 4094 {
		return fmt.Errorf("vlan link %q: VLAN id %d not in 1..4094", l.Name, l.VID)
	}
	if l.Name == "" || len(l.Name) > 15 {
		return fmt.Errorf("vlan link %q: name must be 1..15 bytes", l.Name)
	}
	return nil
}

var (
	probeOnce sync.Once
	probed    Datapath
	probeErr  error
)

// Default returns the datapath for this kernel: the one EnvDatapath asks
// for, else 8021q when the kernel can make VLAN links, else BPF. The probe
// runs once per process, in a scratch namespace.
func Default() (Datapath, error) {
	probeOnce.Do(func() {
		switch v := os.Getenv(EnvDatapath); v {
		case "", "auto":
			if HasKernelVLAN() {
				probed = Kernel{}
			} else {
				probed = BPF{}
			}
		default:
			probed, probeErr = New(v)
		}
		if probeErr == nil {
			slog.Debug("vlan datapath", "kind", probed.Kind())
		}
	})
	return probed, probeErr
}

// New returns the datapath of the given kind.
func New(kind string) (Datapath, error) {
	switch kind {
	case Kind8021Q:
		return Kernel{}, nil
	case KindBPF:
		return BPF{}, nil
	}
	return nil, fmt.Errorf("vlan datapath %q: want %s, %s or auto", kind, Kind8021Q, KindBPF)
}

var (
	kvOnce sync.Once
	kvHas  bool
)

// HasKernelVLAN reports whether the kernel can create 802.1Q VLAN links,
// by trying once in a scratch namespace.
func HasKernelVLAN() bool {
	kvOnce.Do(func() {
		name := fmt.Sprintf("vlanprobe-%d", os.Getpid())
		ns, err := netx.CreateNamed(name)
		if err != nil {
			return
		}
		defer netx.DeleteNamed(name)
		defer ns.Close()
		h, err := netx.Handle(ns)
		if err != nil {
			return
		}
		defer h.Close()
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "p0"}, PeerName: "p1"}); err != nil {
			return
		}
		p, err := h.LinkByName("p0")
		if err != nil {
			return
		}
		err = h.LinkAdd(&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "p0.1", ParentIndex: p.Attrs().Index}, VlanId: 1})
		kvHas = err == nil
	})
	return kvHas
}

// Kernel is the 8021q datapath: real VLAN links.
type Kernel struct{}

// Kind implements Datapath.
func (Kernel) Kind() string { return Kind8021Q }

// Add implements Datapath.
func (Kernel) Add(h netlinksafe.Handle, parent netlink.Link, l Link) (netlink.Link, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	attrs := netlink.LinkAttrs{Name: l.Name, ParentIndex: parent.Attrs().Index, HardwareAddr: l.MAC, MTU: l.MTU}
	if err := h.LinkAdd(&netlink.Vlan{LinkAttrs: attrs, VlanId: l.VID}); err != nil {
		return nil, fmt.Errorf("add vlan link %s (vid %d) on %s: %w", l.Name, l.VID, parent.Attrs().Name, err)
	}
	link, err := h.LinkByName(l.Name)
	if err == nil {
		err = h.LinkSetUp(link)
	}
	if err != nil {
		_ = h.LinkDel(&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: l.Name}})
		return nil, fmt.Errorf("vlan link %s up: %w", l.Name, err)
	}
	return link, nil
}

// Del implements Datapath.
func (Kernel) Del(h netlinksafe.Handle, _ netlink.Link, name string, _ int) error {
	link, err := existing(h, name)
	if link == nil {
		return err
	}
	if err := h.LinkDel(link); err != nil {
		return fmt.Errorf("del vlan link %s: %w", name, err)
	}
	return nil
}

// existing looks a link up by name for deletion: nil and no error when it
// is already gone.
func existing(h netlinksafe.Handle, name string) (netlink.Link, error) {
	link, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil
		}
		return nil, fmt.Errorf("del vlan link %s: %w", name, err)
	}
	return link, nil
}

// AddAny creates a VLAN link with the datapath EnvDatapath names or, on
// "auto", a real VLAN link, falling back to BPF when the kernel has no
// 8021q. Unlike Default it needs no probe namespace, which suits
// short-lived callers such as a CNI plugin.
func AddAny(h netlinksafe.Handle, parent netlink.Link, l Link) (netlink.Link, Datapath, error) {
	if v := os.Getenv(EnvDatapath); v != "" && v != "auto" {
		d, err := New(v)
		if err != nil {
			return nil, nil, err
		}
		link, err := d.Add(h, parent, l)
		return link, d, err
	}
	link, err := Kernel{}.Add(h, parent, l)
	if err == nil {
		return link, Kernel{}, nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) {
		return nil, nil, err
	}
	link, err = BPF{}.Add(h, parent, l)
	return link, BPF{}, err
}

// DelAny removes a VLAN link made by either datapath (told apart by the
// link's type) with what was installed for it on its parent. A missing
// link is not an error.
func DelAny(h netlinksafe.Handle, name string, vid int) error {
	link, err := existing(h, name)
	if link == nil {
		return err
	}
	if link.Type() == "vlan" {
		return Kernel{}.Del(h, nil, name, vid)
	}
	parent, err := h.LinkByIndex(link.Attrs().ParentIndex)
	if err != nil {
		parent = nil // the parent is gone, and its filters with it
	}
	return BPF{}.Del(h, parent, name, vid)
}
