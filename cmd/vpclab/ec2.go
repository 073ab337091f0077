package main

import (
	"encoding/json"
	"fmt"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/internal/cli"
	"github.com/vpclab/vpclab/lab"
)

func cmdEvents(e env, args []string) error {
	fs := flags("events [--action X] [--errors] [--follow] [-o json|table]")
	q := lab.EventQuery{}
	fs.StringVar(&q.Action, "action", "", "only this EC2 action")
	fs.BoolVar(&q.ErrorsOnly, "errors", false, "only failed calls")
	follow := fs.Bool("follow", false, "keep printing new events (until Ctrl-C)")
	format := fs.Output("json", "table")
	if _, err := fs.Parse(args, 0); err != nil {
		return err
	}
	f, c, err := e.dialAs(format)
	if err != nil {
		return err
	}
	return c.FollowEvents(e.ctx, q, *follow, func(r ec2query.Record) {
		if f == "table" {
			lab.WriteEvent(e.stdout, r)
			return
		}
		b, _ := json.Marshal(r)
		fmt.Fprintln(e.stdout, string(b))
	})
}

func cmdFaults(e env, args []string) error {
	sub, fs, args, err := subFlags(args, map[string]string{"add": "faults add --action A (--code C | --latency D | --imds-lag D) [--count N] [--probability P] [--for D]",
		"list": "faults list [-o table|json]", "clear": "faults clear"}, "add", "list", "clear")
	if err != nil {
		return err
	}
	r := faults.Rule{}
	r.Bind(fs.FlagSet)
	format := fs.Output("table", "json")
	if _, err := fs.Parse(args, 0); err != nil {
		return err
	}
	if err := r.Validate(); sub == "add" && err != nil {
		return cli.Usagef("%v", err)
	}
	f, c, err := e.dialAs(format)
	if err != nil {
		return err
	}
	switch sub {
	case "add":
		added, err := c.AddFaults(e.ctx, r)
		if err == nil {
			fmt.Fprintf(e.stdout, "added %s\n", added[0].ID)
		}
		return err
	case "clear":
		return c.ClearFaults(e.ctx)
	}
	rules, err := c.Faults(e.ctx)
	if err != nil {
		return err
	}
	return e.show(f, append([]faults.Rule{}, rules...), func() error { return lab.WriteFaults(e.stdout, rules) })
}

func cmdThrottle(e env, args []string) error {
	sub, fs, args, err := subFlags(args, map[string]string{"set": "throttle set [--scale X] [--action A --capacity N --refill R]", "off": "throttle off"}, "set", "off")
	if err != nil {
		return err
	}
	tf := ec2query.ThrottleFlags{}
	tf.Bind(fs.FlagSet)
	if _, err := fs.Parse(args, 0); err != nil {
		return err
	}
	cfg, err := tf.Config(sub == "set")
	if err != nil {
		return cli.Usagef("%v", err)
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	if err := c.SetThrottling(e.ctx, cfg); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "throttling %s\n", map[bool]string{true: "on", false: "off"}[cfg.Enabled])
	return nil
}
