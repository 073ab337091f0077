package ec2query

import (
	"strings"

	"github.com/vpclab/vpclab/fakeec2/model"
)

// fieldFunc extracts the values a filter name matches against.
type fieldFunc[T any] func(T) []string

// filterSet is the filters one Describe action understands: fields, those
// that depend on the server (its account and region), and tags.
type filterSet[T any] struct {
	fields  map[string]fieldFunc[T]
	context func(s *Server) map[string]fieldFunc[T]
	tags    func(T) model.Tags
}

// compile checks filter names and returns a predicate.
func (fs filterSet[T]) compile(s *Server, filters []Filter) (func(T) bool, error) {
	type check struct {
		get    func(T) []string
		values []string
	}
	checks := make([]check, 0, len(filters))
	for _, f := range filters {
		var get func(T) []string
		switch {
		case strings.HasPrefix(f.Name, "tag:"):
			key := f.Name[4:]
			get = func(x T) []string {
				if v, ok := fs.tags(x)[key]; ok {
					return []string{v}
				}
				return nil
			}
		case f.Name == "tag-key":
			get = func(x T) []string { return tagKeys(fs.tags(x)) }
		case f.Name == "tag-value":
			get = func(x T) []string { return tagValues(fs.tags(x)) }
		default:
			fn, ok := fs.fields[f.Name]
			if !ok && fs.context != nil {
				fn, ok = fs.context(s)[f.Name]
			}
			if !ok {
				return nil, model.ErrInvalid("The filter '%s' is invalid", f.Name)
			}
			get = fn
		}
		if len(f.Values) == 0 {
			return nil, model.ErrInvalid("The filter '%s' must have at least one value", f.Name)
		}
		checks = append(checks, check{get, f.Values})
	}
	return func(x T) bool {
		for _, c := range checks {
			if !anyMatch(c.get(x), c.values) {
				return false
			}
		}
		return true
	}, nil
}

func tagKeys(t model.Tags) []string {
	out := make([]string, 0, len(t))
	for k := range t {
		out = append(out, k)
	}
	return out
}

func tagValues(t model.Tags) []string {
	out := make([]string, 0, len(t))
	for _, v := range t {
		out = append(out, v)
	}
	return out
}

func anyMatch(have, patterns []string) bool {
	for _, h := range have {
		for _, p := range patterns {
			if globMatch(p, h) {
				return true
			}
		}
	}
	return false
}

// globMatch matches EC2 filter wildcards: * any run, ? one character, and
// a backslash escapes the next character. Matching is case-sensitive.
func globMatch(pattern, s string) bool {
	if !strings.ContainsAny(pattern, `*?\`) {
		return pattern == s
	}
	p, str := []rune(pattern), []rune(s)
	var pi, si, starP, starS = 0, 0, -1, 0
	for si < len(str) {
		if pi < len(p) {
			switch {
			case p[pi] == '*':
				starP, starS = pi, si
				pi++
				continue
			case p[pi] == '?':
				pi++
				si++
				continue
			case p[pi] == '\\' && pi+1 < len(p):
				if p[pi+1] == str[si] {
					pi += 2
					si++
					continue
				}
			case p[pi] == str[si]:
				pi++
				si++
				continue
			}
		}
		if starP < 0 {
			return false
		}
		starS++
		si, pi = starS, starP+1
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
