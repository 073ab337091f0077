package lab

import (
	"sort"
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
}

// NodeStatus is one node in Status.
type NodeStatus struct {
	Name         string      `json:"name"`
	InstanceID   string      `json:"instanceId"`
	InstanceType string      `json:"instanceType"`
	PrivateIP    string      `json:"privateIp"`
	NetNS        string      `json:"netns"`
	MountNS      string      `json:"mountns"`
	Ipamd        IpamdState  `json:"ipamd"`
	ENIs         []ENIStatus `json:"enis"`
	Pods         []PodStatus `json:"pods"`
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
	ID        string `json:"id"`
	CIDR      string `json:"cidr"`
	AZ        string `json:"az"`
	Available int    `json:"available"`
}

// Status reports the lab: nodes with their ipamd, ENIs and pods, subnets.
func (l *Lab) Status() Status {
	o, _, _ := ReadOwner(l.paths)
	s := Status{Name: l.Name(), Ready: l.Ready(), Owner: o, Region: l.cfg.Region}
	if !s.Ready {
		return s // bring-up is still writing the rest
	}
	s.EC2Endpoint, s.VPCID = l.ec2URL, l.vpcID
	enis := l.region.NetworkInterfaces()
	for _, n := range l.Nodes() {
		ns := NodeStatus{Name: n.Name, InstanceID: n.Instance.ID, InstanceType: n.Instance.Type, PrivateIP: n.Instance.PrivateIP.String(),
			NetNS: n.NetNS(), MountNS: n.MountNS(), Ipamd: n.IpamdState()}
		pods := n.Pods()
		for _, p := range pods {
			ns.Pods = append(ns.Pods, p.status())
		}
		for _, e := range enis {
			if e.Attachment == nil || e.Attachment.InstanceID != n.Instance.ID {
				continue
			}
			es := ENIStatus{ID: e.ID, Device: e.Attachment.DeviceIndex, SubnetID: e.SubnetID, Addresses: 1 + len(e.SecondaryIPs)}
			for _, p := range pods {
				for _, a := range e.SecondaryIPs {
					if a == p.IP {
						es.Used++
					}
				}
				for _, pf := range e.Prefixes {
					if pf.Contains(p.IP) {
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
		sort.Slice(ns.ENIs, func(i, j int) bool { return ns.ENIs[i].Device < ns.ENIs[j].Device })
		s.Nodes = append(s.Nodes, ns)
	}
	for _, sn := range l.region.Subnets() {
		s.Subnets = append(s.Subnets, SubnetStatus{ID: sn.ID, CIDR: sn.CIDR.String(), AZ: sn.AZ, Available: sn.AvailableIPs})
	}
	return s
}

func (p *Pod) status() PodStatus {
	return PodStatus{Namespace: p.Namespace, Name: p.Name, IP: p.IP.String(), Node: p.node.Name, NetNS: p.NetNS()}
}
