package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vpclab/vpclab/fakeec2/catalog"
	"github.com/vpclab/vpclab/internal/cli"
	"github.com/vpclab/vpclab/lab"
	"github.com/vpclab/vpclab/scenarios"
)

func cmdMaxPods(e env, args []string) error {
	fs := flags("max-pods --instance-type T [--prefix-delegation] [--custom-networking] | max-pods --all")
	itype := fs.String("instance-type", "", "instance type")
	prefix := fs.Bool("prefix-delegation", false, "prefix delegation (ENABLE_PREFIX_DELEGATION)")
	custom := fs.Bool("custom-networking", false, "custom networking (AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG): the primary ENI serves no pod")
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
	fmt.Fprintln(e.stdout, t.MaxPodsFor(*prefix, *custom))
	return nil
}

// cmdScenario runs a scenario (or the same one against several CNIs) and
// prints a step-by-step report or a comparison; Ctrl-C stops it and tears
// its lab down. list, show and new need no lab; record reads a trail.
func cmdScenario(e env, args []string) error {
	sub, fs, args, err := subFlags(args, map[string]string{
		"run":    "scenario run FILE|BUILTIN [--cni C] [-o table|json] [--report OUT.html]   (in a lab of its own; a step-by-step report, then PASS or FAIL)",
		"diff":   "scenario diff FILE|BUILTIN --cni C --cni C2 [--cni …] [-o table|json] [--report OUT.html]   (the same scenario against each CNI, side by side)",
		"list":   "scenario list [--label L]   (the built-in scenarios)",
		"show":   "scenario show BUILTIN   (a built-in scenario's YAML)",
		"new":    "scenario new [FILE]   (a commented template; stdout without FILE)",
		"record": "scenario record TRAIL.json [--pods N] [--name-as S] [> FILE]   (a replay scenario from CloudTrail records or vpclab events; --name LAB reads a running lab's)"},
		"run", "diff", "list", "show", "new", "record")
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
	label := fs.String("label", "", "list: only scenarios with this label")
	pods := fs.Int("pods", 10, "record: pods the replay adds while the recorded faults play")
	title := fs.String("name-as", "", "record: the replay scenario's name")
	report := fs.String("report", "", "run, diff: also write a self-contained HTML report (timeline, topology, EC2 calls, steps) to this file")
	pos, err := fs.Parse(args, map[string]int{"run": 1, "diff": 1, "list": 0, "show": 1, "new": -1, "record": -1}[sub])
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		return scenarios.WriteList(e.stdout, *label)
	case "show":
		b, err := scenarios.BuiltinSource(pos[0])
		if err != nil {
			return cli.Usagef("%v (vpclab scenario list names them)", err)
		}
		_, err = e.stdout.Write(b)
		return err
	case "new":
		return writeTemplate(e, pos)
	case "record":
		return recordScenario(e, pos, *pods, *title)
	}
	f, err := format()
	if err != nil {
		return err
	}
	if *report != "" && (sub == "run" || sub == "diff") {
		if st, err := os.Stat(filepath.Dir(*report)); err != nil || !st.IsDir() {
			return cli.Usagef("--report %s: no such directory %s", *report, filepath.Dir(*report))
		}
	}
	return scenarios.Command{Sub: sub, Scenario: pos[0], CNIs: cnis, JSON: f == "json", Report: *report, BinDir: lab.DefaultBinDir(), Out: e.stdout, Log: e.stderr}.Execute(e.ctx)
}

// writeTemplate writes `scenario new`'s template to stdout or a new file.
func writeTemplate(e env, pos []string) error {
	switch len(pos) {
	case 0:
		_, err := e.stdout.Write(scenarios.Template())
		return err
	case 1:
		f, err := os.OpenFile(pos[0], os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return cli.Usagef("scenario new: %v", err)
		}
		if _, err := f.Write(scenarios.Template()); err != nil {
			f.Close()
			return err
		}
		fmt.Fprintf(e.stdout, "wrote %s; run it with: vpclab scenario run %s\n", pos[0], pos[0])
		return f.Close()
	}
	return cli.Usagef("scenario new takes at most one FILE")
}

// recordScenario writes a replay scenario from a trail file, or from the
// running lab's audit log when no file is given.
func recordScenario(e env, pos []string, pods int, title string) error {
	var recs []scenarios.TrailRecord
	var err error
	var cfg *lab.Config
	switch len(pos) {
	case 0:
		recs, cfg, err = labTrail(e)
	case 1:
		f, ferr := os.Open(pos[0])
		if ferr != nil {
			return cli.Usagef("scenario record: %v", ferr)
		}
		defer f.Close()
		recs, err = scenarios.ReadTrail(f)
		if err != nil {
			return cli.Usagef("scenario record %s: %v", pos[0], err)
		}
	default:
		return cli.Usagef("scenario record takes one TRAIL file (or none, with --name LAB)")
	}
	if err != nil {
		return err
	}
	if pods < 1 {
		return cli.Usagef("--pods %d: want at least 1", pods)
	}
	s, err := scenarios.Record(recs, scenarios.RecordOptions{Name: title, Lab: cfg, Pods: pods})
	if err != nil {
		return cli.Usagef("scenario record: %v", err)
	}
	return scenarios.WriteYAML(e.stdout, s)
}

// labTrail reads the running lab's audit log and its config.
func labTrail(e env) ([]scenarios.TrailRecord, *lab.Config, error) {
	c, err := e.dial()
	if err != nil {
		return nil, nil, err
	}
	evs, err := c.Events(e.ctx, lab.EventQuery{})
	if err != nil {
		return nil, nil, err
	}
	b, err := json.Marshal(evs)
	if err != nil {
		return nil, nil, err
	}
	recs, err := scenarios.ReadTrail(bytes.NewReader(b))
	if err != nil {
		return nil, nil, cli.Usagef("lab %s: %v", e.name, err)
	}
	st, err := c.Status(e.ctx)
	if err != nil {
		return nil, nil, err
	}
	// The replay's world: the lab's subnets and nodes (its env and timing
	// are the replay's to choose).
	cfg := lab.Config{VPCCIDR: "10.0.0.0/16"}
	if len(st.Subnets) > 0 {
		if p, err := netip.ParsePrefix(st.Subnets[0].CIDR); err == nil {
			vpc, _ := p.Addr().Prefix(16)
			cfg.VPCCIDR = vpc.String()
		}
	}
	for i, sn := range st.Subnets {
		cfg.Subnets = append(cfg.Subnets, lab.SubnetConfig{Name: fmt.Sprintf("s%d", i+1), CIDR: sn.CIDR})
	}
	for _, n := range st.Nodes {
		cfg.Nodes = append(cfg.Nodes, lab.NodeConfig{Name: n.Name, InstanceType: n.InstanceType})
	}
	return recs, &cfg, nil
}
