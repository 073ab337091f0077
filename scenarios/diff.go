package scenarios

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vpclab/vpclab/lab"
)

var nonSlug = regexp.MustCompile(`[^a-z0-9]+`)

// Slug is a scenario's name as a command-line word ("throttling storm
// during a 100-pod burst" → "throttling-storm-during-a-100-pod-burst").
func Slug(name string) string {
	return strings.Trim(nonSlug.ReplaceAllString(strings.ToLower(name), "-"), "-")
}

// Find returns the scenario a command line names: a YAML file, else a
// built-in scenario by name, slug or file name.
func Find(arg string) (Scenario, error) {
	if _, err := os.Stat(arg); err == nil {
		s, err := Load(arg)
		if err != nil {
			return Scenario{}, &LoadError{err}
		}
		return s, nil
	}
	if i := builtinIndex(arg); i >= 0 {
		return Builtin[i], nil
	}
	return Scenario{}, &LoadError{fmt.Errorf("%s: no such file or built-in scenario (vpclab scenario list names them)", arg)}
}

// labName is a fresh lab name for a scenario run ("sc" + 6 hex digits).
func labName() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return "sc" + hex.EncodeToString(b)
}

// Diff runs s once per CNI, one after the other, each in a lab of its
// own, running every step whatever fails, and returns the runs in order,
// each with its lab's snapshot (for a report). It stops early only when
// ctx ends.
func Diff(ctx context.Context, s Scenario, cnis []lab.CNI, binDir string, log func(string, ...any)) []Result {
	var out []Result
	for _, c := range cnis {
		if ctx.Err() != nil {
			break
		}
		r := Runner{BinDir: binDir, Owner: "scenario diff", CNI: c, KeepGoing: true, Log: log, Capture: true}
		out = append(out, r.Run(ctx, s, labName()))
	}
	return out
}

// RunDiff runs s against each CNI (Diff) and writes the comparison to out
// as a table (WriteDiff) or, with asJSON, as the runs themselves, and with
// report set an HTML report with the runs' timelines stacked; progress
// goes to log.
func RunDiff(ctx context.Context, s Scenario, cnis []lab.CNI, binDir string, asJSON bool, report string, out, log io.Writer) error {
	runs := Diff(ctx, s, cnis, binDir, func(f string, a ...any) { fmt.Fprintf(log, "  "+f+"\n", a...) })
	if ctx.Err() != nil {
		return errors.New("interrupted; its labs removed")
	}
	if report != "" {
		if err := WriteReportFile(report, s, runs); err != nil {
			return err
		}
		fmt.Fprintf(log, "report: %s\n", report)
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(runs)
	}
	return WriteDiff(out, runs)
}

// WriteDiff prints runs of one scenario side by side: per step the pod
// counts, pool figures, EC2 calls by action, EC2 errors by code, and how
// long each expected figure took to hold; then each run's verdict.
func WriteDiff(w io.Writer, runs []Result) error {
	if len(runs) == 0 {
		return errors.New("no runs to compare")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := []string{"scenario: " + runs[0].Scenario}
	for _, r := range runs {
		head = append(head, r.CNI)
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	row := func(label string, cell func(r Result, st *StepResult) string, step int) {
		cells := []string{label}
		for _, r := range runs {
			var st *StepResult
			if step < len(r.Steps) {
				st = &r.Steps[step]
			}
			if st == nil {
				cells = append(cells, "-")
				continue
			}
			cells = append(cells, cell(r, st))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	for i := range maxSteps(runs) {
		name := stepName(runs, i)
		row(fmt.Sprintf("%d. %s", i+1, name), func(_ Result, st *StepResult) string { return st.Duration.Round(100 * time.Millisecond).String() }, i)
		row("   pods / failed adds", func(_ Result, st *StepResult) string { return fmt.Sprintf("%d / %d", st.Pods, st.FailedAdds) }, i)
		row("   IPs total / assigned", func(_ Result, st *StepResult) string { return fmt.Sprintf("%d / %d", st.TotalIPs, st.AssignedIPs) }, i)
		row("   ENIs / prefixes", func(_ Result, st *StepResult) string { return fmt.Sprintf("%d / %d", st.ENIs, st.Prefixes) }, i)
		row("   EC2 calls mutating / describe", func(_ Result, st *StepResult) string { return fmt.Sprintf("%d / %d", st.Mutating, st.Describe) }, i)
		for _, a := range keysOf(runs, i, func(st StepResult) map[string]int { return st.Calls }) {
			row("     "+a, func(_ Result, st *StepResult) string { return fmt.Sprint(st.Calls[a]) }, i)
		}
		for _, c := range keysOf(runs, i, func(st StepResult) map[string]int { return st.Errors }) {
			row("   error "+c, func(_ Result, st *StepResult) string { return fmt.Sprint(st.Errors[c]) }, i)
		}
		for _, e := range reachedKeys(runs, i) {
			row("   time to "+e, func(_ Result, st *StepResult) string {
				d, ok := st.Reached[e]
				switch {
				case !ok:
					return "-"
				case d < 0:
					return "never"
				}
				return d.Round(100 * time.Millisecond).String()
			}, i)
		}
		row("   failed expectations", func(_ Result, st *StepResult) string { return fmt.Sprint(len(st.Failures)) }, i)
	}
	verdict := []string{"verdict"}
	for _, r := range runs {
		v := "PASS"
		if !r.Passed {
			v = fmt.Sprintf("FAIL (%d)", len(r.Failures))
		}
		verdict = append(verdict, fmt.Sprintf("%s in %s", v, r.Duration.Round(time.Second)))
	}
	fmt.Fprintln(tw, strings.Join(verdict, "\t"))
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range runs {
		for _, f := range r.Failures {
			fmt.Fprintf(w, "%s: %s\n", r.CNI, f)
		}
	}
	return nil
}

func maxSteps(runs []Result) int {
	n := 0
	for _, r := range runs {
		n = max(n, len(r.Steps))
	}
	return n
}

func stepName(runs []Result, i int) string {
	for _, r := range runs {
		if i < len(r.Steps) {
			return r.Steps[i].Name
		}
	}
	return ""
}

// keysOf is the sorted union of one map's keys over the runs' step i.
func keysOf(runs []Result, i int, m func(StepResult) map[string]int) []string {
	var out []string
	for _, r := range runs {
		if i < len(r.Steps) {
			for k := range m(r.Steps[i]) {
				if !slices.Contains(out, k) {
					out = append(out, k)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func reachedKeys(runs []Result, i int) []string {
	var out []string
	for _, r := range runs {
		if i < len(r.Steps) {
			for k := range r.Steps[i].Reached {
				if !slices.Contains(out, k) {
					out = append(out, k)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// WriteList prints the built-in scenarios (those with label, when set):
// slug, the CNIs their expectations are written for, labels and name.
func WriteList(w io.Writer, label string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tFOR\tLABELS\tNAME")
	for _, s := range Builtin {
		if label != "" && !slices.Contains(s.Labels, label) {
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", Slug(s.Name), strings.Join(implementations(s), ","), strings.Join(s.Labels, ","), s.Name)
	}
	return tw.Flush()
}

// UsageError is a scenario command the caller got wrong: an unknown
// scenario, the wrong number of CNIs, a CNI that cannot be built, no root.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Command is `vpclab scenario run|diff` once its flags are read.
type Command struct {
	Sub      string // run or diff
	Scenario string // a YAML file, or a built-in's name or slug
	CNIs     []lab.CNI
	JSON     bool // diff: the runs as JSON instead of a table
	// Report is a file to write a self-contained HTML report to ("" none).
	Report   string
	BinDir   string
	Out, Log io.Writer
}

// Execute checks the command, builds the CNIs it names (first, so a bad
// one is one line before any lab exists), then runs it.
func (c Command) Execute(ctx context.Context) error {
	s, err := Find(c.Scenario)
	if err != nil {
		return &UsageError{err}
	}
	switch {
	case c.Sub == "run" && len(c.CNIs) > 1:
		return &UsageError{errors.New("--cni: run takes one (diff compares several)")}
	case c.Sub == "diff" && len(c.CNIs) < 2:
		return &UsageError{fmt.Errorf("--cni: diff needs at least two, e.g. --cni vpclab --cni upstream@%s", lab.UpstreamVersion)}
	case os.Geteuid() != 0:
		return &UsageError{errors.New("must run as root (a scenario brings up a lab: network and mount namespaces)")}
	}
	progress := func(f string, a ...any) { fmt.Fprintf(c.Out, "  "+f+"\n", a...) }
	if err := lab.BuildCNIs(ctx, c.CNIs, progress); err != nil {
		return err // ErrNoCNI: the caller's
	}
	if c.Sub == "run" {
		return RunFile(ctx, c.Scenario, c.BinDir, append(c.CNIs, lab.CNI{})[0], c.JSON, c.Report, c.Out, c.Log)
	}
	return RunDiff(ctx, s, c.CNIs, c.BinDir, c.JSON, c.Report, c.Out, c.Log)
}
