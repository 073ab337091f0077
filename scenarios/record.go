package scenarios

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/lab"
)

// TrailRecord is the part of a CloudTrail record (or a vpclab audit
// record, which has CloudTrail's shape) that a replay needs.
type TrailRecord struct {
	EventName   string    `json:"eventName"`
	EventTime   time.Time `json:"eventTime"`
	EventSource string    `json:"eventSource"`
	ErrorCode   string    `json:"errorCode"`
	// DurationMs is vpclab's (CloudTrail has no duration).
	DurationMs float64 `json:"durationMs"`
}

// ReadTrail reads records from a CloudTrail export ({"Records": [...]}),
// a JSON array of records, or JSON lines (`vpclab events` output). Only
// EC2's records (eventSource ec2.amazonaws.com, or none) are kept, sorted
// by time.
func ReadTrail(r io.Reader) ([]TrailRecord, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSpace(b)
	var recs []TrailRecord
	switch {
	case len(b) == 0:
		return nil, errors.New("no records: the input is empty")
	case b[0] == '[':
		if err := json.Unmarshal(b, &recs); err != nil {
			return nil, fmt.Errorf("a JSON array of records: %w", err)
		}
	case bytes.HasPrefix(b, []byte("{")) && bytes.Contains(b[:min(len(b), 64)], []byte(`"Records"`)):
		var doc struct{ Records []TrailRecord }
		if err := json.Unmarshal(b, &doc); err != nil {
			return nil, fmt.Errorf("a CloudTrail export: %w", err)
		}
		recs = doc.Records
	default:
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for line := 1; sc.Scan(); line++ {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			var rec TrailRecord
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				return nil, fmt.Errorf("line %d: %w", line, err)
			}
			recs = append(recs, rec)
		}
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	recs = slices.DeleteFunc(recs, func(r TrailRecord) bool {
		return r.EventName == "" || r.EventTime.IsZero() || (r.EventSource != "" && r.EventSource != "ec2.amazonaws.com")
	})
	if len(recs) == 0 {
		return nil, errors.New("no EC2 records (eventName, eventTime) in the input")
	}
	slices.SortStableFunc(recs, func(a, b TrailRecord) int { return a.EventTime.Compare(b.EventTime) })
	return recs, nil
}

// RecordOptions shape a recorded scenario.
type RecordOptions struct {
	Name string
	// Lab is the world to replay in (default: one m5.large node in a /24).
	Lab *lab.Config
	// Pods is the workload added while the faults play (default 10).
	Pods int
	// SlowCall is the duration above which a recorded call's latency is
	// replayed (default 500 ms; vpclab records only).
	SlowCall time.Duration
}

// Record turns recorded EC2 calls into a replay scenario: each error
// answer (throttle or other) and each slow call becomes a fault rule that
// hits the first matching call at the same time relative to the first
// record; a workload of pods is added while they play, and the scenario
// expects the lab to end consistent, every pod on its node's ENIs.
func Record(recs []TrailRecord, o RecordOptions) (Scenario, error) {
	if len(recs) == 0 {
		return Scenario{}, errors.New("no records to replay")
	}
	if o.Pods == 0 {
		o.Pods = 10
	}
	if o.SlowCall == 0 {
		o.SlowCall = 500 * time.Millisecond
	}
	t0 := recs[0].EventTime
	var rules FaultRules
	for _, r := range recs {
		after := model.Duration(r.EventTime.Sub(t0).Round(time.Millisecond))
		slow := time.Duration(r.DurationMs * float64(time.Millisecond))
		switch {
		case r.ErrorCode != "":
			rules = append(rules, faults.Rule{Action: r.EventName, Code: r.ErrorCode, After: after, Count: 1})
		case slow >= o.SlowCall:
			rules = append(rules, faults.Rule{Action: r.EventName, Latency: model.Duration(slow.Round(time.Millisecond)), After: after, Count: 1})
		}
	}
	if len(rules) == 0 {
		return Scenario{}, fmt.Errorf("%d records, none an error or slower than %s: nothing to replay", len(recs), o.SlowCall)
	}
	span := recs[len(recs)-1].EventTime.Sub(t0)
	w := lab.Config{VPCCIDR: "10.0.0.0/16", Subnets: []lab.SubnetConfig{{Name: "a", CIDR: "10.0.0.0/24"}},
		Nodes: []lab.NodeConfig{{Name: "node", InstanceType: "m5.large"}}}
	if o.Lab != nil {
		w = *o.Lab
		w.Name, w.Owner, w.BinDir = "", "", ""
	}
	name := o.Name
	if name == "" {
		name = fmt.Sprintf("replay of %d EC2 calls from %s", len(recs), t0.UTC().Format(time.RFC3339))
	}
	s := Scenario{Name: name, Labels: []string{"replay"}, Timers: "fast", Lab: w,
		Description: fmt.Sprintf("Recorded: %d calls over %s, %d error or slow answers replayed as faults at the same relative times.", len(recs), span.Round(time.Millisecond), len(rules)),
		Steps: []Step{
			{Name: "the recorded answers, at their times", Kind: "fault", Action: &rules},
			{Name: "the workload while they play", Kind: "addPods", Action: &AddPods{Count: o.Pods, Parallel: 4, Timeout: model.Duration(span + 30*time.Second)}},
			{Kind: "sleep", Action: ptr(Sleep(model.Duration(span.Round(time.Second) + time.Second)))},
			{Name: "the CNI came through", Kind: "expect", Action: &Expect{FailedAdds: Int(0), PodsOnENIs: true, UniqueAddresses: true, Consistent: true}},
		}}
	return s, s.Validate()
}

func ptr[T any](v T) *T { return &v }

// WriteYAML writes s as a scenario file, its lab without the fields left
// at their defaults.
func WriteYAML(w io.Writer, s Scenario) error {
	var doc yaml.Node
	if err := doc.Encode(s); err != nil {
		return err
	}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if doc.Content[i].Value == "lab" {
			if s.Lab.IpamdRestart == (lab.Restart{}) {
				dropKey(doc.Content[i+1], "ipamdRestart")
			}
			prune(doc.Content[i+1])
		}
	}
	fmt.Fprintf(w, "# %s\n# Run it: vpclab scenario run FILE\n", strings.ReplaceAll(s.Description, "\n", " "))
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return err
	}
	return enc.Close()
}

// prune removes a mapping's entries whose values are zero ("", 0, false,
// 0s, null) or empty once pruned, recursively; it reports whether v is
// left empty.
func prune(v *yaml.Node) bool {
	switch v.Kind {
	case yaml.ScalarNode:
		return slices.Contains([]string{"", "0", "false", "0s", "null"}, v.Value)
	case yaml.SequenceNode:
		for _, c := range v.Content {
			prune(c)
		}
		return len(v.Content) == 0
	case yaml.MappingNode:
		kept := v.Content[:0]
		for i := 0; i+1 < len(v.Content); i += 2 {
			if !prune(v.Content[i+1]) {
				kept = append(kept, v.Content[i], v.Content[i+1])
			}
		}
		v.Content = kept
		return len(kept) == 0
	}
	return false
}

// dropKey removes key from mapping v.
func dropKey(v *yaml.Node, key string) {
	for i := 0; i+1 < len(v.Content); i += 2 {
		if v.Content[i].Value == key {
			v.Content = slices.Delete(v.Content, i, i+2)
			return
		}
	}
}
