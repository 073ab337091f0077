package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/vpclab/vpclab/fakeec2/catalog"
	"github.com/vpclab/vpclab/internal/cli"
	"github.com/vpclab/vpclab/scenarios"
)

func cmdMaxPods(e env, args []string) error {
	fs := flags("max-pods --instance-type T [--prefix-delegation] | max-pods --all")
	itype := fs.String("instance-type", "", "instance type")
	prefix := fs.Bool("prefix-delegation", false, "prefix delegation (ENABLE_PREFIX_DELEGATION)")
	all := fs.Bool("all", false, "a table of every instance type")
	_ = fs.String("cni-version", "", "VPC CNI version (the limits are the same for v1.9+)")
	if _, err := fs.Parse(args, 0); err != nil {
		return err
	}
	if *all {
		return catalog.WriteMaxPods(e.stdout)
	}
	if *itype == "" {
		return cli.Usagef("--instance-type is required (or --all)")
	}
	t, ok := catalog.Lookup(*itype)
	if !ok {
		return cli.Usagef("--instance-type %q: unknown instance type", *itype)
	}
	fmt.Fprintln(e.stdout, t.MaxPods(*prefix))
	return nil
}

// cmdScenario runs a YAML scenario outside Ginkgo and prints a verdict;
// Ctrl-C stops it and tears its lab down.
func cmdScenario(e env, args []string) error {
	_, fs, args, err := subFlags(args, map[string]string{"run": "scenario run FILE   (a YAML scenario, see scenarios/examples, in a lab of its own; prints PASS or FAIL)"}, "run")
	if err != nil {
		return err
	}
	pos, err := fs.Parse(args, 1)
	if err != nil {
		return err
	}
	if _, err := scenarios.Load(pos[0]); err != nil {
		return cli.Usagef("%v", err)
	}
	if err := needRoot(); err != nil {
		return err
	}
	bin := os.Getenv("VPCLAB_BIN")
	if bin == "" {
		self, _ := os.Executable()
		bin = filepath.Dir(self)
	}
	return scenarios.RunFile(e.ctx, pos[0], bin, e.stdout)
}
