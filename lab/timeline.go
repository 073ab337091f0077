package lab

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
)

// Timeline is what a lab records over time for its UI and reports: every
// node's pool sampled at a fixed interval, pod adds and deletes with their
// latency and failures, ipamd exits and restarts, and the windows in which
// fault rules were active. EC2 calls come from the audit log (Events).
type Timeline struct {
	Start time.Time `json:"start"`
	// Interval is the pool sampling interval.
	Interval time.Duration `json:"interval"`
	Pools    []PoolSample  `json:"pools"`
	Pods     []PodOp       `json:"pods"`
	Marks    []Mark        `json:"marks"`
	Faults   []FaultWindow `json:"faults"`
}

// PoolSample is one node's pool at one moment, from its ipamd's metrics
// (both CNIs export the same series).
type PoolSample struct {
	T           time.Time `json:"t"`
	Node        string    `json:"node"`
	TotalIPs    int       `json:"totalIPs"`
	AssignedIPs int       `json:"assignedIPs"`
	Prefixes    int       `json:"prefixes"`
	// Down: the metrics did not answer (ipamd down or starting).
	Down bool `json:"down,omitempty"`
}

// PodOp is one pod ADD or DEL through the node's CNI.
type PodOp struct {
	T         time.Time `json:"t"` // when it ended
	Node      string    `json:"node"`
	Pod       string    `json:"pod"` // namespace/name
	Op        string    `json:"op"`  // ADD or DEL
	LatencyMs float64   `json:"latencyMs"`
	Err       string    `json:"err,omitempty"`
}

// Mark is a moment worth marking on a node's lane (ipamd exited,
// restarted).
type Mark struct {
	T      time.Time `json:"t"`
	Node   string    `json:"node"`
	Kind   string    `json:"kind"`
	Detail string    `json:"detail,omitempty"`
}

// FaultWindow is when a fault rule was in force: from its start (added +
// after) to its end (for elapsed, count used up, or removed; zero while
// still active).
type FaultWindow struct {
	ID     string    `json:"id"`
	Action string    `json:"action"`
	Code   string    `json:"code,omitempty"`
	From   time.Time `json:"from"`
	To     time.Time `json:"to,omitzero"`
	Hits   int       `json:"hits"`
}

// timelineInterval is how often the lab samples its nodes' pools.
const timelineInterval = 500 * time.Millisecond

// timelineCap bounds each of a timeline's lists (the oldest go first).
const timelineCap = 50000

// recorder keeps a lab's timeline.
type recorder struct {
	mu     sync.Mutex
	tl     Timeline
	faults map[string]int // rule id -> index in tl.Faults
}

func newRecorder() *recorder {
	return &recorder{tl: Timeline{Start: time.Now(), Interval: timelineInterval}, faults: map[string]int{}}
}

func appendCapped[T any](s []T, v T) []T {
	if len(s) >= timelineCap {
		s = s[len(s)-timelineCap+1:]
	}
	return append(s, v)
}

// record changes the timeline under the recorder's lock (nothing without
// a recorder).
func (r *recorder) record(f func(t *Timeline)) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.tl)
}

func (r *recorder) podOp(op PodOp) { r.record(func(t *Timeline) { t.Pods = appendCapped(t.Pods, op) }) }

func (r *recorder) mark(m Mark) { r.record(func(t *Timeline) { t.Marks = appendCapped(t.Marks, m) }) }

// Timeline returns what the lab has recorded so far.
func (l *Lab) Timeline() Timeline {
	r := l.rec
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.tl
	t.Pools = append([]PoolSample(nil), r.tl.Pools...)
	t.Pods = append([]PodOp(nil), r.tl.Pods...)
	t.Marks = append([]Mark(nil), r.tl.Marks...)
	t.Faults = append([]FaultWindow(nil), r.tl.Faults...)
	return t
}

// sampleLoop samples the pools and fault rules every timelineInterval
// until ctx ends.
func (l *Lab) sampleLoop(ctx context.Context) {
	t := time.NewTicker(timelineInterval)
	defer t.Stop()
	for {
		l.sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sample records every node's pool and the fault rules' windows now; ctx
// ending cuts a scrape short (a stopped ipamd does not answer).
func (l *Lab) sample(ctx context.Context) {
	now := time.Now()
	var samples []PoolSample
	for _, n := range l.Nodes() {
		s := PoolSample{T: now, Node: n.Name}
		text, err := n.metricsCtx(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.Down = true
		} else {
			total, _ := Gauge(text, "awscni_total_ip_addresses") // 0 when absent
			assigned, _ := Gauge(text, "awscni_assigned_ip_addresses")
			prefixes, _ := Gauge(text, "awscni_total_ipv4_prefixes")
			s.TotalIPs, s.AssignedIPs, s.Prefixes = int(total), int(assigned), int(prefixes)
		}
		samples = append(samples, s)
	}
	rules := l.Faults().List()
	r := l.rec
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range samples {
		r.tl.Pools = appendCapped(r.tl.Pools, s)
	}
	live := map[string]bool{}
	for _, f := range rules {
		live[f.ID] = true
		from := f.Added.Add(time.Duration(f.After))
		if now.Before(from) {
			continue
		}
		i, ok := r.faults[f.ID]
		if !ok {
			r.tl.Faults = append(r.tl.Faults, FaultWindow{ID: f.ID, Action: f.Action, Code: f.Code, From: from})
			i = len(r.tl.Faults) - 1
			r.faults[f.ID] = i
		}
		w := &r.tl.Faults[i]
		w.Hits = f.Hits
		if w.To.IsZero() {
			if f.For > 0 && now.After(from.Add(time.Duration(f.For))) {
				w.To = from.Add(time.Duration(f.For))
			} else if f.Count > 0 && f.Hits >= f.Count {
				w.To = now
			}
		}
	}
	for id, i := range r.faults {
		if !live[id] && r.tl.Faults[i].To.IsZero() {
			r.tl.Faults[i].To = now // removed
		}
	}
}

// Gauge reads one unlabelled series from Prometheus text (ok false when
// it is absent).
func Gauge(text, name string) (v float64, ok bool) {
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// Snapshot is a lab's state and history at one moment: what a UI page or
// a report shows.
type Snapshot struct {
	Status   Status            `json:"status"`
	Timeline Timeline          `json:"timeline"`
	Events   []ec2query.Record `json:"events"`
	Taken    time.Time         `json:"taken"`
}

// Snapshot takes the lab's status, timeline (with a sample of the pools
// taken now) and audit records.
func (l *Lab) Snapshot() Snapshot {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	l.sample(ctx)
	cancel()
	return Snapshot{Status: l.Status(), Timeline: l.Timeline(), Events: l.Events(ec2query.EventFilter{}), Taken: time.Now()}
}
