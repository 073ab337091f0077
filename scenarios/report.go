package scenarios

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/lab"
)

// RunFile runs a scenario (a YAML file, or a built-in one by name or
// slug) in a lab of its own (named sc + 6 hex digits) built from binDir's
// binaries, with every node on cni when it is set. It reports each step
// as it runs — every expectation PASS or FAIL with its measured value —
// and the verdict on out, or with asJSON the progress on log and the
// result as JSON on out; with report set, it also writes the run's HTML
// report there. It returns an error for a scenario it cannot find or
// read, or one that fails; ctx cancelled (Ctrl-C) stops it and tears its
// lab down.
func RunFile(ctx context.Context, path, binDir string, cni lab.CNI, asJSON bool, report string, out, log io.Writer) error {
	s, err := Find(path)
	if err != nil {
		return err
	}
	progress := out
	if asJSON {
		progress = log
	}
	name := labName()
	fmt.Fprintf(progress, "scenario %q in lab %s (vpclab status --name %s while it runs)\n", s.Name, name, name)
	if cni.Kind != "" && !s.AppliesTo(cni) {
		fmt.Fprintf(progress, "  note: its expectations are written for %v, not %s; differences may be known deltas\n", implementations(s), cni)
	}
	r := Runner{BinDir: binDir, Owner: "scenario", CNI: cni, Capture: report != "", Log: func(f string, a ...any) { fmt.Fprintf(progress, "  "+f+"\n", a...) }}
	res := r.Run(ctx, s, name)
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted; lab %s removed", name)
	}
	if report != "" {
		if err := WriteReportFile(report, s, []Result{res}); err != nil {
			return err
		}
		fmt.Fprintf(progress, "report: %s\n", report)
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		took := res.Duration.Round(100 * time.Millisecond)
		if res.Passed {
			fmt.Fprintf(out, "PASS %s (%s)\n", res.Scenario, took)
		} else {
			fmt.Fprintf(out, "FAIL %s (%s)\n  %s\n%s", res.Scenario, took, strings.Join(res.Failures, "\n  "), res.Dump)
		}
	}
	if !res.Passed {
		return fmt.Errorf("scenario %q failed", res.Scenario)
	}
	return nil
}

// dump gathers what a failed scenario's reader needs: the nodes' pools,
// the last ipamd log lines, the last EC2 errors and a timeline of EC2
// calls and pod events.
func dump(l *lab.Lab, x *run) string {
	var b strings.Builder
	for _, n := range l.Nodes() {
		enis, assigned, err := n.IpamdENIs()
		fmt.Fprintf(&b, "node %s (%s): ipamd ENIs %v, %d assigned, err %v\n", n.Name, n.Instance.ID, enis, len(assigned), err)
		log := strings.Split(strings.TrimSpace(n.IpamdLog()), "\n")
		if len(log) > 25 {
			log = log[len(log)-25:]
		}
		fmt.Fprintf(&b, "ipamd log (last lines):\n%s\n", strings.Join(log, "\n"))
	}
	errs := l.Events(ec2query.EventFilter{ErrorsOnly: true})
	if len(errs) > 20 {
		errs = errs[len(errs)-20:]
	}
	fmt.Fprintln(&b, "EC2 errors (last 20):")
	for _, e := range errs {
		j, _ := json.Marshal(map[string]any{"time": e.EventTime, "action": e.EventName, "code": e.ErrorCode})
		fmt.Fprintln(&b, string(j))
	}
	fmt.Fprintln(&b, "timeline (last 60: EC2 calls, pod adds and deletes):")
	for _, t := range x.timeline(l, 60) {
		fmt.Fprintln(&b, t)
	}
	return b.String()
}

// event is one pod event on the run's timeline.
type event struct {
	at   time.Time
	what string
}

// note records a pod event (x.mu held).
func (x *run) note(format string, a ...any) {
	if len(x.events) == 4096 {
		x.events = slices.Delete(x.events, 0, 1024)
	}
	x.events = append(x.events, event{time.Now(), fmt.Sprintf(format, a...)})
}

// timeline merges the EC2 calls and the run's pod events by time and
// returns the last max of them, one line each.
func (x *run) timeline(l *lab.Lab, max int) []string {
	all := []event{}
	for _, e := range l.Events(ec2query.EventFilter{Limit: max}) {
		what := "ec2 " + e.EventName
		if e.ErrorCode != "" {
			what += " -> " + e.ErrorCode
		}
		if who := e.UserIdentity.InstanceID; who != "" {
			what += " by " + who
		} else if e.UserIdentity.UserName != "" {
			what += " by " + e.UserIdentity.UserName
		}
		all = append(all, event{e.EventTime, what})
	}
	x.mu.Lock()
	all = append(all, x.events...)
	x.mu.Unlock()
	slices.SortStableFunc(all, func(a, b event) int { return a.at.Compare(b.at) })
	if len(all) > max {
		all = all[len(all)-max:]
	}
	out := make([]string, len(all))
	for i, e := range all {
		out[i] = e.at.UTC().Format("15:04:05.000") + "  " + e.what
	}
	return out
}

// implementations lists the CNIs a scenario's expectations are written for.
func implementations(s Scenario) []string {
	if len(s.Implementations) == 0 {
		return []string{lab.CNIVpclab}
	}
	return s.Implementations
}

// LoadError is a scenario file that could not be read or parsed.
type LoadError struct{ Err error }

func (e *LoadError) Error() string { return e.Err.Error() }
func (e *LoadError) Unwrap() error { return e.Err }
