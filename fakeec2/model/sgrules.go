package model

import (
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// SGRule is one rule of a security group (EC2's SecurityGroupRule): a
// protocol with a port range (ICMP: type and code) and one peer, a CIDR
// or another group.
type SGRule struct {
	ID      string `json:"id"`
	GroupID string `json:"groupId"`
	Egress  bool   `json:"egress"`
	// Protocol is "-1" (all), "tcp", "udp", "icmp", "icmpv6" or another
	// protocol number, as EC2 answers it.
	Protocol string `json:"protocol"`
	// FromPort and ToPort bound a TCP or UDP port range; for ICMP they are
	// the type and the code (-1: any); -1 for protocols without ports.
	FromPort int `json:"fromPort"`
	ToPort   int `json:"toPort"`
	// CIDR (IPv4 or IPv6) or RefGroupID is the peer: the source of an
	// ingress rule, the destination of an egress rule.
	CIDR        netip.Prefix `json:"cidr,omitzero"`
	RefGroupID  string       `json:"refGroupId,omitempty"`
	Description string       `json:"description,omitempty"`
	Tags        Tags         `json:"tags,omitempty"`
}

// MaxRulesPerDirection is EC2's default quota of inbound (and of outbound)
// rules per security group.
const MaxRulesPerDirection = 60

// MaxGroupsPerENI is EC2's default quota of security groups per network
// interface.
const MaxGroupsPerENI = 5

// KindRule is the id kind of security group rules.
var KindRule = IDKind{"sgr", "InvalidSecurityGroupRuleId.Malformed", "security group rule"}

// ErrRuleNotFound is InvalidSecurityGroupRuleId.NotFound.
func ErrRuleNotFound(id string) *APIError {
	return Errorf("InvalidSecurityGroupRuleId.NotFound", "The security group rule ID '%s' does not exist", id)
}

// sameRule reports whether a and b are the same rule for EC2: direction,
// protocol, ports and peer (descriptions and ids aside).
func sameRule(a, b SGRule) bool {
	return a.Egress == b.Egress && a.Protocol == b.Protocol && a.FromPort == b.FromPort && a.ToPort == b.ToPort &&
		a.CIDR == b.CIDR && a.RefGroupID == b.RefGroupID
}

// String is EC2's way of naming a rule in errors.
func (x SGRule) String() string {
	peer := x.CIDR.String()
	if x.RefGroupID != "" {
		peer = x.RefGroupID
	}
	proto := strings.ToUpper(x.Protocol)
	if x.Protocol == "-1" {
		proto = "ALL"
	}
	return "peer: " + peer + ", " + proto + ", from port: " + strconv.Itoa(x.FromPort) + ", to port: " + strconv.Itoa(x.ToPort) + ", ALLOW"
}

// normalize checks a rule as given by a caller and puts it in EC2's
// canonical form (protocol names, ports of protocols without them).
func (x SGRule) normalize() (SGRule, error) {
	switch strings.ToLower(x.Protocol) {
	case "":
		return x, ErrMissing("IpProtocol")
	case "-1", "all":
		x.Protocol = "-1"
	case "tcp", "6":
		x.Protocol = "tcp"
	case "udp", "17":
		x.Protocol = "udp"
	case "icmp", "1":
		x.Protocol = "icmp"
	case "icmpv6", "58":
		x.Protocol = "icmpv6"
	default:
		n, err := strconv.Atoi(x.Protocol)
		if err != nil || n < 0 || n > 255 {
			return x, ErrInvalid("Invalid value '%s' for IP protocol. Unknown protocol.", x.Protocol)
		}
		x.Protocol = strconv.Itoa(n)
	}
	switch x.Protocol {
	case "tcp", "udp":
		if x.FromPort < 0 || x.ToPort > 65535 || x.FromPort > x.ToPort {
			return x, ErrInvalid("Invalid port range (%d, %d) for protocol %s: want 0 ≤ from ≤ to ≤ 65535.", x.FromPort, x.ToPort, x.Protocol)
		}
	case "icmp", "icmpv6":
		if x.FromPort < -1 || x.FromPort > 255 || x.ToPort < -1 || x.ToPort > 255 || (x.FromPort == -1 && x.ToPort != -1) {
			return x, ErrInvalid("Invalid ICMP type %d / code %d: each -1 (any) or 0..255, and a code needs a type.", x.FromPort, x.ToPort)
		}
	default:
		x.FromPort, x.ToPort = -1, -1
	}
	switch {
	case x.CIDR.IsValid() && x.RefGroupID != "":
		return x, ErrCombination("A rule has either a CIDR or a referenced security group, not both.")
	case !x.CIDR.IsValid() && x.RefGroupID == "":
		return x, ErrMissing("CidrIp, CidrIpv6 or a referenced security group (Groups.N.GroupId)")
	case x.CIDR.IsValid():
		x.CIDR = x.CIDR.Masked()
		if x.Protocol == "icmpv6" && x.CIDR.Addr().Is4() {
			return x, ErrInvalid("ICMPv6 rules need an IPv6 CIDR (CidrIpv6).")
		}
	}
	return x, nil
}

// checkRules validates rules for group g (r.mu held): canonical form,
// referenced groups in g's VPC, no duplicate (with keep or each other).
func (r *Region) checkRules(g *SecurityGroup, rules []SGRule, keep []SGRule) ([]SGRule, error) {
	out := make([]SGRule, 0, len(rules))
	for _, x := range rules {
		x, err := x.normalize()
		if err != nil {
			return nil, err
		}
		if x.RefGroupID != "" {
			if err := CheckID(KindGroup, x.RefGroupID); err != nil {
				return nil, err
			}
			ref, ok := r.groups[x.RefGroupID]
			if !ok {
				return nil, ErrGroupNotFound(x.RefGroupID)
			}
			if ref.VPCID != g.VPCID {
				return nil, ErrInvalid("You have specified two resources that belong to different networks (%s and %s).", g.ID, ref.ID)
			}
		}
		for _, y := range append(slices.Clone(keep), out...) {
			if sameRule(x, y) {
				return nil, Errorf("InvalidPermission.Duplicate", "the specified rule \"%s\" already exists", x)
			}
		}
		out = append(out, x)
	}
	return out, nil
}

func (r *Region) lookupGroup(id string) (*SecurityGroup, error) {
	if id == "" {
		return nil, ErrMissing("GroupId")
	}
	if err := CheckID(KindGroup, id); err != nil {
		return nil, err
	}
	g, ok := r.groups[id]
	if !ok {
		return nil, ErrGroupNotFound(id)
	}
	return g, nil
}

// AuthorizeRules adds ingress (or egress) rules to a group, all or none,
// and returns them with their ids.
func (r *Region) AuthorizeRules(groupID string, egress bool, rules []SGRule) ([]SGRule, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doing(ruleAction("Authorize", egress))
	g, err := r.lookupGroup(groupID)
	if err != nil {
		return nil, err
	}
	if len(rules) == 0 {
		return nil, ErrMissing("IpPermissions")
	}
	for i := range rules {
		rules[i].Egress, rules[i].GroupID = egress, g.ID
	}
	add, err := r.checkRules(g, rules, g.Rules)
	if err != nil {
		return nil, err
	}
	n := len(add)
	for _, x := range g.Rules {
		if x.Egress == egress {
			n++
		}
	}
	if n > MaxRulesPerDirection {
		return nil, Errorf("RulesPerSecurityGroupLimitExceeded", "The maximum number of rules per security group has been reached.")
	}
	for i := range add {
		add[i].ID = r.ids.next("sgr")
		add[i].Tags = add[i].Tags.clone()
	}
	g.Rules = append(g.Rules, add...)
	r.emitGroup(g, ChangeGroupRules)
	return cloneRules(add), nil
}

// RevokeRules removes rules of one direction from a group, named by their
// properties or by id; unless every one exists, nothing changes
// (InvalidPermission.NotFound, as in a non-default VPC).
func (r *Region) RevokeRules(groupID string, egress bool, rules []SGRule, ids []string) ([]SGRule, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doing(ruleAction("Revoke", egress))
	g, err := r.lookupGroup(groupID)
	if err != nil {
		return nil, err
	}
	if len(rules) == 0 && len(ids) == 0 {
		return nil, ErrMissing("IpPermissions or SecurityGroupRuleId")
	}
	gone := map[string]bool{}
	for _, id := range ids {
		if err := CheckID(KindRule, id); err != nil {
			return nil, err
		}
		k := slices.IndexFunc(g.Rules, func(x SGRule) bool { return x.ID == id && x.Egress == egress })
		if k < 0 {
			return nil, ErrRuleNotFound(id)
		}
		gone[id] = true
	}
	for _, x := range rules {
		x.Egress = egress
		x, err := x.normalize()
		if err != nil {
			return nil, err
		}
		k := slices.IndexFunc(g.Rules, func(y SGRule) bool { return sameRule(x, y) })
		if k < 0 {
			return nil, Errorf("InvalidPermission.NotFound", "The specified rule does not exist in this security group.")
		}
		gone[g.Rules[k].ID] = true
	}
	var out []SGRule
	g.Rules = slices.DeleteFunc(g.Rules, func(x SGRule) bool {
		if gone[x.ID] {
			out = append(out, x)
		}
		return gone[x.ID]
	})
	r.emitGroup(g, ChangeGroupRules)
	return cloneRules(out), nil
}

// ModifyRules replaces rules of a group in place (same ids and directions).
func (r *Region) ModifyRules(groupID string, updates map[string]SGRule) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doing("ModifySecurityGroupRules")
	g, err := r.lookupGroup(groupID)
	if err != nil {
		return err
	}
	if len(updates) == 0 {
		return ErrMissing("SecurityGroupRule")
	}
	next := slices.Clone(g.Rules)
	var keep, changed []SGRule
	for _, x := range next {
		if _, ok := updates[x.ID]; !ok {
			keep = append(keep, x)
		}
	}
	for id, u := range updates {
		if err := CheckID(KindRule, id); err != nil {
			return err
		}
		k := slices.IndexFunc(next, func(x SGRule) bool { return x.ID == id })
		if k < 0 {
			return ErrRuleNotFound(id)
		}
		u.ID, u.GroupID, u.Egress, u.Tags = id, g.ID, next[k].Egress, next[k].Tags
		changed = append(changed, u)
	}
	sort.Slice(changed, func(i, j int) bool { return changed[i].ID < changed[j].ID })
	checked, err := r.checkRules(g, changed, keep)
	if err != nil {
		return err
	}
	for _, u := range checked {
		next[slices.IndexFunc(next, func(x SGRule) bool { return x.ID == u.ID })] = u
	}
	g.Rules = next
	r.emitGroup(g, ChangeGroupRules)
	return nil
}

// SecurityGroupRules returns every rule of every group, by group then id.
func (r *Region) SecurityGroupRules() []SGRule {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []SGRule
	for _, g := range r.groups {
		out = append(out, cloneRules(g.Rules)...)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].GroupID != out[j].GroupID {
			return out[i].GroupID < out[j].GroupID
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// DeleteSecurityGroup deletes a group that no network interface uses and
// no other group's rule references; a VPC's default group stays.
func (r *Region) DeleteSecurityGroup(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doing("DeleteSecurityGroup")
	g, err := r.lookupGroup(id)
	if err != nil {
		return err
	}
	if r.vpcs[g.VPCID].DefaultGroupID == id {
		return Errorf("CannotDelete", "the specified group: \"%s\" name: \"default\" cannot be deleted by a user", id)
	}
	for _, e := range r.enis {
		if slices.Contains(e.SecurityGroups, id) {
			return Errorf("DependencyViolation", "resource %s has a dependent object", id)
		}
	}
	for _, other := range r.groups {
		if other.ID == id {
			continue
		}
		for _, x := range other.Rules {
			if x.RefGroupID == id {
				return Errorf("DependencyViolation", "resource %s has a dependent object", id)
			}
		}
	}
	delete(r.groups, id)
	gc := g.clone()
	r.emit(Change{Kind: ChangeGroupDeleted, SecurityGroup: &gc})
	return nil
}

// defaultRules gives a new group EC2's starting rules (r.mu held): all
// egress (to ::/0 too in a VPC with IPv6), and for a VPC's default group
// all ingress from the group itself.
func (r *Region) defaultRules(g *SecurityGroup, isDefault bool) {
	v := r.vpcs[g.VPCID]
	if isDefault {
		g.Rules = append(g.Rules, SGRule{ID: r.ids.next("sgr"), GroupID: g.ID, Protocol: "-1", FromPort: -1, ToPort: -1, RefGroupID: g.ID})
	}
	g.Rules = append(g.Rules, SGRule{ID: r.ids.next("sgr"), GroupID: g.ID, Egress: true, Protocol: "-1", FromPort: -1, ToPort: -1, CIDR: netip.MustParsePrefix("0.0.0.0/0")})
	if len(v.IPv6CIDRBlocks) > 0 {
		g.Rules = append(g.Rules, SGRule{ID: r.ids.next("sgr"), GroupID: g.ID, Egress: true, Protocol: "-1", FromPort: -1, ToPort: -1, CIDR: netip.MustParsePrefix("::/0")})
	}
}

// ruleAction is the EC2 action verb+SecurityGroupIngress or …Egress.
func ruleAction(verb string, egress bool) string {
	if egress {
		return verb + "SecurityGroupEgress"
	}
	return verb + "SecurityGroupIngress"
}

func (r *Region) emitGroup(g *SecurityGroup, kind ChangeKind) {
	gc := g.clone()
	r.emit(Change{Kind: kind, SecurityGroup: &gc})
}

func cloneRules(rules []SGRule) []SGRule {
	out := make([]SGRule, len(rules))
	for i, x := range rules {
		out[i] = x
		out[i].Tags = x.Tags.clone()
	}
	return out
}
