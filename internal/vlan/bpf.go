package vlan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// BPF is the software datapath for kernels without 8021q: a macvlan (source
// mode, so it receives nothing by MAC) per VLAN, a tc program on its egress
// that pushes the tag and redirects to the parent, and a tc program on the
// parent's ingress at priority = VLAN id that pops the tag and redirects
// into the VLAN link. Programs are assembled in Go; nothing is pinned, so
// removing the links (or their namespace) removes everything.
type BPF struct{}

// Kind implements Datapath.
func (BPF) Kind() string { return KindBPF }

// __sk_buff field offsets (include/uapi/linux/bpf.h).
const (
	skbVlanPresent = 20
	skbVlanTCI     = 24
)

const (
	tcActUnspec = -1
	tcActShot   = 2
	bpfFIngress = 1
)

func htons(v uint16) int32 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return int32(binary.NativeEndian.Uint16(b[:]))
}

func progName(tag, what string) string {
	n := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, tag)
	if len(n) > 8 {
		n = n[:8]
	}
	if n != "" {
		n += "_"
	}
	return n + what
}

// pushProgram tags every frame with vid and sends it out of parent.
func pushProgram(tag string, vid, parent int) (*ebpf.Program, error) {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Imm(asm.R2, htons(unix.ETH_P_8021Q)),
		asm.Mov.Imm(asm.R3, int32(vid)),
		asm.FnSkbVlanPush.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		asm.Mov.Imm(asm.R1, int32(parent)),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcActShot).WithSymbol("drop"),
		asm.Return(),
	}
	return load(progName(tag, "vpush"), insns)
}

// popProgram delivers frames tagged vid into link, untagged; other frames
// go on to the next filter.
func popProgram(tag string, vid, link int) (*ebpf.Program, error) {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, skbVlanPresent, asm.Word),
		asm.JEq.Imm(asm.R2, 0, "pass"),
		asm.LoadMem(asm.R2, asm.R6, skbVlanTCI, asm.Word),
		asm.And.Imm(asm.R2, 0x0fff),
		asm.JNE.Imm(asm.R2, int32(vid), "pass"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnSkbVlanPop.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		asm.Mov.Imm(asm.R1, int32(link)),
		asm.Mov.Imm(asm.R2, bpfFIngress),
		asm.FnRedirect.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcActUnspec).WithSymbol("pass"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcActShot).WithSymbol("drop"),
		asm.Return(),
	}
	return load(progName(tag, "vpop"), insns)
}

func load(name string, insns asm.Instructions) (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: name, Type: ebpf.SchedCLS, Instructions: insns, License: "Dual MIT/GPL"})
	if err != nil {
		return nil, fmt.Errorf("load bpf program %s: %w", name, err)
	}
	return p, nil
}

// ensureClsact adds a clsact qdisc to link unless it has one.
func ensureClsact(h netlinksafe.Handle, link netlink.Link) error {
	q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
	if err := h.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc to %s: %w", link.Attrs().Name, err)
	}
	return nil
}

func attach(h netlinksafe.Handle, link netlink.Link, parent uint32, prio int, p *ebpf.Program, name string) error {
	f := &netlink.BpfFilter{
		FilterAttrs:  netlink.FilterAttrs{LinkIndex: link.Attrs().Index, Parent: parent, Handle: 1, Protocol: unix.ETH_P_ALL, Priority: uint16(prio)},
		Fd:           p.FD(),
		Name:         name,
		DirectAction: true,
	}
	if err := h.FilterReplace(f); err != nil {
		return fmt.Errorf("attach %s to %s: %w", name, link.Attrs().Name, err)
	}
	return nil
}

// Add implements Datapath.
func (BPF) Add(h netlinksafe.Handle, parent netlink.Link, l Link) (out netlink.Link, err error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	pa := parent.Attrs()
	mtu := l.MTU
	if mtu == 0 {
		mtu = pa.MTU
	}
	mv := &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: l.Name, ParentIndex: pa.Index, HardwareAddr: l.MAC, MTU: mtu}, Mode: netlink.MACVLAN_MODE_SOURCE}
	if err := h.LinkAdd(mv); err != nil {
		return nil, fmt.Errorf("add vlan link %s (vid %d, bpf) on %s: %w", l.Name, l.VID, pa.Name, err)
	}
	defer func() {
		if err != nil {
			_ = h.LinkDel(mv)
		}
	}()
	link, err := h.LinkByName(l.Name)
	if err != nil {
		return nil, fmt.Errorf("vlan link %s: %w", l.Name, err)
	}
	if err := ensureClsact(h, parent); err != nil {
		return nil, err
	}
	if err := ensureClsact(h, link); err != nil {
		return nil, err
	}
	push, err := pushProgram(l.Tag, l.VID, pa.Index)
	if err != nil {
		return nil, err
	}
	defer push.Close()
	pop, err := popProgram(l.Tag, l.VID, link.Attrs().Index)
	if err != nil {
		return nil, err
	}
	defer pop.Close()
	if err := attach(h, link, netlink.HANDLE_MIN_EGRESS, 1, push, progName(l.Tag, "vpush")); err != nil {
		return nil, err
	}
	if err := attach(h, parent, netlink.HANDLE_MIN_INGRESS, l.VID, pop, progName(l.Tag, "vpop")); err != nil {
		return nil, err
	}
	if err := h.LinkSetUp(link); err != nil {
		_ = delPop(h, parent, l.VID)
		return nil, fmt.Errorf("vlan link %s up: %w", l.Name, err)
	}
	return link, nil
}

func delPop(h netlinksafe.Handle, parent netlink.Link, vid int) error {
	f := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: parent.Attrs().Index, Parent: netlink.HANDLE_MIN_INGRESS, Handle: 1, Protocol: unix.ETH_P_ALL, Priority: uint16(vid)}}
	if err := h.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("remove vlan %d filter from %s: %w", vid, parent.Attrs().Name, err)
	}
	return nil
}

// Del implements Datapath.
func (BPF) Del(h netlinksafe.Handle, parent netlink.Link, name string, vid int) error {
	var errs []error
	if parent != nil {
		errs = append(errs, delPop(h, parent, vid))
	}
	link, err := h.LinkByName(name)
	if err == nil {
		if err := h.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("del vlan link %s: %w", name, err))
		}
	} else {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			errs = append(errs, fmt.Errorf("del vlan link %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
