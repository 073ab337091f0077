package fabric

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/internal/netx"
)

// syncAll reconciles the kernel to a full snapshot and removes what an
// earlier fabric of the same name left that the region no longer has;
// f.mu is held.
func (f *Fabric) syncAll(snap model.Snapshot) error {
	for _, v := range snap.VPCs {
		f.vpcs[v.ID] = v
	}
	for _, s := range snap.Subnets {
		f.subnets[s.ID] = s
	}
	for _, g := range snap.SecurityGroups {
		f.groups[g.ID] = g
	}
	var errs []error
	for _, i := range snap.Instances {
		if i.State == "running" {
			errs = append(errs, f.ensureNode(i))
		}
	}
	for _, e := range snap.NetworkInterfaces {
		if e.InterfaceType != "branch" {
			errs = append(errs, f.reconcileENI(e.ID))
		}
	}
	for _, t := range snap.TrunkAssociations {
		errs = append(errs, f.reconcileBranch(t.BranchID))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := f.removeStale(); err != nil {
		return err
	}
	return f.syncFilters()
}

// removeStale deletes namespaces and router links of this fabric's name
// that the current state does not account for.
func (f *Fabric) removeStale() error {
	keep := map[string]bool{}
	for _, n := range f.nodes {
		keep[n.nsName] = true
	}
	for _, r := range f.routers {
		keep[r.nsName] = true
		keep[r.inetName] = true
	}
	names, err := netx.ListNamed(f.cfg.Name + "-")
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if !keep[n] {
			f.log.Info("removing stale namespace", "netns", n)
			errs = append(errs, netx.DeleteNamed(n))
		}
	}
	for _, r := range f.routers {
		want := map[string]bool{"lo": true, "igw": true}
		for _, l := range f.enis {
			if l.vpcID == r.vpcID {
				want[l.routerName] = true
			}
		}
		for _, b := range f.branches {
			want[b.routerName] = true
		}
		links, err := r.h.LinkList()
		if err != nil {
			errs = append(errs, fmt.Errorf("router %s: %w", r.vpcID, err))
			continue
		}
		for _, l := range links {
			name := l.Attrs().Name
			if want[name] || !(strings.HasPrefix(name, "e") || strings.HasPrefix(name, "b")) {
				continue
			}
			f.log.Info("removing stale link", "router", r.nsName, "link", name)
			if _, vid, ok := strings.Cut(name, "."); ok && strings.HasPrefix(name, "b") {
				// A branch link: also drop its filter on the trunk.
				if parent, err := r.h.LinkByIndex(l.Attrs().ParentIndex); err == nil {
					n, _ := strconv.Atoi(vid)
					errs = append(errs, f.vlan.Del(r.h, parent, name, n))
					continue
				}
			}
			if err := r.h.LinkDel(l); err != nil && !isNotFound(err) {
				errs = append(errs, fmt.Errorf("router %s: delete %s: %w", r.vpcID, name, err))
			}
		}
	}
	return errors.Join(errs...)
}
