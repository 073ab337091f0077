package scenarios

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/vpclab/vpclab/lab/ui"
)

// ReportPage is the HTML report of runs of s (one per implementation,
// stacked): each run's steps with their expectations and measured values,
// its timeline, topology and EC2 calls as the lab ended, and on failure
// the dump. Runs without a snapshot (Runner.Capture unset, or a lab that
// never came up) show their steps only.
func ReportPage(s Scenario, runs []Result) ui.Page {
	p := ui.Page{Title: "vpclab scenario: " + s.Name, Subtitle: s.Description}
	for _, r := range runs {
		run := ui.Run{Label: r.CNI, Verdict: "FAIL", Failures: r.Failures, Dump: r.Dump}
		if r.Passed {
			run.Verdict = "PASS"
		}
		if r.Snapshot != nil {
			run.Snap = *r.Snapshot
		} else {
			run.Snap.Taken = time.Now()
		}
		for i, st := range r.Steps {
			step := ui.Step{N: i + 1, Name: st.Name, Start: st.Start, End: st.End, Passed: len(st.Failures) == 0}
			for _, c := range st.Checks {
				step.Checks = append(step.Checks, ui.Check{What: c.What, Want: c.Want, Got: c.Got, Pass: c.Pass})
				if !c.Pass {
					step.Passed = false
				}
			}
			run.Steps = append(run.Steps, step)
		}
		p.Runs = append(p.Runs, run)
	}
	return p
}

// WriteReportFile writes ReportPage to path (atomically).
func WriteReportFile(path string, s Scenario, runs []Result) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".report-*.html")
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := ui.Write(tmp, ReportPage(s, runs)); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return os.Rename(tmp.Name(), path)
}
