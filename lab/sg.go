package lab

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/vpclab/vpclab/fabric"
	"github.com/vpclab/vpclab/fakeec2/model"
)

// SGReport is what `vpclab sg` shows: the lab VPC's security groups with
// their rules and members, and what the fabric dropped at each ENI.
type SGReport struct {
	Groups []SGStatus    `json:"groups"`
	ENIs   []SGENIStatus `json:"enis"`
}

// SGStatus is one security group.
type SGStatus struct {
	ID          string         `json:"id"`
	Name        string         `json:"name"`
	Description string         `json:"description,omitempty"`
	Rules       []model.SGRule `json:"rules"`
	// Members are the ids of the ENIs in the group.
	Members []string `json:"members"`
}

// SGENIStatus is one ENI in the VPC with its groups and drop counters.
type SGENIStatus struct {
	ID     string       `json:"id"`
	Node   string       `json:"node,omitempty"`
	Type   string       `json:"type"`
	Groups []string     `json:"groups"`
	Drops  fabric.Drops `json:"drops"`
}

// SecurityGroups reports the lab VPC's security groups and the fabric's
// drop counters.
func (l *Lab) SecurityGroups() (SGReport, error) {
	drops, err := l.fab.Drops()
	if err != nil {
		return SGReport{}, err
	}
	nodeOf := map[string]string{} // instance id -> node name
	for _, n := range l.Nodes() {
		nodeOf[n.Instance.ID] = n.Name
	}
	trunkOf := map[string]string{} // branch -> trunk
	for _, t := range l.region.TrunkAssociations() {
		trunkOf[t.BranchID] = t.TrunkID
	}
	var rep SGReport
	members := map[string][]string{}
	enis := l.region.NetworkInterfaces()
	instOf := map[string]string{}
	for _, e := range enis {
		if e.Attachment != nil {
			instOf[e.ID] = e.Attachment.InstanceID
		}
	}
	for _, e := range enis {
		if e.VPCID != l.vpcID {
			continue
		}
		inst := instOf[e.ID]
		if t, ok := trunkOf[e.ID]; ok {
			inst = instOf[t]
		}
		rep.ENIs = append(rep.ENIs, SGENIStatus{ID: e.ID, Node: nodeOf[inst], Type: e.InterfaceType, Groups: e.SecurityGroups, Drops: drops[e.ID]})
		for _, g := range e.SecurityGroups {
			members[g] = append(members[g], e.ID)
		}
	}
	for _, g := range l.region.SecurityGroups() {
		if g.VPCID == l.vpcID {
			rep.Groups = append(rep.Groups, SGStatus{ID: g.ID, Name: g.Name, Description: g.Description, Rules: g.Rules, Members: members[g.ID]})
		}
	}
	return rep, nil
}

// WriteSecurityGroups renders an SGReport as two tables: the rules by
// group, then each ENI's groups and drops.
func WriteSecurityGroups(w io.Writer, r SGReport) error {
	err := table(w, "GROUP\tNAME\tMEMBERS\tDIR\tPROTO\tPORTS\tPEER\tRULE", func(row func(...any)) {
		for _, g := range r.Groups {
			first := true
			cells := func() (string, string, string) {
				if !first {
					return "", "", ""
				}
				first = false
				return g.ID, g.Name, strconv.Itoa(len(g.Members))
			}
			rules := slices.Clone(g.Rules)
			slices.SortStableFunc(rules, func(a, b model.SGRule) int {
				if a.Egress == b.Egress {
					return 0
				}
				if b.Egress {
					return -1
				}
				return 1
			})
			for _, x := range rules {
				id, name, n := cells()
				row(id, name, n, map[bool]string{false: "in", true: "out"}[x.Egress], ruleProto(x), rulePorts(x), rulePeer(x), x.ID)
			}
			if len(rules) == 0 {
				id, name, n := cells()
				row(id, name, n, "-", "-", "-", "(no rules)", "-")
			}
		}
	})
	if err != nil {
		return err
	}
	return table(w, "ENI\tNODE\tTYPE\tGROUPS\tDROPPED IN\tOUT\tSOURCE", func(row func(...any)) {
		for _, e := range r.ENIs {
			node := e.Node
			if node == "" {
				node = "-"
			}
			row(e.ID, node, e.Type, strings.Join(e.Groups, ","), e.Drops.Inbound, e.Drops.Outbound, e.Drops.Source)
		}
	})
}

func ruleProto(x model.SGRule) string {
	if x.Protocol == "-1" {
		return "all"
	}
	return x.Protocol
}

func rulePorts(x model.SGRule) string {
	switch {
	case x.Protocol == "icmp" || x.Protocol == "icmpv6":
		if x.FromPort < 0 {
			return "any"
		}
		if x.ToPort < 0 {
			return fmt.Sprintf("type %d", x.FromPort)
		}
		return fmt.Sprintf("type %d code %d", x.FromPort, x.ToPort)
	case x.FromPort < 0:
		return "all"
	case x.FromPort == x.ToPort:
		return strconv.Itoa(x.FromPort)
	}
	return fmt.Sprintf("%d-%d", x.FromPort, x.ToPort)
}

func rulePeer(x model.SGRule) string {
	if x.RefGroupID != "" {
		return x.RefGroupID
	}
	return x.CIDR.String()
}
