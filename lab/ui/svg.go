package ui

import (
	"fmt"
	"html"
	"html/template"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/lab"
)

// The timeline's geometry (SVG user units).
const (
	svgWidth   = 1100
	labelWidth = 130
	rightPad   = 16
	topPad     = 34
	laneHeight = 78
	laneGap    = 14
	ec2Height  = 96
	axisHeight = 26
)

// palette colours the EC2 actions called most (the rest are grey).
var palette = []string{"#3182ce", "#38a169", "#805ad5", "#d69e2e", "#319795", "#d53f8c", "#718096"}

// Capped lists keep an SVG of a long run light.
const (
	maxPodMarks   = 3000
	maxErrorMarks = 1500
)

// span is a run's time range.
type span struct{ t0, t1 time.Time }

func (s span) x(t time.Time) float64 {
	w := float64(svgWidth - labelWidth - rightPad)
	f := float64(t.Sub(s.t0)) / float64(s.t1.Sub(s.t0))
	return float64(labelWidth) + math.Max(0, math.Min(1, f))*w
}

// runSpan is from the first thing recorded to the snapshot (10 s at least).
func runSpan(r Run) span {
	s := r.Snap
	t0, t1 := s.Timeline.Start, s.Taken
	if t1.IsZero() {
		t1 = time.Now()
	}
	for _, e := range s.Events {
		if st := e.Start(); !st.IsZero() && st.Before(t0) {
			t0 = st
		}
	}
	for _, st := range r.Steps {
		if !st.Start.IsZero() && st.Start.Before(t0) {
			t0 = st.Start
		}
	}
	if t0.IsZero() || !t0.Before(t1) {
		t0 = t1.Add(-10 * time.Second)
	}
	if t1.Sub(t0) < 3*time.Second {
		t1 = t0.Add(3 * time.Second)
	}
	return span{t0, t1.Add(t1.Sub(t0) / 50)}
}

// svgBuilder accumulates SVG markup.
type svgBuilder struct{ strings.Builder }

func (b *svgBuilder) f(format string, a ...any) { fmt.Fprintf(&b.Builder, format, a...) }

func esc(s string) string { return html.EscapeString(s) }

// timelineSVG draws a run: a lane per node (pool total and assigned,
// pod ADD/DEL marks, ipamd restarts), a lane of EC2 calls per bucket by
// action with the failed and throttled answers marked (each a link to its
// record below), fault windows shaded across the lanes, and, in reports,
// the ends of the steps.
func timelineSVG(r Run, runID string) template.HTML {
	sp := runSpan(r)
	nodes := nodeNames(r)
	height := topPad + len(nodes)*(laneHeight+laneGap) + ec2Height + axisHeight
	var b svgBuilder
	b.f(`<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="timeline">`, svgWidth, height, svgWidth, height)
	b.f(`<rect x="0" y="0" width="%d" height="%d" fill="#fff"/>`, svgWidth, height)
	legend(&b)
	bottom := float64(height - axisHeight)
	// Fault windows first, under everything.
	for _, fw := range r.Snap.Timeline.Faults {
		to := fw.To
		if to.IsZero() {
			to = sp.t1
		}
		x0, x1 := sp.x(fw.From), sp.x(to)
		b.f(`<rect class="fault" data-fault="%s" x="%.1f" y="%d" width="%.1f" height="%.1f" fill="#dd6b20" fill-opacity="0.13"><title>fault %s: %s %s (%d hits) %s – %s</title></rect>`,
			esc(fw.ID), x0, topPad-4, math.Max(1.5, x1-x0), bottom-float64(topPad)+4, esc(fw.ID), esc(fw.Action), esc(fw.Code), fw.Hits, rel(sp, fw.From), rel(sp, to))
	}
	y := topPad
	for _, n := range nodes {
		nodeLane(&b, r, sp, n, y)
		y += laneHeight + laneGap
	}
	ec2Lane(&b, r, sp, y, runID)
	for _, st := range r.Steps {
		if st.End.IsZero() {
			continue
		}
		x := sp.x(st.End)
		colour := "#2f855a"
		if !st.Passed {
			colour = "#c53030"
		}
		b.f(`<g class="step-end" data-step="%d"><line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1" stroke-dasharray="2 3"/><text x="%.1f" y="%d" font-size="10" fill="%s" text-anchor="middle">%d</text><title>step %d: %s</title></g>`,
			st.N, x, topPad-6, x, bottom, colour, x, topPad-8, colour, st.N, st.N, esc(st.Name))
	}
	axis(&b, sp, bottom)
	b.f(`</svg>`)
	return template.HTML(b.String())
}

func legend(b *svgBuilder) {
	items := []struct{ colour, label string }{
		{"#2b6cb0", "pool: total IPs"}, {"#2f855a", "assigned"}, {"#38a169", "pod ADD"}, {"#a0aec0", "pod DEL"},
		{"#c53030", "failed ADD / EC2 error"}, {"#dd6b20", "throttled"}, {"#e53e3e", "ipamd restart"},
	}
	x := labelWidth
	for _, it := range items {
		b.f(`<rect x="%d" y="8" width="10" height="10" fill="%s"/><text x="%d" y="17" font-size="11" fill="#2d3748">%s</text>`, x, it.colour, x+14, esc(it.label))
		x += 22 + 7*len(it.label)
	}
	b.f(`<rect x="%d" y="8" width="10" height="10" fill="#dd6b20" fill-opacity="0.25"/><text x="%d" y="17" font-size="11" fill="#2d3748">fault rule active</text>`, x, x+14)
}

// nodeNames are the run's nodes: those in its status, then any only the
// timeline knows.
func nodeNames(r Run) []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range r.Snap.Status.Nodes {
		if !seen[n.Name] {
			seen[n.Name] = true
			out = append(out, n.Name)
		}
	}
	var more []string
	for _, p := range r.Snap.Timeline.Pools {
		if !seen[p.Node] {
			seen[p.Node] = true
			more = append(more, p.Node)
		}
	}
	sort.Strings(more)
	return append(out, more...)
}

func nodeLane(b *svgBuilder, r Run, sp span, node string, top int) {
	var samples []lab.PoolSample
	maxV := 1
	for _, p := range r.Snap.Timeline.Pools {
		if p.Node == node {
			samples = append(samples, p)
			maxV = max(maxV, p.TotalIPs, p.AssignedIPs)
		}
	}
	yv := func(v int) float64 {
		return float64(top+laneHeight-6) - float64(v)/float64(maxV)*float64(laneHeight-18)
	}
	b.f(`<g class="lane node" data-node="%s">`, esc(node))
	b.f(`<rect x="%d" y="%d" width="%d" height="%d" fill="#f7fafc" stroke="#e2e8f0"/>`, labelWidth, top, svgWidth-labelWidth-rightPad, laneHeight)
	now := ""
	if len(samples) > 0 {
		last := samples[len(samples)-1]
		now = fmt.Sprintf("%d / %d IPs", last.AssignedIPs, last.TotalIPs)
		if last.Prefixes > 0 {
			now += fmt.Sprintf(", %d /28", last.Prefixes)
		}
	}
	b.f(`<text x="6" y="%d" font-size="12" font-weight="bold" fill="#1a202c">%s</text><text x="6" y="%d" font-size="10" fill="#4a5568">%s</text><text x="6" y="%d" font-size="10" fill="#718096">max %d</text>`,
		top+16, esc(node), top+30, esc(now), top+44, maxV)
	// Steps: a value holds until the next sample.
	line := func(class, colour string, v func(lab.PoolSample) int) {
		var pts []string
		prev := -1.0
		for _, s := range samples {
			if s.Down {
				continue
			}
			x, y := sp.x(s.T), yv(v(s))
			if prev >= 0 {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, prev))
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
			prev = y
		}
		if len(pts) > 0 {
			b.f(`<polyline class="%s" points="%s" fill="none" stroke="%s" stroke-width="1.6"/>`, class, strings.Join(pts, " "), colour)
		}
	}
	line("pool-total", "#2b6cb0", func(s lab.PoolSample) int { return s.TotalIPs })
	line("pool-assigned", "#2f855a", func(s lab.PoolSample) int { return s.AssignedIPs })
	for _, s := range samples {
		if s.Down {
			b.f(`<rect class="ipamd-down" x="%.1f" y="%d" width="2" height="4" fill="#a0aec0"><title>metrics did not answer</title></rect>`, sp.x(s.T), top+laneHeight-4)
		}
	}
	n := 0
	for _, p := range r.Snap.Timeline.Pods {
		if p.Node != node {
			continue
		}
		if n++; n > maxPodMarks {
			break
		}
		x := sp.x(p.T)
		switch {
		case p.Err != "":
			b.f(`<g class="pod-op failed" data-op="%s"><path d="M%.1f %d l4 4 m0 -4 l-4 4" stroke="#c53030" stroke-width="1.4" transform="translate(-2 0)"/><title>%s %s failed after %.0f ms: %s</title></g>`,
				p.Op, x, top+laneHeight-12, p.Op, esc(p.Pod), p.LatencyMs, esc(p.Err))
		case p.Op == "ADD":
			b.f(`<line class="pod-op add" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#38a169" stroke-width="1.2"><title>ADD %s %.0f ms</title></line>`, x, top+laneHeight-10, x, top+laneHeight-2, esc(p.Pod), p.LatencyMs)
		default:
			b.f(`<line class="pod-op del" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#a0aec0" stroke-width="1.2"><title>DEL %s %.0f ms</title></line>`, x, top+2, x, top+8, esc(p.Pod), p.LatencyMs)
		}
	}
	for _, m := range r.Snap.Timeline.Marks {
		if m.Node != node {
			continue
		}
		x := sp.x(m.T)
		b.f(`<line class="mark" data-kind="%s" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e53e3e" stroke-width="1.5" stroke-dasharray="4 2"><title>%s %s %s</title></line>`,
			esc(m.Kind), x, top, x, top+laneHeight, esc(m.Kind), rel(sp, m.T), esc(m.Detail))
	}
	b.f(`</g>`)
}

// bucketFor picks a bucket width giving at most ~200 buckets.
func bucketFor(d time.Duration) time.Duration {
	for _, s := range []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour} {
		if d/s <= 200 {
			return s
		}
	}
	return 4 * time.Hour
}

func ec2Lane(b *svgBuilder, r Run, sp span, top int, runID string) {
	evs := r.Snap.Events
	counts := map[string]int{}
	for _, e := range evs {
		counts[e.EventName]++
	}
	actions := make([]string, 0, len(counts))
	for a := range counts {
		actions = append(actions, a)
	}
	sort.Slice(actions, func(i, j int) bool {
		if counts[actions[i]] != counts[actions[j]] {
			return counts[actions[i]] > counts[actions[j]]
		}
		return actions[i] < actions[j]
	})
	colour := map[string]string{}
	for i, a := range actions {
		if i < len(palette)-1 {
			colour[a] = palette[i]
		} else {
			colour[a] = palette[len(palette)-1]
		}
	}
	bucket := bucketFor(sp.t1.Sub(sp.t0))
	type key struct {
		i      int
		action string
	}
	per := map[key]int{}
	totals := map[int]int{}
	maxB := 1
	for _, e := range evs {
		i := int(e.EventTime.Sub(sp.t0) / bucket)
		per[key{i, e.EventName}]++
		totals[i]++
		maxB = max(maxB, totals[i])
	}
	b.f(`<g class="lane ec2">`)
	b.f(`<rect x="%d" y="%d" width="%d" height="%d" fill="#fffaf0" stroke="#e2e8f0"/>`, labelWidth, top, svgWidth-labelWidth-rightPad, ec2Height)
	errs, throttled := 0, 0
	for _, e := range evs {
		if e.ErrorCode != "" {
			errs++
			if e.ErrorCode == "RequestLimitExceeded" {
				throttled++
			}
		}
	}
	b.f(`<text x="6" y="%d" font-size="12" font-weight="bold" fill="#1a202c">EC2 calls</text><text x="6" y="%d" font-size="10" fill="#4a5568">%d calls, per %s</text><text x="6" y="%d" font-size="10" fill="#c53030">%d errors, %d throttled</text>`,
		top+16, top+30, len(evs), bucket, top+44, errs, throttled)
	barTop, barH := float64(top+22), float64(ec2Height-36)
	w := math.Max(1, sp.x(sp.t0.Add(bucket))-sp.x(sp.t0)-0.5)
	for _, i := range slices.Sorted(maps.Keys(totals)) {
		x := sp.x(sp.t0.Add(time.Duration(i) * bucket))
		y := barTop + barH
		for _, a := range actions {
			c := per[key{i, a}]
			if c == 0 {
				continue
			}
			h := float64(c) / float64(maxB) * barH
			y -= h
			b.f(`<rect class="calls" data-action="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s: %d calls at %s</title></rect>`,
				esc(a), x, y, w, h, colour[a], esc(a), c, rel(sp, sp.t0.Add(time.Duration(i)*bucket)))
		}
	}
	n := 0
	for _, e := range evs {
		if e.ErrorCode == "" {
			continue
		}
		if n++; n > maxErrorMarks {
			break
		}
		c, class := "#c53030", "call-error"
		if e.ErrorCode == "RequestLimitExceeded" {
			c, class = "#dd6b20", "call-error throttled"
		}
		b.f(`<a href="#%s" class="%s" data-code="%s" data-action="%s"><circle cx="%.1f" cy="%d" r="3.2" fill="%s"/><title>%s %s at %s by %s: %s</title></a>`,
			eventAnchor(runID, e), class, esc(e.ErrorCode), esc(e.EventName), sp.x(e.EventTime), top+12, c, esc(e.EventName), esc(e.ErrorCode), rel(sp, e.EventTime), esc(caller(e)), esc(e.ErrorMessage))
	}
	// the actions' colours
	lx := labelWidth + 4
	for i, a := range actions {
		if i >= len(palette)-1 {
			break
		}
		b.f(`<text x="%d" y="%d" font-size="9" fill="%s">%s</text>`, lx, top+ec2Height-3, colour[a], esc(a))
		lx += 6*len(a) + 12
	}
	b.f(`</g>`)
}

// axis draws time ticks relative to the run's start.
func axis(b *svgBuilder, sp span, y float64) {
	d := sp.t1.Sub(sp.t0)
	step := time.Second
	for _, s := range []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 30 * time.Minute, time.Hour} {
		step = s
		if d/s <= 12 {
			break
		}
	}
	b.f(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#a0aec0"/>`, labelWidth, y+2, svgWidth-rightPad, y+2)
	for t := time.Duration(0); t <= d; t += step {
		x := sp.x(sp.t0.Add(t))
		b.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#a0aec0"/><text x="%.1f" y="%.1f" font-size="10" fill="#4a5568" text-anchor="middle">+%s</text>`,
			x, y+2, x, y+6, x, y+18, shortDur(t))
	}
}

func shortDur(d time.Duration) string {
	if d%time.Minute == 0 && d >= time.Minute {
		return fmt.Sprintf("%dm", int(d/time.Minute))
	}
	return d.Round(time.Second).String()
}

// rel is t relative to the run's start.
func rel(sp span, t time.Time) string {
	return "+" + t.Sub(sp.t0).Round(10*time.Millisecond).String()
}

// caller names who made a call: the node's instance, the IAM user, or
// the address.
func caller(e ec2query.Record) string {
	switch {
	case e.UserIdentity.InstanceID != "":
		return e.UserIdentity.InstanceID
	case e.UserIdentity.UserName != "":
		return e.UserIdentity.UserName
	}
	return e.SourceIPAddress
}

// eventAnchor is the id of a record's row.
func eventAnchor(runID string, e ec2query.Record) string {
	return fmt.Sprintf("%s-ev-%d", runID, e.Seq)
}
