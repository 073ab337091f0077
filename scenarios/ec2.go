package scenarios

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/vpclab/vpclab/fakeec2/catalog"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/lab"
)

// EC2Call makes one EC2 Query API call out of band, as another principal
// would (a console user, another controller): Action with Params (Query
// API names; values are templates, see below), signed as the IAM user As
// (default "console"). ExpectError is the error code the call must answer
// with ("" means it must succeed). Save names variables to set from the
// answer: each the text of the first element of that name (e.g.
// {eni: networkInterfaceId}), for later {{var "eni"}}.
//
// Parameter values may use {{instance "node"}} (a node's or peer's
// instance id), {{eni "node" 1}} (the ENI at a device index),
// {{attachment "node" 1}}, {{ip "node" 1 0}} (an ENI's n-th secondary
// IPv4 address), {{podIP "p3"}} (a scenario pod's address; pods are named
// p1, p2, … in the order they were added), {{subnet "a"}}, {{vpc}} and
// {{sg "default"}} (a VPC group by name).
//
// Eventually (read-only actions: Describe*, Get*) repeats the call every
// 500 ms until it answers as expected and has every element Save names,
// for up to that long: a wait for state another component sets in its own
// time (e.g. an ENI's groups, synced every 30 s by the VPC CNI).
type EC2Call struct {
	Action      string            `yaml:"action"`
	Params      map[string]string `yaml:"params,omitempty"`
	As          string            `yaml:"as,omitempty"`
	ExpectError string            `yaml:"expectError,omitempty"`
	Save        map[string]string `yaml:"save,omitempty"`
	Eventually  model.Duration    `yaml:"eventually,omitempty"`
}

func (c *EC2Call) validate(*Scenario) error {
	if c.Action == "" {
		return errors.New("ec2: needs an action (any EC2 Query API action, e.g. UnassignPrivateIpAddresses)")
	}
	if c.Eventually < 0 || c.Eventually > 0 && !strings.HasPrefix(c.Action, "Describe") && !strings.HasPrefix(c.Action, "Get") {
		return fmt.Errorf("ec2: %s: eventually %s: only a read-only action (Describe*, Get*) may be repeated", c.Action, time.Duration(c.Eventually))
	}
	for k, v := range c.Save {
		if k == "" || v == "" {
			return fmt.Errorf("ec2: save: %q: %q: want a variable name and an element name of the answer (e.g. eni: networkInterfaceId)", k, v)
		}
	}
	return checkTemplates("ec2: params", c.Params)
}

// checkTemplates parses m's values as templates (at load time).
func checkTemplates(what string, m map[string]string) error {
	for k, v := range m {
		if _, err := template.New(k).Funcs(templateFuncs(nil)).Parse(v); err != nil {
			return fmt.Errorf("%s.%s: %w", what, k, err)
		}
	}
	return nil
}

func (c *EC2Call) String() string {
	s := "ec2 " + c.Action
	for _, k := range slices.Sorted(maps.Keys(c.Params)) {
		s += " " + k + "=" + c.Params[k]
	}
	if c.ExpectError != "" {
		s += " (expect " + c.ExpectError + ")"
	}
	if c.Eventually > 0 {
		s += " (repeated for up to " + time.Duration(c.Eventually).String() + ")"
	}
	return s + " as " + c.principal()
}

func (c *EC2Call) principal() string {
	if c.As == "" {
		return "console"
	}
	return c.As
}

func (c *EC2Call) apply(ctx context.Context, x *run, _ *lab.Node) error {
	form := url.Values{"Action": {c.Action}, "Version": {"2016-11-15"}}
	params, err := x.expand(c.Params)
	if err != nil {
		return err
	}
	for k, v := range params {
		form.Set(k, v)
	}
	deadline := time.Now().Add(time.Duration(c.Eventually))
	for {
		vars, err := c.call(ctx, x, form)
		if err == nil {
			x.mu.Lock()
			maps.Copy(x.vars, vars)
			x.mu.Unlock()
			return nil
		}
		if !time.Now().Before(deadline) || ctx.Err() != nil {
			if c.Eventually > 0 {
				return fmt.Errorf("%w (still, after %s)", err, time.Duration(c.Eventually))
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// call makes the call once and returns the variables Save names, or why
// the answer is not the one expected.
func (c *EC2Call) call(ctx context.Context, x *run, form url.Values) (map[string]string, error) {
	code, msg, body, err := ec2Post(ctx, x.l.EC2Endpoint(), x.l.Region().Name(), c.principal(), form)
	switch {
	case err != nil:
		return nil, err
	case code != c.ExpectError && c.ExpectError == "":
		return nil, fmt.Errorf("%s answered %s: %s", c.Action, code, msg)
	case code != c.ExpectError:
		return nil, fmt.Errorf("%s answered %q, want error %s", c.Action, code, c.ExpectError)
	}
	vars := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(c.Save)) {
		v, ok := firstElement(body, c.Save[name])
		if !ok {
			return nil, fmt.Errorf("%s: save %s: the answer has no <%s>", c.Action, name, c.Save[name])
		}
		vars[name] = v
	}
	return vars, nil
}

// firstElement is the text of the first element named name in an XML
// document.
func firstElement(doc []byte, name string) (string, bool) {
	d := xml.NewDecoder(bytes.NewReader(doc))
	for {
		tok, err := d.Token()
		if err != nil {
			return "", false
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == name {
			var v string
			if err := d.DecodeElement(&v, &se); err != nil {
				return "", false
			}
			return strings.TrimSpace(v), true
		}
	}
}

// expand executes the templates in m's values (see EC2Call).
func (x *run) expand(m map[string]string) (map[string]string, error) {
	if m == nil {
		return nil, nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		t, err := template.New(k).Funcs(templateFuncs(x)).Option("missingkey=error").Parse(v)
		if err != nil {
			return nil, err
		}
		var b strings.Builder
		if err := t.Execute(&b, nil); err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		out[k] = b.String()
	}
	return out, nil
}

// ec2Post sends one Query API call signed (in form) as key and returns
// its error code and message ("" on success) and the answer's body.
func ec2Post(ctx context.Context, endpoint, region, key string, form url.Values) (code, msg string, body []byte, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", "", nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	// fakeec2 in a lab checks the scope, not the signature: the access
	// key id names the caller.
	req.Header.Set("Authorization", fmt.Sprintf("AWS4-HMAC-SHA256 Credential=%s/%s/%s/ec2/aws4_request, SignedHeaders=host, Signature=0",
		key, time.Now().UTC().Format("20060102"), region))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", "", nil, fmt.Errorf("ec2 %s: %w", form.Get("Action"), err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode == http.StatusOK {
		return "", "", body, err
	}
	var e struct {
		Code    string `xml:"Errors>Error>Code"`
		Message string `xml:"Errors>Error>Message"`
	}
	if err := xml.NewDecoder(bytes.NewReader(body)).Decode(&e); err != nil || e.Code == "" {
		return "", "", body, fmt.Errorf("ec2 %s: HTTP %d: %s", form.Get("Action"), resp.StatusCode, body)
	}
	return e.Code, e.Message, body, nil
}

// templateFuncs are the functions EC2Call's parameter templates may use;
// x nil gives placeholders (for parsing at load time).
func templateFuncs(x *run) template.FuncMap {
	return template.FuncMap{
		"instance":   func(node string) (string, error) { return x.instanceID(node) },
		"eni":        func(node string, dev int) (string, error) { e, err := x.eniAt(node, dev); return e.ID, err },
		"mac":        func(node string, dev int) (string, error) { e, err := x.eniAt(node, dev); return e.MAC, err },
		"attachment": func(node string, dev int) (string, error) { e, err := x.eniAt(node, dev); return e.Attachment.ID, err },
		"ip": func(node string, dev, n int) (string, error) {
			e, err := x.eniAt(node, dev)
			if err != nil {
				return "", err
			}
			if n < 0 || n >= len(e.SecondaryIPs) {
				return "", fmt.Errorf("ENI %s has %d secondary addresses, no #%d", e.ID, len(e.SecondaryIPs), n)
			}
			return e.SecondaryIPs[n].String(), nil
		},
		"podIP": func(name string) (string, error) { return x.podIP(name) },
		"subnet": func(name string) (string, error) {
			if id, ok := x.l.SubnetID(name); ok {
				return id, nil
			}
			return "", fmt.Errorf("no subnet %q", name)
		},
		"vpc": func() string { return x.l.VPCID() },
		"var": func(name string) (string, error) {
			x.mu.Lock()
			defer x.mu.Unlock()
			v, ok := x.vars[name]
			if !ok {
				return "", fmt.Errorf("no variable %q (a set step names them)", name)
			}
			return v, nil
		},
		"sg": func(name string) (string, error) {
			if id, ok := x.l.SecurityGroupID(name); ok {
				return id, nil
			}
			return "", fmt.Errorf("no security group %q in the lab's VPC", name)
		},
	}
}

// instanceID is a node's or a peer's instance id.
func (x *run) instanceID(name string) (string, error) {
	if n := x.l.Node(name); n != nil {
		return n.Instance.ID, nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if p, ok := x.peers[name]; ok {
		return p.ID, nil
	}
	return "", fmt.Errorf("no node or peer %q", name)
}

// eniAt is the ENI attached to a node or peer at device index dev, as EC2
// has it now.
func (x *run) eniAt(name string, dev int) (model.NetworkInterface, error) {
	id, err := x.instanceID(name)
	if err != nil {
		return model.NetworkInterface{}, err
	}
	for _, e := range x.l.Region().NetworkInterfaces() {
		if e.Attachment != nil && e.Attachment.InstanceID == id && e.Attachment.DeviceIndex == dev {
			return e, nil
		}
	}
	return model.NetworkInterface{}, fmt.Errorf("%s has no ENI at device index %d", name, dev)
}

// podIP is a scenario pod's address.
func (x *run) podIP(name string) (string, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, p := range x.pods {
		if p.pod.Name == name {
			return p.pod.IP.String(), nil
		}
	}
	return "", fmt.Errorf("no pod %q (pods are p1, p2, … in the order added)", name)
}

// Peer starts an instance elsewhere in the VPC (no CNI, a namespace of its
// own in the fabric) that expectations can reach by name.
type Peer struct {
	Name         string `yaml:"name"`
	Subnet       string `yaml:"subnet,omitempty"`
	InstanceType string `yaml:"instanceType,omitempty"`
}

func (p *Peer) validate(*Scenario) error {
	if p.Name == "" {
		return errors.New("peer: needs a name (expectations reach it by name)")
	}
	return nil
}

func (p *Peer) String() string { return "start peer instance " + p.Name }

func (p *Peer) apply(ctx context.Context, x *run, n *lab.Node) error {
	subnet := n.Instance.SubnetID
	if p.Subnet != "" {
		id, ok := x.l.SubnetID(p.Subnet)
		if !ok {
			return fmt.Errorf("peer %s: no subnet %q", p.Name, p.Subnet)
		}
		subnet = id
	}
	typ := p.InstanceType
	if typ == "" {
		typ = "t3.small"
	}
	insts, err := x.l.Region().RunInstances(model.RunInstancesInput{InstanceType: typ, SubnetID: subnet, Tags: model.Tags{"Name": p.Name, "vpclab:peer": p.Name}})
	if err != nil {
		return fmt.Errorf("peer %s: %w", p.Name, err)
	}
	x.mu.Lock()
	x.peers[p.Name] = insts[0]
	x.mu.Unlock()
	return x.l.Fabric().WaitSynced(ctx)
}

// SubnetLayout reserves addresses of a subnet with an ENI of nobody's
// (description "reserved by a scenario") so that exactly Free addresses
// stay free; with NoFreePrefix they are spread so that no aligned /28 is
// wholly free (prefix delegation then finds no prefix).
type SubnetLayout struct {
	Subnet       string `yaml:"subnet"`
	Free         int    `yaml:"free"`
	NoFreePrefix bool   `yaml:"noFreePrefix,omitempty"`
}

func (s *SubnetLayout) validate(*Scenario) error {
	if s.Subnet == "" || s.Free < 0 {
		return fmt.Errorf("subnetLayout: needs a subnet (by name) and free >= 0")
	}
	return nil
}

func (s *SubnetLayout) String() string {
	out := fmt.Sprintf("leave %d addresses of subnet %s free", s.Free, s.Subnet)
	if s.NoFreePrefix {
		out += ", no aligned /28 among them"
	}
	return out
}

func (s *SubnetLayout) apply(_ context.Context, x *run, _ *lab.Node) error {
	id, ok := x.l.SubnetID(s.Subnet)
	if !ok {
		return fmt.Errorf("no subnet %q", s.Subnet)
	}
	r := x.l.Region()
	var sub model.Subnet
	for _, v := range r.Subnets() {
		if v.ID == id {
			sub = v
		}
	}
	used := map[netip.Addr]bool{}
	for _, e := range r.NetworkInterfaces() {
		for _, a := range append([]netip.Addr{e.PrivateIP}, e.SecondaryIPs...) {
			used[a] = true
		}
		for _, p := range e.Prefixes {
			for a := p.Addr(); p.Contains(a); a = a.Next() {
				used[a] = true
			}
		}
	}
	reserve, err := layout(sub.CIDR, used, s.Free, s.NoFreePrefix)
	if err != nil {
		return fmt.Errorf("subnet %s: %w", s.Subnet, err)
	}
	for chunk := range slices.Chunk(reserve, catalog.MaxIPv4PerENI()) {
		_, err = r.CreateNetworkInterface(model.CreateNetworkInterfaceInput{SubnetID: id, Description: "reserved by a scenario",
			PrivateIP: chunk[0], SecondaryIPs: chunk[1:], Tags: model.Tags{"vpclab:reserved": "true"}})
		if err != nil {
			return fmt.Errorf("reserve addresses of subnet %s: %w", s.Subnet, err)
		}
	}
	return nil
}

// layout picks the free addresses of cidr (EC2 reserves the first four and
// the last) to reserve so that free stay free; with noFreePrefix, no
// aligned /28 is left wholly free.
func layout(cidr netip.Prefix, used map[netip.Addr]bool, free int, noFreePrefix bool) ([]netip.Addr, error) {
	first, last := cidr.Addr(), lastAddr(cidr)
	isFree := func(a netip.Addr) bool {
		return !used[a] && u32(a)-u32(first) >= 4 && a != last
	}
	var reserve []netip.Addr
	kept := 0
	for block := first; cidr.Contains(block); {
		blockUsed, inBlock := false, 0
		addrs := make([]netip.Addr, 0, 16)
		a := block
		for range 16 {
			if !cidr.Contains(a) {
				break
			}
			if isFree(a) {
				addrs = append(addrs, a)
			} else {
				blockUsed = true
			}
			a = a.Next()
		}
		for _, a := range addrs {
			if kept < free && (!noFreePrefix || blockUsed || inBlock < 15) {
				kept++
				inBlock++
				continue
			}
			reserve = append(reserve, a)
		}
		block = a
	}
	if kept < free {
		return nil, fmt.Errorf("only %d addresses are free, want %d", kept, free)
	}
	return reserve, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	v := u32(p.Masked().Addr()) | (uint32(1)<<(32-p.Bits()) - 1)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// Set evaluates templates now and keeps the values for later steps'
// {{var "name"}}: an ENI's id before it is detached, a pod's address
// before it is deleted.
type Set map[string]string

func (s Set) validate(*Scenario) error {
	if len(s) == 0 {
		return errors.New("set: name at least one variable")
	}
	return checkTemplates("set", s)
}

func (s Set) apply(_ context.Context, x *run, _ *lab.Node) error {
	vals, err := x.expand(s)
	if err != nil {
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	maps.Copy(x.vars, vals)
	return nil
}

func (s Set) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(s)) {
		parts = append(parts, k+" = "+s[k])
	}
	return "set " + strings.Join(parts, ", ")
}
