package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/vpclab/vpclab/scenarios"
)

// cmdScenario runs a YAML scenario outside Ginkgo and prints a verdict.
func cmdScenario(args []string, stdout io.Writer) error {
	if len(args) != 2 || args[0] != "run" {
		return usagef("scenario run FILE")
	}
	s, err := scenarios.Load(args[1])
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
	r := scenarios.Runner{BinDir: bin, Log: func(f string, a ...any) { fmt.Fprintf(stdout, "  "+f+"\n", a...) }}
	res := r.Run(context.Background(), s, name)
	if res.Passed {
		fmt.Fprintf(stdout, "PASS %s (%s)\n", res.Scenario, res.Duration.Round(100_000_000))
		return nil
	}
	fmt.Fprintf(stdout, "FAIL %s (%s)\n  %s\n%s", res.Scenario, res.Duration.Round(100_000_000), strings.Join(res.Failures, "\n  "), res.Dump)
	return fmt.Errorf("scenario %q failed", res.Scenario)
}
