package ec2query

import (
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/vpclab/vpclab/fakeec2/model"
)

// qnode is one level of a flattened EC2 Query request: "Filter.1.Value.2=x"
// becomes Filter -> 1 -> Value -> 2 = x.
type qnode struct {
	val  string
	has  bool
	kids map[string]*qnode
}

// decodeQuery builds the parameter tree of a request.
func decodeQuery(form url.Values) *qnode {
	root := &qnode{}
	for k, vs := range form {
		if len(vs) == 0 {
			continue
		}
		cur := root
		for _, p := range strings.Split(k, ".") {
			if cur.kids == nil {
				cur.kids = map[string]*qnode{}
			}
			n := cur.kids[p]
			if n == nil {
				n = &qnode{}
				cur.kids[p] = n
			}
			cur = n
		}
		cur.val, cur.has = vs[0], true
	}
	return root
}

func (n *qnode) child(name string) *qnode {
	if n == nil || n.kids == nil {
		return nil
	}
	return n.kids[name]
}

// str returns a scalar parameter, "" when absent.
func (n *qnode) str(name string) string {
	if c := n.child(name); c != nil {
		return c.val
	}
	return ""
}

func (n *qnode) present(name string) bool { c := n.child(name); return c != nil && c.has }

// required returns a scalar parameter or MissingParameter.
func (n *qnode) required(name string) (string, error) {
	v := n.str(name)
	if v == "" {
		return "", model.ErrMissing(name)
	}
	return v, nil
}

// integer returns an integer parameter; absent is 0.
func (n *qnode) integer(name string) (int, error) {
	if !n.present(name) {
		return 0, nil
	}
	v, err := strconv.Atoi(n.str(name))
	if err != nil || v < -1<<31 || v > 1<<31-1 {
		return 0, model.ErrInvalid("Value (%s) for parameter %s is invalid. Expected an integer.", n.str(name), name)
	}
	return v, nil
}

// count returns a count parameter that, when present, must be at least 1.
func (n *qnode) count(name string) (int, error) {
	v, err := n.integer(name)
	if err == nil && n.present(name) && v < 1 {
		return 0, model.ErrInvalid("Value (%d) for parameter %s is invalid. Expected a positive integer.", v, name)
	}
	return v, err
}

// boolean returns a boolean parameter; absent is nil.
func (n *qnode) boolean(name string) (*bool, error) {
	if !n.present(name) {
		return nil, nil
	}
	switch strings.ToLower(n.str(name)) {
	case "true":
		t := true
		return &t, nil
	case "false":
		f := false
		return &f, nil
	}
	return nil, model.ErrInvalid("Value (%s) for parameter %s is invalid. Expected a boolean.", n.str(name), name)
}

// items returns the members of a flattened list (Name.1, Name.2, …) in index
// order. Indexes must be positive integers.
func (n *qnode) items(name string) ([]*qnode, error) {
	c := n.child(name)
	if c == nil || len(c.kids) == 0 {
		return nil, nil
	}
	type kv struct {
		i int
		n *qnode
	}
	list := make([]kv, 0, len(c.kids))
	for k, v := range c.kids {
		i, err := strconv.Atoi(k)
		if err != nil || i < 1 {
			return nil, model.ErrInvalid("Invalid list index '%s' in parameter %s", k, name)
		}
		list = append(list, kv{i, v})
	}
	sort.Slice(list, func(a, b int) bool { return list[a].i < list[b].i })
	out := make([]*qnode, len(list))
	for i, x := range list {
		out[i] = x.n
	}
	return out, nil
}

// strings returns a flattened list of scalars.
func (n *qnode) strings(name string) ([]string, error) {
	it, err := n.items(name)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(it))
	for _, x := range it {
		if x.has {
			out = append(out, x.val)
		}
	}
	return out, nil
}

// addr parses an IPv4 or IPv6 address parameter.
func parseAddr(name, v string, want6 bool) (netip.Addr, error) {
	a, err := netip.ParseAddr(v)
	if err != nil || a.Is6() != want6 || a.Zone() != "" {
		return netip.Addr{}, model.ErrInvalid("Value (%s) for parameter %s is invalid. Not a valid IP address.", v, name)
	}
	return a, nil
}

func parsePrefix(name, v string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(v)
	if err != nil {
		return netip.Prefix{}, model.ErrInvalid("Value (%s) for parameter %s is invalid. Not a valid CIDR block.", v, name)
	}
	return p, nil
}

// prefixItems parses the list parameter name.N.name (Ipv4Prefix.1.Ipv4Prefix)
// as CIDR blocks.
func (q *qnode) prefixItems(name string) ([]netip.Prefix, error) {
	items, err := q.items(name)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, it := range items {
		p, err := parsePrefix(name, it.str(name))
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// ipv6Items parses the list parameter list.N.field as IPv6 addresses.
func (q *qnode) ipv6Items(list, field string) ([]netip.Addr, error) {
	items, err := q.items(list)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, it := range items {
		a, err := parseAddr(list+"."+field, it.str(field), true)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func (n *qnode) addrList(name string, want6 bool) ([]netip.Addr, error) {
	vals, err := n.strings(name)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, v := range vals {
		a, err := parseAddr(name, v, want6)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func (n *qnode) prefixList(name string) ([]netip.Prefix, error) {
	vals, err := n.strings(name)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, v := range vals {
		p, err := parsePrefix(name, v)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Filter is one Describe filter: values are ORed, filters ANDed.
type Filter struct {
	Name   string
	Values []string
}

func (n *qnode) filters() ([]Filter, error) {
	it, err := n.items("Filter")
	if err != nil {
		return nil, err
	}
	out := make([]Filter, 0, len(it))
	for _, f := range it {
		name := f.str("Name")
		if name == "" {
			return nil, model.ErrMissing("Filter.Name")
		}
		vals, err := f.strings("Value")
		if err != nil {
			return nil, err
		}
		out = append(out, Filter{Name: name, Values: vals})
	}
	return out, nil
}

// tagList reads Tag.N.Key / Tag.N.Value.
func (n *qnode) tagList(name string) (model.Tags, []model.TagFilter, error) {
	it, err := n.items(name)
	if err != nil {
		return nil, nil, err
	}
	tags := model.Tags{}
	var filters []model.TagFilter
	for _, t := range it {
		k := t.str("Key")
		if k == "" {
			return nil, nil, model.ErrInvalid("Tag key cannot be empty")
		}
		tags[k] = t.str("Value")
		f := model.TagFilter{Key: k}
		if t.present("Value") {
			v := t.str("Value")
			f.Value = &v
		}
		filters = append(filters, f)
	}
	return tags, filters, nil
}

// tagSpecs reads TagSpecification.N for one resource type.
func (n *qnode) tagSpecs(resourceType string) (model.Tags, error) {
	specs, err := n.items("TagSpecification")
	if err != nil {
		return nil, err
	}
	out := model.Tags{}
	for _, s := range specs {
		rt := s.str("ResourceType")
		if rt == "" {
			return nil, model.ErrMissing("TagSpecification.ResourceType")
		}
		if rt != resourceType {
			continue
		}
		tags, _, err := s.tagList("Tag")
		if err != nil {
			return nil, err
		}
		for k, v := range tags {
			if err := model.ValidateTag(k, v); err != nil {
				return nil, err
			}
			out[k] = v
		}
	}
	return out, nil
}
