package lab

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/vpclab/vpclab/fakeec2/model"
)

// Status is a lab's state as `vpclab status -o json` shows it.
type Status struct {
	Name        string         `json:"name"`
	Ready       bool           `json:"ready"`
	Owner       Owner          `json:"owner"`
	EC2Endpoint string         `json:"ec2Endpoint"`
	Region      string         `json:"region"`
	VPCID       string         `json:"vpcId"`
	Nodes       []NodeStatus   `json:"nodes"`
	Subnets     []SubnetStatus `json:"subnets"`
	// Kubeconfig is the admin kubeconfig of a Kubernetes lab (its server
	// is on host loopback).
	Kubeconfig string `json:"kubeconfig,omitempty"`
}

// NodeStatus is one node in Status.
type NodeStatus struct {
	Name         string      `json:"name"`
	InstanceID   string      `json:"instanceId"`
	InstanceType string      `json:"instanceType"`
	PrivateIP    string      `json:"privateIp"`
	NetNS        string      `json:"netns"`
	MountNS      string      `json:"mountns"`
	CNI          CNIStatus   `json:"cni"`
	Ipamd        IpamdState  `json:"ipamd"`
	ENIs         []ENIStatus `json:"enis"`
	Pods         []PodStatus `json:"pods"`
}

// CNIStatus is a node's CNI implementation.
type CNIStatus struct {
	// Implementation is vpclab or upstream (the real VPC CNI).
	Implementation string `json:"implementation"`
	// Spec is how it was asked for: vpclab, upstream@VERSION, path:DIR, bin:DIR.
	Spec string `json:"spec"`
	// Version is the upstream release or the checkout's `git describe`.
	Version string `json:"version,omitempty"`
	// Binaries is the directory its binaries run from (/app on the node
	// for the real VPC CNI).
	Binaries string `json:"binaries"`
}

// ENIStatus is one ENI of a node.
type ENIStatus struct {
	ID        string   `json:"id"`
	Device    int      `json:"device"`
	SubnetID  string   `json:"subnetId"`
	Addresses int      `json:"addresses"`
	Used      int      `json:"used"`
	Free      int      `json:"free"`
	Prefixes  []string `json:"prefixes,omitempty"`
	// Groups are the ENI's security groups.
	Groups []string `json:"groups,omitempty"`
	// IMDS is how the node's metadata service differs from EC2 for this
	// ENI right now (nil: it agrees) — the signal of an IMDS lag.
	IMDS *IMDSDiff `json:"imds,omitempty"`
	// Secondary are its secondary addresses.
	Secondary []string `json:"secondary,omitempty"`
	// Type is EC2's interface type: interface, trunk, efa.
	Type string `json:"type,omitempty"`
	// Branches are a trunk's branch ENIs (security groups for pods).
	Branches []BranchStatus `json:"branches,omitempty"`
}

// BranchStatus is a branch ENI on a trunk.
type BranchStatus struct {
	ID     string   `json:"id"`
	VLAN   int      `json:"vlan"`
	IP     string   `json:"ip"`
	Groups []string `json:"groups,omitempty"`
}

// PodStatus is one pod.
type PodStatus struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	IP        string `json:"ip"`
	Node      string `json:"node"`
	NetNS     string `json:"netns"`
}

// SubnetStatus is one subnet's free-address count.
type SubnetStatus struct {
	ID string `json:"id"`
	// Name is the lab config's name for it ("" for others).
	Name      string `json:"name,omitempty"`
	CIDR      string `json:"cidr"`
	AZ        string `json:"az"`
	Available int    `json:"available"`
	// Usable is the addresses EC2 gives out in it (all but 5).
	Usable int `json:"usable"`
}

// Status reports the lab: nodes with their ipamd, ENIs and pods, subnets.
func (l *Lab) Status() Status {
	o, _, _ := ReadOwner(l.paths)
	s := Status{Name: l.Name(), Ready: l.Ready(), Owner: o, Region: l.cfg.Region}
	if !s.Ready {
		return s // bring-up is still writing the rest
	}
	s.EC2Endpoint, s.VPCID, s.Kubeconfig = l.ec2URL, l.vpcID, l.Kubeconfig()
	enis := l.region.NetworkInterfaces()
	assocs := l.region.TrunkAssociations()
	byID := map[string]model.NetworkInterface{}
	for _, e := range enis {
		byID[e.ID] = e
	}
	var byNode map[string][]podAddr
	if l.kube != nil { // the API's pods
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		byNode, _ = l.podAddrs(ctx)
		cancel()
	}
	for _, n := range l.Nodes() {
		ns := NodeStatus{Name: n.Name, InstanceID: n.Instance.ID, InstanceType: n.Instance.Type, PrivateIP: n.Instance.PrivateIP.String(),
			NetNS: n.NetNS(), MountNS: n.MountNS(), CNI: n.cniStatus(), Ipamd: n.IpamdState()}
		for _, p := range n.Pods() {
			ns.Pods = append(ns.Pods, p.status())
		}
		if l.kube != nil {
			for _, p := range byNode[n.Name] {
				namespace, name, _ := strings.Cut(p.name, "/")
				ns.Pods = append(ns.Pods, PodStatus{Namespace: namespace, Name: name, IP: p.ip.String(), Node: n.Name})
			}
		}
		for _, e := range enis {
			if e.Attachment == nil || e.Attachment.InstanceID != n.Instance.ID {
				continue
			}
			es := ENIStatus{ID: e.ID, Device: e.Attachment.DeviceIndex, SubnetID: e.SubnetID, Addresses: 1 + len(e.SecondaryIPs), Groups: e.SecurityGroups, Type: e.InterfaceType}
			if e.InterfaceType == "trunk" {
				es.Branches = branchesOf(e.ID, assocs, byID)
			}
			for _, a := range e.SecondaryIPs {
				es.Secondary = append(es.Secondary, a.String())
			}
			for _, p := range ns.Pods {
				ip, err := netip.ParseAddr(p.IP)
				if err != nil {
					continue
				}
				for _, a := range e.SecondaryIPs {
					if a == ip {
						es.Used++
					}
				}
				for _, pf := range e.Prefixes {
					if pf.Contains(ip) {
						es.Used++
					}
				}
			}
			for _, pf := range e.Prefixes {
				es.Prefixes = append(es.Prefixes, pf.String())
			}
			es.Free = len(e.SecondaryIPs) + 16*len(e.Prefixes) - es.Used
			ns.ENIs = append(ns.ENIs, es)
		}
		ns.ENIs = append(ns.ENIs, l.imdsDiffs(n, enis, ns.ENIs)...)
		sort.Slice(ns.ENIs, func(i, j int) bool { return ns.ENIs[i].Device < ns.ENIs[j].Device })
		s.Nodes = append(s.Nodes, ns)
	}
	names := map[string]string{}
	for name, id := range l.subnets {
		names[id] = name
	}
	for _, sn := range l.region.Subnets() {
		if sn.VPCID != l.vpcID {
			continue
		}
		s.Subnets = append(s.Subnets, SubnetStatus{ID: sn.ID, Name: names[sn.ID], CIDR: sn.CIDR.String(), AZ: sn.AZ, Available: sn.AvailableIPs,
			Usable: 1<<(32-sn.CIDR.Bits()) - 5})
	}
	return s
}

// branchesOf lists a trunk's branch ENIs by VLAN.
func branchesOf(trunk string, assocs []model.TrunkAssociation, byID map[string]model.NetworkInterface) []BranchStatus {
	var out []BranchStatus
	for _, a := range assocs {
		if a.TrunkID != trunk {
			continue
		}
		b := BranchStatus{ID: a.BranchID, VLAN: a.VlanID}
		if e, ok := byID[a.BranchID]; ok {
			b.IP, b.Groups = e.PrivateIP.String(), e.SecurityGroups
		}
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VLAN < out[j].VLAN })
	return out
}

func (p *Pod) status() PodStatus {
	return PodStatus{Namespace: p.Namespace, Name: p.Name, IP: p.IP.String(), Node: p.node.Name, NetNS: p.NetNS()}
}

// ParsePodRef reads NAMESPACE/NAME (NAME alone is in "default") and checks
// both as Kubernetes names.
func ParsePodRef(ref string) (namespace, name string, err error) {
	namespace, name, ok := strings.Cut(ref, "/")
	if !ok {
		namespace, name = "default", ref
	}
	if strings.Contains(name, "/") {
		return "", "", fmt.Errorf("pod %q: want NAMESPACE/NAME", ref)
	}
	return namespace, name, ValidatePodName(namespace, name)
}

// Pod finds a pod by NAMESPACE/NAME.
func (s Status) Pod(ref string) (PodStatus, error) {
	ns, name, err := ParsePodRef(ref)
	if err != nil {
		return PodStatus{}, err
	}
	for _, n := range s.Nodes {
		for _, p := range n.Pods {
			if p.Namespace == ns && p.Name == name {
				return p, nil
			}
		}
	}
	return PodStatus{}, fmt.Errorf("no pod %s/%s in lab %s", ns, name, s.Name)
}

// Node finds a node by name.
func (s Status) Node(name string) (NodeStatus, error) {
	for _, n := range s.Nodes {
		if n.Name == name {
			return n, nil
		}
	}
	return NodeStatus{}, fmt.Errorf("no node %q in lab %s", name, s.Name)
}

// Enter returns the nsenter arguments that enter a pod (NAMESPACE/NAME) or,
// with node set, a node (its network and mount namespaces), and the pod's
// address.
func (s Status) Enter(pod, node string) ([]string, string, error) {
	if node != "" {
		n, err := s.Node(node)
		return []string{"--net=" + n.NetNS, "--mount=" + n.MountNS}, "", err
	}
	p, err := s.Pod(pod)
	return []string{"--net=" + p.NetNS}, p.IP, err
}

// AllPods lists the pods of every node.
func (s Status) AllPods() []PodStatus {
	out := []PodStatus{}
	for _, n := range s.Nodes {
		out = append(out, n.Pods...)
	}
	return out
}
