// Package ui renders a lab for people: a page with the lab's topology
// (VPC → subnets → instances → ENIs → addresses and pods), a timeline
// (each node's pool, pod ADDs and DELs, ipamd restarts, EC2 calls by
// action with throttled and failed answers, fault windows) and the EC2
// calls' CloudTrail-shaped records the timeline links to. The same page
// serves a running lab live (Server, `vpclab ui`) and, written once with
// a scenario's steps, is a self-contained report (`vpclab scenario run
// --report`). Everything is drawn on the server (HTML and SVG, no
// external asset), so the static parts need no JavaScript; a live page's
// small script swaps in a fresh rendering every two seconds.
package ui

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/lab"
)

// Page is one page: a live lab (one run) or a report (a run per
// implementation, stacked).
type Page struct {
	Title    string
	Subtitle string
	Runs     []Run
	// Live makes the page refresh itself: its script fetches the
	// fragment every 2 s (without JavaScript it reloads every 5 s).
	Live bool
}

// Run is one lab run: its snapshot and, for scenario reports, its steps,
// verdict and failure dump.
type Run struct {
	// Label names the run (the implementation in a report).
	Label    string
	Snap     lab.Snapshot
	Steps    []Step
	Verdict  string // "PASS", "FAIL" or "" (a live lab)
	Failures []string
	Dump     string
}

// Step is one scenario step as it ran.
type Step struct {
	N          int
	Name       string
	Start, End time.Time
	Passed     bool
	Checks     []Check
}

// Check is one expectation with its measured value.
type Check struct {
	What, Want, Got string
	Pass            bool
}

//go:embed page.html
var pageHTML string

var tmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"timeline": timelineSVG,
	"topology": topology,
	"events":   events,
	"pct":      func(a, b int) int { return a * 100 / max(b, 1) },
	"sub":      func(a, b int) int { return a - b },
	"join":     func(s []string) string { return strings.Join(s, ", ") },
	"runID":    func(i int) string { return fmt.Sprintf("run%d", i+1) },
	"when":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
}).Parse(pageHTML))

// Write renders the whole page.
func Write(w io.Writer, p Page) error {
	var b bytes.Buffer
	if err := tmpl.ExecuteTemplate(&b, "page", p); err != nil {
		return fmt.Errorf("ui: %w", err)
	}
	_, err := b.WriteTo(w)
	return err
}

// WriteFragment renders what a live page swaps in: its runs.
func WriteFragment(w io.Writer, p Page) error {
	var b bytes.Buffer
	if err := tmpl.ExecuteTemplate(&b, "runs", p); err != nil {
		return fmt.Errorf("ui: %w", err)
	}
	_, err := b.WriteTo(w)
	return err
}

// NodeView is a node as the topology shows it.
type NodeView struct {
	lab.NodeStatus
	ENIs  []ENIView
	Other []lab.PodStatus // pods on none of its ENIs (host network)
}

// ENIView is an ENI with the pods whose addresses it holds.
type ENIView struct {
	lab.ENIStatus
	SubnetName string
	Pods       []lab.PodStatus
	Branches   []BranchView
}

// BranchView is a branch ENI with its pod.
type BranchView struct {
	lab.BranchStatus
	Pods []lab.PodStatus
}

// TopologyView is the VPC as the topology shows it.
type TopologyView struct {
	Status  lab.Status
	Subnets []lab.SubnetStatus
	Nodes   []NodeView
}

// topology puts each pod under the ENI (or branch ENI) that holds its
// address.
func topology(s lab.Status) TopologyView {
	names := map[string]string{}
	for _, sn := range s.Subnets {
		names[sn.ID] = sn.Name
	}
	v := TopologyView{Status: s, Subnets: s.Subnets}
	for _, n := range s.Nodes {
		nv := NodeView{NodeStatus: n}
		for _, e := range n.ENIs {
			ev := ENIView{ENIStatus: e, SubnetName: names[e.SubnetID]}
			for _, br := range e.Branches {
				ev.Branches = append(ev.Branches, BranchView{BranchStatus: br})
			}
			nv.ENIs = append(nv.ENIs, ev)
		}
		for _, p := range n.Pods {
			if !placePod(&nv, p) {
				nv.Other = append(nv.Other, p)
			}
		}
		v.Nodes = append(v.Nodes, nv)
	}
	return v
}

func placePod(nv *NodeView, p lab.PodStatus) bool {
	ip, err := netip.ParseAddr(p.IP)
	if err != nil {
		return false
	}
	for i := range nv.ENIs {
		e := &nv.ENIs[i]
		for j := range e.Branches {
			if e.Branches[j].IP == p.IP {
				e.Branches[j].Pods = append(e.Branches[j].Pods, p)
				return true
			}
		}
		if slices.Contains(e.Secondary, p.IP) {
			e.Pods = append(e.Pods, p)
			return true
		}
		for _, pf := range e.Prefixes {
			if q, err := netip.ParsePrefix(pf); err == nil && q.Contains(ip) {
				e.Pods = append(e.Pods, p)
				return true
			}
		}
	}
	return false
}

// EventView is one record as the event list shows it.
type EventView struct {
	Anchor, At, Caller, Action, Code, Class string
	Ms                                      float64
	JSON                                    string
}

// EventsView is a run's event list: every error answer and the most
// recent calls.
type EventsView struct {
	Total, Errors, Throttled, Shown int
	Rows                            []EventView
}

// recentCalls is how many of the latest calls the list shows besides
// every error.
const recentCalls = 150

func events(r Run, runID string) EventsView {
	sp := runSpan(r)
	evs := r.Snap.Events
	v := EventsView{Total: len(evs)}
	var pick []ec2query.Record
	for i, e := range evs {
		if e.ErrorCode != "" {
			v.Errors++
			if e.ErrorCode == "RequestLimitExceeded" {
				v.Throttled++
			}
		}
		if e.ErrorCode != "" && v.Errors <= maxErrorMarks || i >= len(evs)-recentCalls {
			pick = append(pick, e)
		}
	}
	sort.SliceStable(pick, func(i, j int) bool { return pick[i].Seq < pick[j].Seq })
	for _, e := range pick {
		js, _ := json.MarshalIndent(e, "", "  ")
		class := ""
		if e.ErrorCode == "RequestLimitExceeded" {
			class = "throttled"
		} else if e.ErrorCode != "" {
			class = "error"
		}
		v.Rows = append(v.Rows, EventView{Anchor: eventAnchor(runID, e), At: rel(sp, e.EventTime), Caller: caller(e), Action: e.EventName,
			Code: e.ErrorCode, Class: class, Ms: e.DurationMs, JSON: string(js)})
	}
	v.Shown = len(v.Rows)
	return v
}
