package ec2query

import (
	"slices"
	"strconv"

	"github.com/vpclab/vpclab/fakeec2/model"
)

// ruleParams reads IpPermissions.N (and, for ingress, the legacy top-level
// IpProtocol/FromPort/ToPort/CidrIp form): one rule per peer. The
// by-name forms EC2 keeps for default VPCs are refused, naming the
// parameter to use instead.
func ruleParams(q *qnode, legacy bool) ([]model.SGRule, error) {
	for _, p := range []string{"GroupName", "SourceSecurityGroupName", "SourceSecurityGroupOwnerId"} {
		if q.present(p) {
			return nil, model.ErrInvalid("%s addresses security groups of a default VPC only; give GroupId and IpPermissions.N.Groups.N.GroupId.", p)
		}
	}
	if !legacy && (q.present("IpProtocol") || q.present("CidrIp") || q.present("FromPort") || q.present("ToPort")) {
		return nil, model.ErrInvalid("IpProtocol, FromPort, ToPort and CidrIp are not supported for egress rules; use IpPermissions.")
	}
	perms, err := q.items("IpPermissions")
	if err != nil {
		return nil, err
	}
	var out []model.SGRule
	if legacy && q.present("IpProtocol") {
		if len(perms) > 0 {
			return nil, model.ErrCombination("IpPermissions cannot be combined with IpProtocol, FromPort, ToPort or CidrIp.")
		}
		x, err := protoPorts(q, "")
		if err != nil {
			return nil, err
		}
		if x.CIDR, err = parsePrefix("CidrIp", q.str("CidrIp")); err != nil {
			return nil, err
		}
		return []model.SGRule{x}, nil
	}
	for i, p := range perms {
		at := "IpPermissions." + strconv.Itoa(i+1) + "."
		base, err := protoPorts(p, at)
		if err != nil {
			return nil, err
		}
		peers := 0
		for _, list := range []struct{ name, field string }{{"IpRanges", "CidrIp"}, {"Ipv6Ranges", "CidrIpv6"}} {
			ranges, err := p.items(list.name)
			if err != nil {
				return nil, err
			}
			for _, r := range ranges {
				x := base
				if x.CIDR, err = parsePrefix(at+list.name+".N."+list.field, r.str(list.field)); err != nil {
					return nil, err
				}
				if x.CIDR.Addr().Is6() != (list.field == "CidrIpv6") {
					return nil, model.ErrInvalid("Value (%s) for parameter %s%s.N.%s is invalid.", r.str(list.field), at, list.name, list.field)
				}
				x.Description = r.str("Description")
				out, peers = append(out, x), peers+1
			}
		}
		groups, err := p.items("Groups")
		if err != nil {
			return nil, err
		}
		for _, g := range groups {
			x := base
			x.RefGroupID, x.Description = g.str("GroupId"), g.str("Description")
			if x.RefGroupID == "" {
				return nil, model.ErrMissing(at + "Groups.N.GroupId")
			}
			out, peers = append(out, x), peers+1
		}
		if peers == 0 {
			return nil, model.ErrMissing(at + "IpRanges, Ipv6Ranges or Groups")
		}
	}
	return out, nil
}

// protoPorts reads IpProtocol, FromPort and ToPort (ports default to -1).
func protoPorts(q *qnode, at string) (model.SGRule, error) {
	x := model.SGRule{Protocol: q.str("IpProtocol"), FromPort: -1, ToPort: -1}
	if x.Protocol == "" {
		return x, model.ErrMissing(at + "IpProtocol")
	}
	for _, p := range []struct {
		name string
		v    *int
	}{{"FromPort", &x.FromPort}, {"ToPort", &x.ToPort}} {
		if q.present(p.name) {
			n, err := q.integer(p.name)
			if err != nil {
				return x, err
			}
			*p.v = n
		}
	}
	return x, nil
}

func (s *Server) authorizeIngress(q *qnode) (any, error) { return s.authorize(q, false) }
func (s *Server) authorizeEgress(q *qnode) (any, error)  { return s.authorize(q, true) }

func (s *Server) authorize(q *qnode, egress bool) (any, error) {
	rules, err := ruleParams(q, !egress)
	if err != nil {
		return nil, err
	}
	tags, err := q.tagSpecs("security-group-rule")
	if err != nil {
		return nil, err
	}
	for i := range rules {
		rules[i].Tags = tags
	}
	added, err := s.region.AuthorizeRules(q.str("GroupId"), egress, rules)
	if err != nil {
		return nil, err
	}
	out := struct {
		Return bool          `xml:"return"`
		Rules  []xSGRuleItem `xml:"securityGroupRuleSet>item"`
	}{Return: true}
	for _, x := range added {
		out.Rules = append(out.Rules, s.ruleItem(x))
	}
	return out, nil
}

func (s *Server) revokeIngress(q *qnode) (any, error) { return s.revoke(q, false) }
func (s *Server) revokeEgress(q *qnode) (any, error)  { return s.revoke(q, true) }

func (s *Server) revoke(q *qnode, egress bool) (any, error) {
	rules, err := ruleParams(q, !egress) // none when only rule ids are given
	if err != nil {
		return nil, err
	}
	ids, err := q.strings("SecurityGroupRuleId")
	if err != nil {
		return nil, err
	}
	gone, err := s.region.RevokeRules(q.str("GroupId"), egress, rules, ids)
	if err != nil {
		return nil, err
	}
	// A RevokedSecurityGroupRule names a referenced group by id only.
	type revoked struct {
		xRuleCore
		Referenced string `xml:"referencedGroupId,omitempty"`
	}
	out := struct {
		Return  bool      `xml:"return"`
		Revoked []revoked `xml:"revokedSecurityGroupRuleSet>item"`
	}{Return: true}
	for _, x := range gone {
		out.Revoked = append(out.Revoked, revoked{ruleCore(x), x.RefGroupID})
	}
	return out, nil
}

func (s *Server) modifySecurityGroupRules(q *qnode) (any, error) {
	items, err := q.items("SecurityGroupRule")
	if err != nil {
		return nil, err
	}
	updates := map[string]model.SGRule{}
	for i, it := range items {
		at := "SecurityGroupRule." + strconv.Itoa(i+1) + "."
		id := it.str("SecurityGroupRuleId")
		if id == "" {
			return nil, model.ErrMissing(at + "SecurityGroupRuleId")
		}
		r := it.child("SecurityGroupRule")
		if r == nil {
			return nil, model.ErrMissing(at + "SecurityGroupRule")
		}
		x, err := protoPorts(r, at+"SecurityGroupRule.")
		if err != nil {
			return nil, err
		}
		x.RefGroupID, x.Description = r.str("ReferencedGroupId"), r.str("Description")
		for _, f := range []string{"CidrIpv4", "CidrIpv6"} {
			if r.present(f) {
				if x.CIDR, err = parsePrefix(at+"SecurityGroupRule."+f, r.str(f)); err != nil {
					return nil, err
				}
			}
		}
		if _, dup := updates[id]; dup {
			return nil, model.ErrInvalid("The security group rule %s is specified more than once.", id)
		}
		updates[id] = x
	}
	if err := s.region.ModifyRules(q.str("GroupId"), updates); err != nil {
		return nil, err
	}
	return struct {
		Return bool `xml:"return"`
	}{true}, nil
}

func (s *Server) deleteSecurityGroup(q *qnode) (any, error) {
	id := q.str("GroupId")
	if id == "" && q.str("GroupName") != "" {
		return nil, model.ErrInvalid("Deleting a security group by GroupName works only in a default VPC; give GroupId.")
	}
	if err := s.region.DeleteSecurityGroup(id); err != nil {
		return nil, err
	}
	return struct {
		Return  bool   `xml:"return"`
		GroupID string `xml:"groupId"`
	}{true, id}, nil
}

// xRuleCore is what every response shape of a rule carries.
type xRuleCore struct {
	ID          string `xml:"securityGroupRuleId"`
	GroupID     string `xml:"groupId"`
	IsEgress    bool   `xml:"isEgress"`
	IPProtocol  string `xml:"ipProtocol"`
	FromPort    int    `xml:"fromPort"`
	ToPort      int    `xml:"toPort"`
	CIDRv4      string `xml:"cidrIpv4,omitempty"`
	CIDRv6      string `xml:"cidrIpv6,omitempty"`
	Description string `xml:"description,omitempty"`
}

// xSGRuleItem is a SecurityGroupRule in responses.
type xSGRuleItem struct {
	xRuleCore
	OwnerID    string `xml:"groupOwnerId"`
	Referenced *struct {
		GroupID string `xml:"groupId"`
		UserID  string `xml:"userId"`
	} `xml:"referencedGroupInfo"`
	TagSet *xTagSet `xml:"tagSet"`
	ARN    string   `xml:"securityGroupRuleArn"`
}

func cidrs(x model.SGRule) (v4, v6 string) {
	switch {
	case !x.CIDR.IsValid():
	case x.CIDR.Addr().Is4():
		v4 = x.CIDR.String()
	default:
		v6 = x.CIDR.String()
	}
	return v4, v6
}

func ruleCore(x model.SGRule) xRuleCore {
	v4, v6 := cidrs(x)
	return xRuleCore{ID: x.ID, GroupID: x.GroupID, IsEgress: x.Egress, IPProtocol: x.Protocol, FromPort: x.FromPort, ToPort: x.ToPort,
		CIDRv4: v4, CIDRv6: v6, Description: x.Description}
}

func (s *Server) ruleItem(x model.SGRule) xSGRuleItem {
	it := xSGRuleItem{xRuleCore: ruleCore(x), OwnerID: s.region.AccountID(), TagSet: tagSet(x.Tags),
		ARN: "arn:aws:ec2:" + s.region.Name() + ":" + s.region.AccountID() + ":security-group-rule/" + x.ID}
	if x.RefGroupID != "" {
		it.Referenced = &struct {
			GroupID string `xml:"groupId"`
			UserID  string `xml:"userId"`
		}{x.RefGroupID, s.region.AccountID()}
	}
	return it
}

var describeSecurityGroupRules = describe[model.SGRule]{
	list:    listed(func(s *Server) []model.SGRule { return s.region.SecurityGroupRules() }),
	idParam: "SecurityGroupRuleId", id: func(v *model.SGRule) string { return v.ID }, kind: model.KindRule, notFound: model.ErrRuleNotFound,
	filters: filterSet[*model.SGRule]{
		tags: func(v *model.SGRule) model.Tags { return v.Tags },
		fields: map[string]fieldFunc[*model.SGRule]{
			"group-id":               func(v *model.SGRule) []string { return []string{v.GroupID} },
			"security-group-rule-id": func(v *model.SGRule) []string { return []string{v.ID} },
		},
	},
	set: "securityGroupRuleSet", minMax: 5, maxMax: 1000,
	render: renderEach(func(s *Server, x *model.SGRule) xSGRuleItem { return s.ruleItem(*x) }),
}

// xIPPermission is one IpPermission of DescribeSecurityGroups: a protocol
// and port range with every peer that has it.
type xIPPermission struct {
	IPProtocol string   `xml:"ipProtocol"`
	FromPort   *int     `xml:"fromPort"`
	ToPort     *int     `xml:"toPort"`
	Groups     []xPeer  `xml:"groups>item"`
	IPRanges   []xPeer  `xml:"ipRanges>item"`
	IPv6Ranges []xPeer  `xml:"ipv6Ranges>item"`
	PrefixList struct{} `xml:"prefixListIds"`
}

// xPeer is one peer of an IpPermission (only the fields of its kind set).
type xPeer struct {
	UserID      string `xml:"userId,omitempty"`
	GroupID     string `xml:"groupId,omitempty"`
	CIDRIP      string `xml:"cidrIp,omitempty"`
	CIDRIPv6    string `xml:"cidrIpv6,omitempty"`
	Description string `xml:"description,omitempty"`
}

// permissions groups a direction's rules into IpPermissions, in the order
// their protocol and ports first appear.
func (s *Server) permissions(rules []model.SGRule, egress bool) []xIPPermission {
	var out []xIPPermission
	index := map[[3]string]int{}
	for _, x := range rules {
		if x.Egress != egress {
			continue
		}
		k := [3]string{x.Protocol, strconv.Itoa(x.FromPort), strconv.Itoa(x.ToPort)}
		i, ok := index[k]
		if !ok {
			p := xIPPermission{IPProtocol: x.Protocol}
			// Only protocols with ports (ICMP: type and code) show them;
			// the rule model keeps -1 for every other protocol.
			if slices.Contains([]string{"tcp", "udp", "icmp", "icmpv6"}, x.Protocol) {
				from, to := x.FromPort, x.ToPort
				p.FromPort, p.ToPort = &from, &to
			}
			out = append(out, p)
			i = len(out) - 1
			index[k] = i
		}
		v4, v6 := cidrs(x)
		switch {
		case x.RefGroupID != "":
			out[i].Groups = append(out[i].Groups, xPeer{UserID: s.region.AccountID(), GroupID: x.RefGroupID, Description: x.Description})
		case v4 != "":
			out[i].IPRanges = append(out[i].IPRanges, xPeer{CIDRIP: v4, Description: x.Description})
		default:
			out[i].IPv6Ranges = append(out[i].IPv6Ranges, xPeer{CIDRIPv6: v6, Description: x.Description})
		}
	}
	return out
}
