package ec2query

// A Describe action is a table row (describe[T]) fed to one pipeline:
// select by id, filter, paginate, render the set.

import (
	"encoding/base64"
	"encoding/xml"
	"errors"
	"strconv"
	"strings"

	"github.com/vpclab/vpclab/fakeec2/model"
)

// paginate applies MaxResults/NextToken to a sorted list.
func paginate[T any](items []T, q *qnode, lo, hi int) ([]T, string, error) {
	if !q.present("MaxResults") && !q.present("NextToken") {
		return items, "", nil
	}
	n := len(items)
	if q.present("MaxResults") {
		v, err := q.integer("MaxResults")
		if err != nil {
			return nil, "", err
		}
		if v < lo || v > hi {
			return nil, "", model.ErrInvalid("Value ( %d ) for parameter maxResults is invalid. Expecting a value between %d and %d.", v, lo, hi)
		}
		n = v
	}
	off := 0
	if tok := q.str("NextToken"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		o, err2 := strconv.Atoi(strings.TrimPrefix(string(b), "offset:"))
		if err != nil || err2 != nil || !strings.HasPrefix(string(b), "offset:") || o < 0 || o > len(items) {
			return nil, "", model.Errorf("InvalidPaginationToken", "The pagination token '%s' is invalid.", tok)
		}
		off = o
	}
	end := min(off+n, len(items))
	next := ""
	if end < len(items) {
		next = base64.RawURLEncoding.EncodeToString([]byte("offset:" + strconv.Itoa(end)))
	}
	return items[off:end], next, nil
}

func noIDsWithPaging(q *qnode, idParam string) error {
	if q.child(idParam) != nil && q.present("MaxResults") {
		return model.ErrCombination("The parameter %s cannot be used with the parameter maxResults", idParam)
	}
	return nil
}

// selectByID keeps the items named in ids (all when ids is empty), failing
// on the first unknown id.
func selectByID[T any](items []T, id func(T) string, ids []string, kind model.IDKind, notFound func(string) *model.APIError) ([]T, error) {
	if len(ids) == 0 {
		return items, nil
	}
	byID := make(map[string]T, len(items))
	for _, it := range items {
		byID[id(it)] = it
	}
	out := make([]T, 0, len(ids))
	seen := map[string]bool{}
	for _, x := range ids {
		if err := model.CheckID(kind, x); err != nil {
			return nil, err
		}
		it, ok := byID[x]
		if !ok {
			return nil, notFound(x)
		}
		if !seen[x] {
			seen[x] = true
			out = append(out, it)
		}
	}
	return out, nil
}

func filterItems[T any](s *Server, items []T, fs filterSet[T], q *qnode) ([]T, error) {
	filters, err := q.filters()
	if err != nil {
		return nil, err
	}
	pred, err := fs.compile(s, filters)
	if err != nil {
		return nil, err
	}
	out := items[:0:0]
	for _, it := range items {
		if pred(it) {
			out = append(out, it)
		}
	}
	return out, nil
}

func ptrs[T any](xs []T) []*T {
	out := make([]*T, len(xs))
	for i := range xs {
		out[i] = &xs[i]
	}
	return out
}

// describe is one Describe action: where its resources come from, how ids
// select them, its filters, page bounds and XML.
type describe[T any] struct {
	// list returns the candidates (it may read special parameters).
	list func(s *Server, q *qnode) ([]*T, error)
	// idParam names the id list ("VpcId"); ids are checked against kind
	// and unknown ones answered with notFound. Empty: no id selection.
	idParam  string
	id       func(*T) string
	kind     model.IDKind
	notFound func(string) *model.APIError
	// noIDsWithPaging refuses ids together with MaxResults.
	noIDsWithPaging bool
	filters         filterSet[*T]
	// set is the response's list element; minMax and maxMax bound MaxResults.
	set            string
	minMax, maxMax int
	// render turns a page into the set's items.
	render func(s *Server, page []*T) []any
}

// handle runs the pipeline.
func (d describe[T]) handle(s *Server, q *qnode) (any, error) {
	if d.noIDsWithPaging {
		if err := noIDsWithPaging(q, d.idParam); err != nil {
			return nil, err
		}
	}
	items, err := d.list(s, q)
	if err != nil {
		return nil, err
	}
	if d.idParam != "" {
		ids, err := q.strings(d.idParam)
		if err != nil {
			return nil, err
		}
		if items, err = selectByID(items, d.id, ids, d.kind, d.notFound); err != nil {
			return nil, err
		}
	}
	if items, err = filterItems(s, items, d.filters, q); err != nil {
		return nil, err
	}
	page, next, err := paginate(items, q, d.minMax, d.maxMax)
	if err != nil {
		return nil, err
	}
	return xmlSet{name: d.set, items: d.render(s, page), next: next}, nil
}

// xmlSet renders <name><item>…</item>…</name> and, when there is one,
// <nextToken>.
type xmlSet struct {
	name  string
	items []any
	next  string
}

// MarshalXML writes the set as the children of start.
func (x xmlSet) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	set := xml.StartElement{Name: xml.Name{Local: x.name}}
	err := errors.Join(e.EncodeToken(start), e.EncodeToken(set))
	for _, it := range x.items {
		err = errors.Join(err, e.EncodeElement(it, xml.StartElement{Name: xml.Name{Local: "item"}}))
	}
	err = errors.Join(err, e.EncodeToken(set.End()))
	if x.next != "" {
		err = errors.Join(err, e.EncodeElement(x.next, xml.StartElement{Name: xml.Name{Local: "nextToken"}}))
	}
	return errors.Join(err, e.EncodeToken(start.End()))
}

// renderEach maps each resource of a page to its XML item.
func renderEach[T, X any](f func(s *Server, x *T) X) func(*Server, []*T) []any {
	return func(s *Server, page []*T) []any {
		out := make([]any, len(page))
		for i, x := range page {
			out[i] = f(s, x)
		}
		return out
	}
}

// listed adapts a region lister to describe.list.
func listed[T any](f func(s *Server) []T) func(*Server, *qnode) ([]*T, error) {
	return func(s *Server, _ *qnode) ([]*T, error) { return ptrs(f(s)), nil }
}
