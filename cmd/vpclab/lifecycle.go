package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vpclab/vpclab/lab"
)

// interruptible returns a context cancelled by SIGINT or SIGTERM. It is
// the first thing commands that build labs do, so an interrupt at any
// moment leads to a clean teardown instead of killing the process.
func interruptible() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

type envFlag []string

func (e *envFlag) String() string { return strings.Join(*e, ",") }
func (e *envFlag) Set(v string) error {
	if !strings.Contains(v, "=") {
		return fmt.Errorf("--env %q: want KEY=VALUE", v)
	}
	*e = append(*e, v)
	return nil
}

// upConfig builds the lab config from up's flags.
func upConfig(g globals, args []string) (lab.Config, bool, error) {
	fs := newFlags("up", "up [-f FILE] [--nodes N] [--instance-type T] [--subnet-cidr C] [--env K=V]... [--ipamd-restart D|never] [--foreground]")
	file := fs.String("f", "", "lab YAML file")
	nodes := fs.Int("nodes", 0, "number of nodes (1..200; default from the file, else 2)")
	itype := fs.String("instance-type", "", "instance type of the nodes")
	cidr := fs.String("subnet-cidr", "", "CIDR of the (first) subnet")
	restart := fs.String("ipamd-restart", "", "restart an ipamd that exits after this delay (default 1s), or never")
	fg := fs.Bool("foreground", false, "run the lab in this process until interrupted")
	var env envFlag
	fs.Var(&env, "env", "aws-node environment KEY=VALUE (repeatable)")
	pos, err := fs.parse(args)
	if err != nil {
		return lab.Config{}, false, err
	}
	if err := noArgs(pos); err != nil {
		return lab.Config{}, false, err
	}
	cfg := lab.DefaultConfig()
	if *file != "" {
		if cfg, err = lab.LoadConfig(*file); err != nil {
			return lab.Config{}, false, usagef("-f %s", err)
		}
	}
	if cfg.Name == "" || g.nameSet {
		cfg.Name = g.name
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["nodes"] {
		if *nodes < 1 || *nodes > 200 {
			return lab.Config{}, false, usagef("--nodes %d: want 1..200", *nodes)
		}
		cfg.Nodes = cfg.Nodes[:1]
		cfg.Nodes[0].Count = *nodes
	}
	if *itype != "" {
		for i := range cfg.Nodes {
			cfg.Nodes[i].InstanceType = *itype
		}
	}
	if *cidr != "" {
		if err := setSubnetCIDR(&cfg, *cidr, *file == ""); err != nil {
			return lab.Config{}, false, err
		}
	}
	if *restart != "" {
		if err := cfg.IpamdRestart.UnmarshalText([]byte(*restart)); err != nil {
			return lab.Config{}, false, usagef("--ipamd-restart: %v", err)
		}
	}
	if cfg.Env == nil {
		cfg.Env = map[string]string{}
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		cfg.Env[k] = v
	}
	if err := cfg.Validate(); err != nil {
		return lab.Config{}, false, usagef("%v", err)
	}
	cfg.Owner = "up"
	return cfg, *fg, nil
}

// setSubnetCIDR makes cidr the lab's first subnet. The lab's other
// subnets move out of its way (to a free block of their size), or, if
// they came with the defaults and no block is free, are left out.
func setSubnetCIDR(cfg *lab.Config, cidr string, defaults bool) error {
	p, err := netip.ParsePrefix(cidr)
	if err != nil || !p.Addr().Is4() {
		return usagef("--subnet-cidr %q: not an IPv4 CIDR", cidr)
	}
	if p.Masked() != p {
		return usagef("--subnet-cidr %s: host bits set (the block is %s)", cidr, p.Masked())
	}
	vpc, err := netip.ParsePrefix(cfg.VPCCIDR)
	if err == nil && (!vpc.Contains(p.Addr()) || p.Bits() < vpc.Bits()) {
		return usagef("--subnet-cidr %s: not inside vpcCidr %s", cidr, vpc)
	}
	cfg.Subnets[0].CIDR = p.String()
	taken := []netip.Prefix{p}
	var keep []lab.SubnetConfig
	keep = append(keep, cfg.Subnets[0])
	for _, s := range cfg.Subnets[1:] {
		q, err := netip.ParsePrefix(s.CIDR)
		if err != nil {
			keep = append(keep, s) // Validate names it
			continue
		}
		if overlapsAny(q, taken) {
			free, ok := freeBlock(vpc, q.Bits(), taken)
			switch {
			case ok:
				s.CIDR = free.String()
				q = free
			case defaults && !usedByNodes(cfg, s.Name):
				continue
			default:
				return usagef("--subnet-cidr %s overlaps subnet %q (%s) and the VPC %s has no free /%d for it", cidr, s.Name, s.CIDR, vpc, q.Bits())
			}
		}
		taken = append(taken, q)
		keep = append(keep, s)
	}
	cfg.Subnets = keep
	return nil
}

func overlapsAny(p netip.Prefix, taken []netip.Prefix) bool {
	for _, t := range taken {
		if t.Overlaps(p) {
			return true
		}
	}
	return false
}

// freeBlock finds the lowest /bits block of vpc that overlaps none taken.
func freeBlock(vpc netip.Prefix, bits int, taken []netip.Prefix) (netip.Prefix, bool) {
	if bits < vpc.Bits() || bits > 32 {
		return netip.Prefix{}, false
	}
	step := uint32(1) << (32 - bits)
	base := vpc.Masked().Addr().As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	count := uint64(1) << (bits - vpc.Bits())
	for i := uint64(0); i < count && i < 1<<16; i++ {
		a := start + uint32(i)*step
		c := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), bits)
		if !overlapsAny(c, taken) {
			return c, true
		}
	}
	return netip.Prefix{}, false
}

func usedByNodes(cfg *lab.Config, subnet string) bool {
	for _, n := range cfg.Nodes {
		if n.Subnet == subnet {
			return true
		}
	}
	return false
}

func cmdUp(g globals, args []string, stdout, _ io.Writer) error {
	ctx, stop := interruptible()
	defer stop()
	cfg, fg, err := upConfig(g, args)
	if err != nil {
		return err
	}
	if err := needRoot(); err != nil {
		return err
	}
	if o, alive, _ := lab.ReadOwner(lab.PathsFor(cfg.Name, "")); alive {
		return usagef("lab %q already exists, owned by %s (vpclab down%s)", cfg.Name, o, g.nameHint())
	}
	progress := func(f string, a ...any) { fmt.Fprintf(stdout, "  ✓ "+f+"\n", a...) }
	if fg {
		return lab.Serve(ctx, cfg, progress, func(l *lab.Lab) {
			printSummary(stdout, g, l.Status())
			fmt.Fprintln(stdout, "running in the foreground; Ctrl-C tears it down")
		})
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := lab.StartBackground(ctx, cfg, self, func(line string) { fmt.Fprintln(stdout, line) }); err != nil {
		var ae *lab.AliveError
		if errors.As(err, &ae) {
			return usagef("%v", err)
		}
		return err
	}
	c, err := dial(g)
	if err != nil {
		return err
	}
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	printSummary(stdout, g, st)
	return nil
}

// printSummary prints where the lab is and what to type next.
func printSummary(w io.Writer, g globals, s lab.Status) {
	fmt.Fprintf(w, "EC2 API: %s (region %s)\n", s.EC2Endpoint, s.Region)
	for _, n := range s.Nodes {
		fmt.Fprintf(w, "node %-10s %s %-10s %s\n", n.Name, n.InstanceID, n.InstanceType, n.PrivateIP)
	}
	h := g.nameHint()
	node := "node-1"
	if len(s.Nodes) > 0 {
		node = s.Nodes[0].Name
	}
	fmt.Fprintf(w, "lab %s is up. Next:\n", s.Name)
	fmt.Fprintf(w, "  vpclab status%s\n", h)
	fmt.Fprintf(w, "  vpclab pods add default/web --node %s%s\n", node, h)
	fmt.Fprintf(w, "  AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x /usr/bin/aws --endpoint-url %s --region %s ec2 describe-network-interfaces   # AWS CLI v2\n", s.EC2Endpoint, s.Region)
	fmt.Fprintf(w, "  vpclab down%s\n", h)
}

func cmdServeLab(_ globals, args []string, stdout, _ io.Writer) error {
	if len(args) != 1 {
		return usagef("serve-lab CONFIG (started by vpclab up)")
	}
	return lab.RunSupervisor(args[0], stdout)
}

func cmdDown(g globals, args []string, stdout, _ io.Writer) error {
	fs := newFlags("down", "down [--name N]")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	if err := needRoot(); err != nil {
		return err
	}
	c, err := dial(g)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Down(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "lab %s is down\n", g.name)
	return nil
}

func cmdGC(g globals, args []string, stdout, _ io.Writer) error {
	fs := newFlags("gc", "gc [--name N]   (without --name: every dead lab)")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	if err := needRoot(); err != nil {
		return err
	}
	labs := lab.Labs("")
	if g.nameSet {
		labs = []lab.LabInfo{{Name: g.name}}
	}
	var errs []error
	for _, info := range labs {
		if o, alive, _ := lab.ReadOwner(lab.PathsFor(info.Name, "")); !alive && !lab.HasLeftovers(info.Name, "") && o.PID == 0 {
			if g.nameSet {
				fmt.Fprintf(stdout, "lab %s: nothing to remove\n", info.Name)
			}
			continue
		}
		err := lab.GC(info.Name, "")
		var ae *lab.AliveError
		switch {
		case errors.As(err, &ae):
			fmt.Fprintf(stdout, "lab %s is alive (owned by %s); left alone\n", info.Name, ae.Owner)
		case err != nil:
			errs = append(errs, fmt.Errorf("lab %s: %w", info.Name, err))
		default:
			fmt.Fprintf(stdout, "removed leftovers of lab %s\n", info.Name)
		}
	}
	return errors.Join(errs...)
}
