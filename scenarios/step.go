package scenarios

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/vpclab/vpclab/internal/yamlx"
	"github.com/vpclab/vpclab/lab"
)

// Step is one action of a scenario, run in the order the file lists it.
// In YAML a step is a mapping with one action key (addPods, fault, ec2,
// expect, …) and, optionally, name and node:
//
//   - name: twelve pods
//     node: node-2
//     addPods: {count: 12, parallel: 4}
type Step struct {
	// Name labels the step in reports (default: its kind and number).
	Name string
	// Node is the node the step acts on (default: the first node).
	Node string
	// Kind is the action's YAML key; Action is its value.
	Kind   string
	Action Action
}

// Action is one kind of step: it does its one thing to the run's lab.
type Action interface {
	// apply performs the action on node n (the step's node).
	apply(ctx context.Context, x *run, n *lab.Node) error
	// String describes the action in one line, for reports.
	String() string
}

// validator is an action that checks itself when a scenario loads.
type validator interface {
	validate(s *Scenario) error
}

// kinds maps each action's YAML key to a new value of its type.
var kinds = map[string]func() Action{
	"addPods":      func() Action { return &AddPods{} },
	"delPods":      func() Action { return &DelPods{} },
	"fault":        func() Action { return new(FaultRules) },
	"clearFaults":  func() Action { return new(ClearFaults) },
	"imds":         func() Action { return &IMDSFault{} },
	"restartIpamd": func() Action { return new(RestartIpamd) },
	"kill":         func() Action { return &Kill{} },
	"checkpoint":   func() Action { return &Checkpoint{} },
	"sleep":        func() Action { return new(Sleep) },
	"leakENIs":     func() Action { return &LeakENIs{} },
	"ec2":          func() Action { return &EC2Call{} },
	"peer":         func() Action { return &Peer{} },
	"subnetLayout": func() Action { return &SubnetLayout{} },
	"set":          func() Action { return new(Set) },
	"apply":        func() Action { return new(Apply) },
	"kubectl":      func() Action { return new(Kubectl) },
	"expect":       func() Action { return &Expect{} },
}

// Kinds lists the action keys a step may use, sorted.
func Kinds() []string { return slices.Sorted(maps.Keys(kinds)) }

// UnmarshalYAML reads a step: name, node and exactly one action key, each
// action decoded strictly (a misspelt field is an error naming it).
func (s *Step) UnmarshalYAML(v *yaml.Node) error {
	if v.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: a step is a mapping with one action (%s)", v.Line, strings.Join(Kinds(), ", "))
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		switch k.Value {
		case "name":
			if err := val.Decode(&s.Name); err != nil {
				return fmt.Errorf("line %d: name: %w", val.Line, err)
			}
			continue
		case "node":
			if err := val.Decode(&s.Node); err != nil {
				return fmt.Errorf("line %d: node: %w", val.Line, err)
			}
			continue
		}
		mk, ok := kinds[k.Value]
		if !ok {
			return fmt.Errorf("line %d: unknown step key %q (name, node, or one action: %s)", k.Line, k.Value, strings.Join(Kinds(), ", "))
		}
		if s.Action != nil {
			return fmt.Errorf("line %d: one action per step: %s and %s (make them two steps)", k.Line, s.Kind, k.Value)
		}
		a := mk()
		if err := decodeStrict(val, a); err != nil {
			return fmt.Errorf("line %d: %s: %w", val.Line, k.Value, err)
		}
		s.Kind, s.Action = k.Value, a
	}
	if s.Action == nil {
		return fmt.Errorf("line %d: step %q has no action (one of %s)", v.Line, s.Name, strings.Join(Kinds(), ", "))
	}
	return nil
}

// MarshalYAML writes a step back as name, node and its action.
func (s Step) MarshalYAML() (any, error) {
	m := yaml.Node{Kind: yaml.MappingNode}
	add := func(k string, v any) error {
		var val yaml.Node
		if err := val.Encode(v); err != nil {
			return err
		}
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: k}, &val)
		return nil
	}
	if s.Name != "" {
		if err := add("name", s.Name); err != nil {
			return nil, err
		}
	}
	if s.Node != "" {
		if err := add("node", s.Node); err != nil {
			return nil, err
		}
	}
	if err := add(s.Kind, s.Action); err != nil {
		return nil, err
	}
	return &m, nil
}

// decodeStrict decodes a YAML node into v refusing unknown fields (a
// node's own Decode does not).
func decodeStrict(v *yaml.Node, out any) error {
	if u, ok := out.(yaml.Unmarshaler); ok {
		return u.UnmarshalYAML(v)
	}
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	return yamlx.Decode(b, out)
}

// scalarOr decodes a node that is either a scalar (into *scalar) or a
// mapping (strictly, into full).
func scalarOr(v *yaml.Node, scalar any, full any) error {
	if v.Kind == yaml.ScalarNode {
		return v.Decode(scalar)
	}
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	return yamlx.Decode(b, full)
}

// label is how reports name step i.
func (s Step) label(i int) string {
	if s.Name != "" {
		return s.Name
	}
	return fmt.Sprintf("step %d", i+1)
}
