package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/model"
	"io"
	"text/tabwriter"
	"time"

	"github.com/vpclab/vpclab/lab"
)

func cmdEvents(g globals, args []string, stdout, _ io.Writer) error {
	fs := newFlags("events", "events [--action X] [--errors] [--follow] [-o json|table]")
	action := fs.String("action", "", "only this EC2 action")
	errorsOnly := fs.Bool("errors", false, "only failed calls")
	follow := fs.Bool("follow", false, "keep printing new events")
	format := outputFlag(fs, "json", "table")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	f, err := format()
	if err != nil {
		return err
	}
	c, err := dial(g)
	if err != nil {
		return err
	}
	ctx, stop := interruptible()
	defer stop()
	q := lab.EventQuery{Action: *action, ErrorsOnly: *errorsOnly}
	if *follow {
		q.Wait = 10 * time.Second
	}
	for {
		recs, err := c.Events(ctx, q)
		if err != nil {
			if ctx.Err() != nil {
				return nil // Ctrl-C ends --follow
			}
			return err
		}
		for _, r := range recs {
			q.Since = max(q.Since, r.Seq)
			if f == "json" {
				b, _ := json.Marshal(r)
				fmt.Fprintln(stdout, string(b))
				continue
			}
			code := r.ErrorCode
			if code == "" {
				code = "OK"
			}
			fmt.Fprintf(stdout, "%s  %-32s %-28s %s\n", r.EventTime.Format(time.RFC3339Nano), r.EventName, code, r.SourceIPAddress)
		}
		if !*follow {
			return nil
		}
	}
}

const faultsUsage = "faults add --action A (--code C | --latency D | --imds-lag D) [--count N] [--probability P] [--for D] | faults list [-o table|json] | faults clear"

func cmdFaults(g globals, args []string, stdout, _ io.Writer) error {
	sub, args, err := subcommand(args, faultsUsage, "add", "list", "clear")
	if err != nil {
		return err
	}
	usageLine := map[string]string{"add": "faults add --action A (--code C | --latency D | --imds-lag D) [--count N] [--probability P] [--for D]",
		"list": "faults list [-o table|json]", "clear": "faults clear"}[sub]
	fs := newFlags("faults "+sub, usageLine)
	r := faults.Rule{}
	var lat, imdsLag, forD *time.Duration
	var format func() (string, error)
	switch sub {
	case "add":
		fs.StringVar(&r.Action, "action", "", "EC2 action or glob")
		fs.StringVar(&r.Code, "code", "", "EC2 error code")
		fs.IntVar(&r.Count, "count", 0, "hit at most N calls")
		fs.Float64Var(&r.Probability, "probability", 0, "hit probability (0 = always)")
		lat = fs.Duration("latency", 0, "added latency")
		imdsLag = fs.Duration("imds-lag", 0, "delay of the call's changes in IMDS")
		forD = fs.Duration("for", 0, "active window")
	case "list":
		format = outputFlag(fs, "table", "json")
	}
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	ctx := context.Background()
	switch sub {
	case "add":
		r.Latency, r.IMDSLag, r.For = model.Duration(*lat), model.Duration(*imdsLag), model.Duration(*forD)
		if err := r.Validate(); err != nil {
			return usagef("%v", err)
		}
		c, err := dial(g)
		if err != nil {
			return err
		}
		added, err := c.AddFaults(ctx, r)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "added %s\n", added[0].ID)
		return nil
	case "list":
		f, err := format()
		if err != nil {
			return err
		}
		c, err := dial(g)
		if err != nil {
			return err
		}
		rules, err := c.Faults(ctx)
		if err != nil {
			return err
		}
		if f == "json" {
			if rules == nil {
				rules = []faults.Rule{}
			}
			return printJSON(stdout, rules)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tACTION\tCODE\tCOUNT\tPROB\tLATENCY\tIMDS-LAG\tHITS")
		for _, x := range rules {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%g\t%v\t%v\t%d\n", x.ID, x.Action, x.Code, x.Count, x.Probability, time.Duration(x.Latency), time.Duration(x.IMDSLag), x.Hits)
		}
		return tw.Flush()
	default:
		c, err := dial(g)
		if err != nil {
			return err
		}
		return c.ClearFaults(ctx)
	}
}

const throttleUsage = "throttle set [--scale X] [--action A --capacity N --refill R] | throttle off"

func cmdThrottle(g globals, args []string, stdout, _ io.Writer) error {
	sub, args, err := subcommand(args, throttleUsage, "set", "off")
	if err != nil {
		return err
	}
	fs := newFlags("throttle "+sub, map[string]string{"set": "throttle set [--scale X] [--action A --capacity N --refill R]", "off": "throttle off"}[sub])
	cfg := ec2query.ThrottleConfig{}
	var scale, capacity, refill *float64
	var action *string
	if sub == "set" {
		scale = fs.Float64("scale", 1, "refill time scale")
		action = fs.String("action", "", "override one action's bucket")
		capacity = fs.Float64("capacity", 0, "bucket capacity for --action")
		refill = fs.Float64("refill", 0, "tokens per second for --action")
	}
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	if sub == "set" {
		cfg.Enabled, cfg.TimeScale = true, *scale
		if *action != "" {
			if *capacity < 1 || *refill < 0 {
				return usagef("--capacity must be ≥ 1 and --refill ≥ 0")
			}
			b, _ := json.Marshal(map[string]map[string]float64{*action: {"capacity": *capacity, "refill": *refill}})
			if err := json.Unmarshal(b, &cfg.Overrides); err != nil {
				return err
			}
		}
	}
	c, err := dial(g)
	if err != nil {
		return err
	}
	if err := c.SetThrottling(context.Background(), cfg); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "throttling %s\n", map[bool]string{true: "on", false: "off"}[cfg.Enabled])
	return nil
}
