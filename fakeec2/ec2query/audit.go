package ec2query

import (
	"bytes"
	"encoding/xml"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vpclab/vpclab/fakeec2/model"
)

// Record is one API call in CloudTrail's shape.
type Record struct {
	Seq                uint64    `json:"seq"`
	EventVersion       string    `json:"eventVersion"`
	EventTime          time.Time `json:"eventTime"`
	EventSource        string    `json:"eventSource"`
	EventName          string    `json:"eventName"`
	EventType          string    `json:"eventType"`
	AWSRegion          string    `json:"awsRegion"`
	SourceIPAddress    string    `json:"sourceIPAddress"`
	UserAgent          string    `json:"userAgent"`
	RequestParameters  any       `json:"requestParameters"`
	ResponseElements   any       `json:"responseElements"`
	ErrorCode          string    `json:"errorCode,omitempty"`
	ErrorMessage       string    `json:"errorMessage,omitempty"`
	RequestID          string    `json:"requestID"`
	EventID            string    `json:"eventID"`
	RecipientAccountID string    `json:"recipientAccountId"`
	ReadOnly           bool      `json:"readOnly"`
	// UserIdentity is who made the call.
	UserIdentity Identity `json:"userIdentity"`
	// Throttled marks RequestLimitExceeded answers from the throttler (as
	// opposed to injected faults).
	Throttled bool `json:"throttled,omitempty"`
	// DurationMs is how long the call took, latency faults included.
	DurationMs float64 `json:"durationMs"`
	// VPCLab holds what vpclab knows about the call beyond CloudTrail's
	// fields: when its changes became visible in instance metadata, if late.
	// Filled in when records are read through the control API.
	VPCLab *Note `json:"vpclab,omitempty"`
}

// Note is vpclab's addition to a record.
type Note struct {
	// IMDSVisibleAt is when the last instance whose metadata shows the
	// call's changes saw them (only for calls shown late).
	IMDSVisibleAt time.Time `json:"imdsVisibleAt"`
	// IMDSLag is how long after the change that was.
	IMDSLag model.Duration `json:"imdsLag"`
	// IMDSInstances are the instances whose metadata showed it late.
	IMDSInstances []string `json:"imdsInstances"`
	// IMDSFaults are the fault rules (imdsLag) that added to the delay.
	IMDSFaults []string `json:"imdsFaults,omitempty"`
}

// Start is when the call arrived.
func (r Record) Start() time.Time {
	return r.EventTime.Add(-time.Duration(r.DurationMs * float64(time.Millisecond)))
}

// Param returns a top-level request parameter (CloudTrail spelling, e.g.
// networkInterfaceId), "" when absent.
func (r Record) Param(name string) string {
	m, _ := r.RequestParameters.(map[string]any)
	s, _ := m[name].(string)
	return s
}

// EventFilter selects audit records.
type EventFilter struct {
	Action     string // exact event name; empty for all
	ErrorsOnly bool
	ErrorCode  string
	SinceSeq   uint64 // records with Seq > SinceSeq
	Limit      int    // most recent N; 0 for all
}

// Audit keeps the most recent records in memory.
type Audit struct {
	mu      sync.Mutex
	cond    *sync.Cond
	records []Record
	cap     int
	seq     uint64
}

// NewAudit returns a log that keeps at most capacity records (default 100000).
func NewAudit(capacity int) *Audit {
	if capacity <= 0 {
		capacity = 100000
	}
	a := &Audit{cap: capacity}
	a.cond = sync.NewCond(&a.mu)
	return a
}

func (a *Audit) add(r Record) Record {
	a.mu.Lock()
	a.seq++
	r.Seq = a.seq
	if len(a.records) >= a.cap {
		a.records = append(a.records[:0], a.records[len(a.records)-a.cap+1:]...)
	}
	a.records = append(a.records, r)
	a.cond.Broadcast()
	a.mu.Unlock()
	return r
}

// Events returns matching records, oldest first.
func (a *Audit) Events(f EventFilter) []Record {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.match(f)
}

func (a *Audit) match(f EventFilter) []Record {
	var out []Record
	for _, r := range a.records {
		if r.Seq <= f.SinceSeq || (f.Action != "" && r.EventName != f.Action) ||
			(f.ErrorsOnly && r.ErrorCode == "") || (f.ErrorCode != "" && r.ErrorCode != f.ErrorCode) {
			continue
		}
		out = append(out, r)
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out
}

// Wait blocks until a record newer than since exists or the timeout passes,
// then returns the matching records (for following the log).
func (a *Audit) Wait(f EventFilter, timeout time.Duration) []Record {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() { a.mu.Lock(); a.cond.Broadcast(); a.mu.Unlock() })
	defer t.Stop()
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.seq <= f.SinceSeq && time.Now().Before(deadline) {
		a.cond.Wait()
	}
	return a.match(f)
}

// Count returns how many records match.
func (a *Audit) Count(f EventFilter) int { return len(a.Events(f)) }

// requestParameters turns flattened Query parameters into nested JSON
// (Filter.1.Name -> {"filter":[{"name":…}]}), minus Action and Version.
func requestParameters(form url.Values) any {
	root := map[string]any{}
	keys := make([]string, 0, len(form))
	for k := range form {
		if k != "Action" && k != "Version" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts := strings.Split(k, ".")
		cur := root
		for i, p := range parts {
			name := lowerFirst(p)
			if i == len(parts)-1 {
				cur[name] = form.Get(k)
				break
			}
			next, ok := cur[name].(map[string]any)
			if !ok {
				next = map[string]any{}
				cur[name] = next
			}
			cur = next
		}
	}
	return listify(root)
}

// listify turns maps whose keys are all positive integers into lists.
func listify(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	numeric := len(m) > 0
	for k := range m {
		if n, err := strconv.Atoi(k); err != nil || n < 1 {
			numeric = false
		}
	}
	if !numeric {
		for k, x := range m {
			m[k] = listify(x)
		}
		return m
	}
	idx := make([]int, 0, len(m))
	for k := range m {
		n, _ := strconv.Atoi(k)
		idx = append(idx, n)
	}
	sort.Ints(idx)
	out := make([]any, len(idx))
	for i, n := range idx {
		out[i] = listify(m[strconv.Itoa(n)])
	}
	return out
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

// xmlToJSON converts an EC2 XML response into nested JSON values: elements
// become objects, "item" children become lists, text becomes strings.
func xmlToJSON(body []byte) any {
	d := xml.NewDecoder(bytes.NewReader(body))
	type frame struct {
		name  string
		obj   map[string]any
		items []any
		text  strings.Builder
		isSet bool
	}
	var stack []*frame
	var root any
	for {
		tok, err := d.Token()
		if err != nil { // io.EOF or a decode error ends the walk
			break
		}
		switch t := tok.(type) {
		case xml.StartElement:
			stack = append(stack, &frame{name: t.Name.Local, obj: map[string]any{}})
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].text.Write(t)
			}
		case xml.EndElement:
			f := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			var val any
			switch {
			case f.isSet:
				val = f.items
			case len(f.obj) > 0:
				val = f.obj
			default:
				val = strings.TrimSpace(f.text.String())
			}
			if len(stack) == 0 {
				root = val
				continue
			}
			p := stack[len(stack)-1]
			if f.name == "item" {
				p.isSet = true
				p.items = append(p.items, val)
			} else if f.name != "requestId" {
				p.obj[f.name] = val
			}
		}
	}
	return root
}
