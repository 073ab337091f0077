package ipamd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/vpclab/vpclab/internal/vethname"
)

// The plugin's per-pod rule priorities (aws-cni's, as the VPC CNI's):
// "to POD lookup main" and "from POD lookup <ENI table>".
const (
	toPodRulePriority   = 512
	fromPodRulePriority = 1536
)

// restoreCheckpoint puts the checkpointed allocations and cooldowns back
// into the datastore. Nothing it does hands out an address a pod may still
// use, and nothing leaks:
//   - an address the node still routes to a pod's host veth is in use
//     whatever the checkpoint says (it may be lost, garbled or older than
//     the pods): it is restored too, keyed by the veth, and the pod's DEL
//     finds it by its name;
//   - without a readable checkpoint every free address starts in cooldown
//     (any of them may have been released a moment before);
//   - an allocation whose pod's host veth is gone (the pod was deleted
//     while ipamd was down, so no DEL will come) is released into cooldown
//     and its pod rules are removed, as the VPC CNI does; one younger than
//     VethGrace is judged again once that has passed;
//   - allocations on addresses no ENI holds any more are dropped.
func (d *Daemon) restoreCheckpoint() error {
	ck, err := ReadCheckpoint(d.c.BackingStore)
	lost := err != nil
	switch {
	case errors.Is(err, fs.ErrNotExist):
		d.log.Info("no checkpoint (a new node, or its file was lost); free addresses start in cooldown")
	case err != nil:
		d.log.Error("checkpoint unreadable; allocations derived from the node's pod routes, free addresses in cooldown", "err", err)
	}
	routed, err := hostPodRoutes(d.c.VethPrefix)
	if err != nil {
		return err
	}
	links, err := linkNames()
	if err != nil {
		return err
	}
	ck.Allocations = append(ck.Allocations, recovered(ck.Allocations, routed)...)
	dropped, err := d.ds.Restore(ck)
	if err != nil {
		return err
	}
	if lost {
		d.ds.CoolAll()
	}
	for _, a := range dropped {
		d.log.Warn("checkpointed address not on any ENI; dropped", "ip", a.IPv4, "container", a.ContainerID)
	}
	var gone []Allocation
	now := time.Now()
	for _, a := range ck.Allocations {
		switch {
		case !podVethGone(a, links):
		case now.Sub(time.Unix(0, a.AllocationTimestamp)) < d.c.VethGrace:
			d.recheckVeths = append(d.recheckVeths, a)
		default:
			gone = append(gone, a)
		}
	}
	released := d.releaseGone(gone)
	d.log.Info("restored checkpoint", "allocations", len(ck.Allocations)-len(dropped)-released, "dropped", len(dropped),
		"podsGone", released, "cooling", len(ck.Cooling), "recheckLater", len(d.recheckVeths))
	return nil
}

// recheckLater judges the allocations restoreCheckpoint found too young,
// once VethGrace has passed since start-up.
func (d *Daemon) recheckLater(ctx context.Context) {
	if len(d.recheckVeths) == 0 {
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(d.c.VethGrace):
	}
	links, err := linkNames()
	if err != nil {
		d.log.Warn("re-check pods' veths", "err", err)
		return
	}
	var gone []Allocation
	for _, a := range d.recheckVeths {
		if podVethGone(a, links) {
			gone = append(gone, a)
		}
	}
	d.releaseGone(gone)
	d.updateMetrics()
}

// releaseGone releases the allocations of pods that are gone into cooldown
// and removes their pod rules; it returns how many it released.
func (d *Daemon) releaseGone(allocs []Allocation) int {
	if len(allocs) == 0 {
		return 0
	}
	keys := make([]IPAMKey, 0, len(allocs))
	for _, a := range allocs {
		keys = append(keys, a.IPAMKey)
		d.log.Warn("pod's host veth is gone; its address released", "pod", a.Metadata.K8SPodNamespace+"/"+a.Metadata.K8SPodName, "ip", a.IPv4, "container", a.ContainerID)
	}
	ips, err := d.ds.Release(keys)
	if err != nil {
		d.log.Warn("checkpoint after releasing gone pods", "err", err)
	}
	for _, ip := range ips {
		if err := removePodRules(ip); err != nil {
			d.log.Warn("remove a gone pod's rules", "ip", ip.String(), "err", err)
		}
	}
	return len(ips)
}

// podVethGone says whether a's pod has no host veth on the node. As the
// VPC CNI: allocations without a pod name are not judged, and a veth is
// found by its name's hash part, whatever prefix it was created with.
func podVethGone(a Allocation, links []string) bool {
	if a.Metadata.K8SPodNamespace == "" || a.Metadata.K8SPodName == "" {
		return false
	}
	suffix := vethname.Host("", a.Metadata.K8SPodNamespace, a.Metadata.K8SPodName)
	for _, l := range links {
		if strings.HasSuffix(l, suffix) {
			return false
		}
	}
	return true
}

// linkNames lists the names of the node's links.
func linkNames() ([]string, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := make([]string, 0, len(links))
	for _, l := range links {
		out = append(out, l.Attrs().Name)
	}
	return out, nil
}

// removePodRules deletes the plugin's rules for a pod address: "to IP
// lookup main" and "from IP lookup <table>".
func removePodRules(ip netip.Addr) error {
	is := func(n *net.IPNet) bool { return n != nil && n.IP.Equal(ip.AsSlice()) }
	return delRules(func(r netlink.Rule) bool {
		return (r.Priority == toPodRulePriority && is(r.Dst)) || (r.Priority == fromPodRulePriority && is(r.Src))
	})
}
