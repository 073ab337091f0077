package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/ipamd"
)

// introspectedENIs is the part of ipamd's /v1/enis the checks need, per
// network card (v1.20 and later) or, in older releases, for the one card.
type introspectedENIs map[string]introspectedCard

// introspectedCard is one network card's datastore.
type introspectedCard struct {
	TotalIPs, AssignedIPs int
	ENIs                  map[string]struct {
		ID                 string
		IsTrunk            bool
		AvailableIPv4Cidrs map[string]struct {
			IsPrefix    bool
			IPAddresses map[string]struct {
				Address string
				IPAMKey struct{ NetworkName string }
			}
		}
	}
}

// IpamdENIs returns ipamd's view: ENI id -> CIDRs, and the assigned addresses.
func (n *Node) IpamdENIs() (map[string][]string, map[netip.Addr]bool, error) {
	b, err := n.HTTPGet("http://127.0.0.1:61679/v1/enis")
	if err != nil {
		return nil, nil, fmt.Errorf("node %s introspection: %w", n.Name, err)
	}
	var v introspectedENIs
	var raw map[string]json.RawMessage
	err = json.Unmarshal(b, &raw)
	if _, old := raw["ENIs"]; err == nil && old {
		var c introspectedCard
		err = json.Unmarshal(b, &c)
		v = introspectedENIs{"0": c}
	} else if err == nil {
		err = json.Unmarshal(b, &v)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("node %s introspection: %w", n.Name, err)
	}
	enis := map[string][]string{}
	assigned := map[netip.Addr]bool{}
	for _, e := range v["0"].ENIs {
		if e.IsTrunk {
			continue
		}
		enis[e.ID] = []string{}
		for c, ci := range e.AvailableIPv4Cidrs {
			enis[e.ID] = append(enis[e.ID], c)
			for _, a := range ci.IPAddresses {
				if a.IPAMKey.NetworkName != "" {
					assigned[netip.MustParseAddr(a.Address)] = true
				}
			}
		}
		sort.Strings(enis[e.ID])
	}
	return enis, assigned, nil
}

// CheckInvariants checks, once the lab is quiet (it retries for up to 15 s
// while pool actions settle, 70 s with the real VPC CNI on a node): the region's own invariants; every ipamd's
// ENIs and addresses equal EC2's for its node; every pod's address is
// assigned in ipamd, routed on its node, and unique; no host veth without
// a pod.
func (l *Lab) CheckInvariants(ctx context.Context) error {
	quiet := 15 * time.Second
	for _, n := range l.Nodes() {
		if n.CNI().IsUpstream() {
			quiet = 70 * time.Second // its pool ticks every 5 s, reconciles every 60 s
		}
	}
	deadline := time.Now().Add(quiet)
	for {
		err := l.checkOnce(ctx)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (l *Lab) checkOnce(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := l.fab.WaitSynced(wctx); err != nil {
		return err
	}
	var errs []error
	if err := l.region.CheckInvariants(); err != nil {
		errs = append(errs, err)
	}
	owner := map[netip.Addr]string{}
	podsOn, err := l.podAddrs(ctx)
	if err != nil {
		return err
	}
	for _, n := range l.Nodes() {
		ipamdENIs, assigned, err := n.IpamdENIs()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, l.checkENIs(n, ipamdENIs)...)
		routes, _ := n.Exec(ctx, "ip", "-4", "route", "show", "table", "main")
		var pods, branchPods []podAddr
		for _, p := range podsOn[n.Name] {
			if p.podENI != "" {
				branchPods = append(branchPods, p)
				if o, dup := owner[p.ip]; dup {
					errs = append(errs, fmt.Errorf("address %s held by %s and %s", p.ip, o, p.name))
				}
				owner[p.ip] = p.name
				continue
			}
			pods = append(pods, p)
		}
		errs = append(errs, l.checkBranchPods(ctx, n, branchPods)...)
		// Standard-mode branch pods' veths carry the normal prefix.
		wantVeths := len(pods)
		if n.envValue("POD_SECURITY_GROUP_ENFORCING_MODE") == "standard" {
			wantVeths += len(branchPods)
		}
		// Veths of deleted pods go with their namespaces, asynchronously.
		veths := 0
		for deadline := time.Now().Add(5 * time.Second); ; {
			links, _ := n.Exec(ctx, "ip", "-o", "link", "show")
			veths = strings.Count(links, ": "+n.vethPrefix())
			if veths == wantVeths || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, p := range pods {
			if o, dup := owner[p.ip]; dup {
				errs = append(errs, fmt.Errorf("address %s held by %s and %s", p.ip, o, p.name))
			}
			owner[p.ip] = p.name
			if !assigned[p.ip] {
				errs = append(errs, fmt.Errorf("node %s: pod %s has %s, which ipamd does not show as assigned", n.Name, p.name, p.ip))
			}
			if !strings.Contains(routes, p.ip.String()+" dev "+n.vethPrefix()) {
				errs = append(errs, fmt.Errorf("node %s: no host route to pod %s (%s)", n.Name, p.name, p.ip))
			}
			if l.kube != nil && !l.onInstanceENIs(n.Instance.ID, p.ip) {
				errs = append(errs, fmt.Errorf("node %s: pod %s has %s, which is on none of the node's ENIs in EC2", n.Name, p.name, p.ip))
			}
		}
		if len(assigned) != len(pods) {
			errs = append(errs, fmt.Errorf("node %s: ipamd has %d addresses assigned for %d pods", n.Name, len(assigned), len(pods)))
		}
		if veths != wantVeths {
			errs = append(errs, fmt.Errorf("node %s: %d host veths for %d pods", n.Name, veths, wantVeths))
		}
	}
	return errors.Join(errs...)
}

// checkENIs compares a node's ENIs and their addresses in ipamd with
// EC2's (trunks aside: they hold no pod addresses; and ENIs the VPC CNI
// does not manage: cniManages, EFA-only).
func (l *Lab) checkENIs(n *Node, ipamdENIs map[string][]string) []error {
	var errs []error
	ec2 := map[string][]string{}
	for _, e := range l.region.NetworkInterfaces() {
		if e.Attachment == nil || e.Attachment.InstanceID != n.Instance.ID || e.InterfaceType == "trunk" {
			continue
		}
		if !cniManages(n, e) || e.InterfaceType == "efa-only" {
			continue // ipamd leaves it alone, as the VPC CNI does
		}
		var cidrs []string
		for _, a := range e.SecondaryIPs {
			cidrs = append(cidrs, netip.PrefixFrom(a, 32).String())
		}
		for _, p := range e.Prefixes {
			cidrs = append(cidrs, p.String())
		}
		sort.Strings(cidrs)
		if cidrs == nil {
			cidrs = []string{}
		}
		ec2[e.ID] = cidrs
	}
	for id, c := range ipamdENIs {
		if e, ok := ec2[id]; !ok {
			errs = append(errs, fmt.Errorf("node %s: ipamd holds ENI %s that EC2 does not attach to %s", n.Name, id, n.Instance.ID))
		} else if strings.Join(e, ",") != strings.Join(c, ",") {
			errs = append(errs, fmt.Errorf("node %s: ENI %s: ipamd has %v, EC2 has %v", n.Name, id, c, e))
		}
	}
	for id := range ec2 {
		if _, ok := ipamdENIs[id]; !ok {
			errs = append(errs, fmt.Errorf("node %s: EC2 attaches ENI %s that ipamd does not hold", n.Name, id))
		}
	}
	return errs
}

// podAddr is a pod and its address.
type podAddr struct {
	name   string // namespace/name
	ip     netip.Addr
	podENI string // the controller's annotation of a branch ENI pod
}

// podAddrs lists each node's pods with a VPC address: the lab's own, or in
// Kubernetes mode the API's (pods not on the host network, with an IP).
func (l *Lab) podAddrs(ctx context.Context) (map[string][]podAddr, error) {
	out := map[string][]podAddr{}
	if l.kube == nil {
		for _, n := range l.Nodes() {
			for _, p := range n.Pods() {
				out[n.Name] = append(out[n.Name], podAddr{name: p.Namespace + "/" + p.Name, ip: p.IP})
			}
		}
		return out, nil
	}
	pods, err := l.KubePods(ctx, "")
	if err != nil {
		return nil, err
	}
	for _, p := range pods {
		ip, err := netip.ParseAddr(p.IP)
		if p.HostNetwork || err != nil {
			continue
		}
		out[p.Node] = append(out[p.Node], podAddr{p.Namespace + "/" + p.Name, ip, p.PodENI})
	}
	return out, nil
}

// checkBranchPods checks a node's branch ENI pods, EC2 == controller ==
// node: the annotation's ENI is a branch in EC2 with the pod's address
// and the annotation's MAC, associated at the annotation's VLAN with a
// trunk attached to the node; the fabric carries it; the node has
// vlan.eth.<vlan> with that MAC and route table 100+vlan.
func (l *Lab) checkBranchPods(ctx context.Context, n *Node, pods []podAddr) []error {
	var errs []error
	for _, p := range pods {
		var anns []ipamd.PodENI
		if err := json.Unmarshal([]byte(p.podENI), &anns); err != nil || len(anns) == 0 {
			errs = append(errs, fmt.Errorf("node %s: pod %s: unreadable pod-eni annotation %q", n.Name, p.name, p.podENI))
			continue
		}
		a := anns[0]
		e, err := l.region.NetworkInterface(a.ENIID)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("node %s: pod %s: branch ENI %s: %w", n.Name, p.name, a.ENIID, err))
			continue
		case e.InterfaceType != "branch" || e.PrivateIP != p.ip || e.MAC != a.IfAddress:
			errs = append(errs, fmt.Errorf("node %s: pod %s (%s): EC2's %s is %s %s %s, the annotation says branch %s %s", n.Name, p.name, p.ip, e.ID, e.InterfaceType, e.PrivateIP, e.MAC, a.PrivateIP, a.IfAddress))
		}
		var assoc *model.TrunkAssociation
		for _, t := range l.region.TrunkAssociations() {
			if t.BranchID == e.ID {
				assoc = &t
			}
		}
		trunk, terr := model.NetworkInterface{}, error(nil)
		if assoc != nil {
			trunk, terr = l.region.NetworkInterface(assoc.TrunkID)
		}
		if assoc == nil || assoc.VlanID != a.VlanID || terr != nil || trunk.Attachment == nil || trunk.Attachment.InstanceID != n.Instance.ID {
			errs = append(errs, fmt.Errorf("node %s: pod %s: branch %s is not on the node's trunk at VLAN %d in EC2 (%+v)", n.Name, p.name, e.ID, a.VlanID, assoc))
		}
		if _, ok := l.fab.RouterLinkName(e.ID); !ok {
			errs = append(errs, fmt.Errorf("node %s: pod %s: the fabric does not carry branch %s", n.Name, p.name, e.ID))
		}
		vl := fmt.Sprintf("vlan.eth.%d", a.VlanID)
		if out, err := n.Exec(ctx, "ip", "-o", "link", "show", vl); err != nil || !strings.Contains(out, strings.ToLower(a.IfAddress)) {
			errs = append(errs, fmt.Errorf("node %s: pod %s: no %s with the branch's MAC %s", n.Name, p.name, vl, a.IfAddress))
		}
		if out, _ := n.Exec(ctx, "ip", "-4", "route", "show", "table", fmt.Sprint(100+a.VlanID)); !strings.Contains(out, "default via") {
			errs = append(errs, fmt.Errorf("node %s: pod %s: route table %d has no default route", n.Name, p.name, 100+a.VlanID))
		}
	}
	return errs
}

// cniManages says whether the node's CNI manages one of its attached ENIs
// (ipamd.Manages, with the node's MANAGE_UNTAGGED_ENI, default true).
func cniManages(n *Node, e model.NetworkInterface) bool {
	manage, err := strconv.ParseBool(n.envValue("MANAGE_UNTAGGED_ENI"))
	return ipamd.Manages(e.Attachment.DeviceIndex == 0, e.Tags, n.Instance.ID, err != nil || manage)
}
