package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vpclab/vpclab/scenarios"
)

const scenarioUsage = "scenario run FILE"

// cmdScenario runs a YAML scenario outside Ginkgo and prints a verdict;
// Ctrl-C stops it and tears its lab down.
func cmdScenario(_ globals, args []string, stdout, _ io.Writer) error {
	ctx, stop := interruptible()
	defer stop()
	if _, args, err := subcommand(args, scenarioUsage, "run"); err != nil {
		return err
	} else if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		return helpRequested{"usage: vpclab scenario run FILE\n\nRuns a YAML scenario (see scenarios/examples) in a lab of its own and prints PASS or FAIL.\n"}
	} else if len(args) != 1 {
		return usagef("%s", scenarioUsage)
	} else {
		return runScenario(ctx, args[0], stdout)
	}
}

func runScenario(ctx context.Context, file string, stdout io.Writer) error {
	s, err := scenarios.Load(file)
	if err != nil {
		return usagef("%v", err)
	}
	if err := needRoot(); err != nil {
		return err
	}
	self, _ := os.Executable()
	bin := os.Getenv("VPCLAB_BIN")
	if bin == "" {
		bin = filepath.Dir(self)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := fmt.Sprintf("sc%x", b)[:8]
	r := scenarios.Runner{BinDir: bin, Owner: "scenario", Log: func(f string, a ...any) { fmt.Fprintf(stdout, "  "+f+"\n", a...) }}
	fmt.Fprintf(stdout, "scenario %q in lab %s (vpclab status --name %s while it runs)\n", s.Name, name, name)
	res := r.Run(ctx, s, name)
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted; lab %s removed", name)
	}
	if res.Passed {
		fmt.Fprintf(stdout, "PASS %s (%s)\n", res.Scenario, res.Duration.Round(100*time.Millisecond))
		return nil
	}
	fmt.Fprintf(stdout, "FAIL %s (%s)\n  %s\n%s", res.Scenario, res.Duration.Round(100*time.Millisecond), strings.Join(res.Failures, "\n  "), res.Dump)
	return fmt.Errorf("scenario %q failed", res.Scenario)
}
