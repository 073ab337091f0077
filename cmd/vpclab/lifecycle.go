package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/vpclab/vpclab/internal/cli"
	"github.com/vpclab/vpclab/lab"
)

// upConfig turns up's flags into a lab config.
func upConfig(e env, args []string) (lab.Config, bool, error) {
	fs := flags("up [-f FILE] [--nodes N] [--instance-type T] [--subnet-cidr C] [--env K=V]... [--cni vpclab|upstream@V|path:DIR|bin:DIR] [--ipamd-restart D|never] [--kubernetes] [--foreground]")
	o := lab.Overrides{Name: e.name, NameSet: e.given != ""}
	o.Bind(fs.FlagSet)
	fg := fs.Bool("foreground", false, "run the lab in this process until interrupted")
	if _, err := fs.Parse(args, 0); err != nil {
		return lab.Config{}, false, err
	}
	o.NodesSet = fs.Set("nodes")
	cfg, err := o.Config()
	if err != nil {
		return lab.Config{}, false, cli.Usagef("%v", err)
	}
	cfg.Owner = "up"
	return cfg, *fg, nil
}

func cmdUp(e env, args []string) error {
	cfg, fg, err := upConfig(e, args)
	if err != nil {
		return err
	}
	if err := needRoot(); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	return lab.Up(e.ctx, cfg, self, fg, e.stdout, e.nameHint())
}

func cmdServeLab(e env, args []string) error {
	if len(args) != 1 {
		return cli.Usagef("serve-lab CONFIG (started by vpclab up)")
	}
	return lab.RunSupervisor(args[0], e.stdout)
}

func cmdDown(e env, args []string) error {
	if err := rootCommand("down", args); err != nil {
		return err
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(e.ctx, time.Minute)
	defer cancel()
	if err := c.Down(ctx); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "lab %s is down\n", e.name)
	return nil
}

func cmdGC(e env, args []string) error {
	if err := rootCommand("gc [--name N]   (without --name: every dead lab)", args); err != nil {
		return err
	}
	lines, err := lab.Sweep(e.given)
	for _, l := range lines {
		fmt.Fprintln(e.stdout, l)
	}
	return err
}

func cmdDemo(e env, args []string) error {
	if err := rootCommand("demo   (a lab named vpcdemo unless --name: pods, a throttling episode, an exhausted subnet; torn down at the end or on Ctrl-C)", args); err != nil {
		return err
	}
	return lab.Demo(e.ctx, e.stdout, e.given)
}
