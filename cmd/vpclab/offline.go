package main

import (
	"fmt"

	"github.com/vpclab/vpclab/fakeec2/catalog"
	"github.com/vpclab/vpclab/internal/cli"
	"github.com/vpclab/vpclab/lab"
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

// cmdScenario runs a scenario (or the same one against several CNIs) and
// prints a verdict or a comparison; Ctrl-C stops it and tears its lab
// down.
func cmdScenario(e env, args []string) error {
	sub, fs, args, err := subFlags(args, map[string]string{
		"run":  "scenario run FILE|BUILTIN [--cni C]   (in a lab of its own; prints PASS or FAIL)",
		"diff": "scenario diff FILE|BUILTIN --cni C --cni C2 [--cni …] [-o table|json]   (the same scenario against each CNI, side by side)",
		"list": "scenario list   (the built-in scenarios)"}, "run", "diff", "list")
	if err != nil {
		return err
	}
	var cnis []lab.CNI
	fs.Func("cni", "CNI: vpclab, upstream@VERSION, path:DIR or bin:DIR (diff: repeat it)", func(v string) error {
		c, err := lab.ParseCNI(v)
		cnis = append(cnis, c)
		return err
	})
	format := fs.Output("table", "json")
	pos, err := fs.Parse(args, map[string]int{"run": 1, "diff": 1, "list": 0}[sub])
	if err != nil {
		return err
	}
	if sub == "list" {
		return scenarios.WriteList(e.stdout)
	}
	f, err := format()
	if err != nil {
		return err
	}
	return scenarios.Command{Sub: sub, Scenario: pos[0], CNIs: cnis, JSON: f == "json", BinDir: lab.DefaultBinDir(), Out: e.stdout, Log: e.stderr}.Execute(e.ctx)
}
