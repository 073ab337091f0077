package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"text/tabwriter"

	"github.com/vpclab/vpclab/lab"
)

// outputFlag is -o with the formats a command supports.
func outputFlag(fs *flags, formats ...string) func() (string, error) {
	o := fs.String("o", formats[0], orList(formats))
	return func() (string, error) {
		for _, f := range formats {
			if *o == f {
				return f, nil
			}
		}
		return "", usagef("-o %q: want %s", *o, orList(formats))
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func cmdStatus(g globals, args []string, stdout, _ io.Writer) error {
	fs := newFlags("status", "status [-o table|json]")
	format := outputFlag(fs, "table", "json")
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
	s, err := c.Status(context.Background())
	if err != nil {
		return err
	}
	if f == "json" {
		return printJSON(stdout, s)
	}
	if !s.Ready {
		fmt.Fprintf(stdout, "lab %s is still coming up (owned by %s)\n", s.Name, s.Owner)
		return nil
	}
	fmt.Fprintf(stdout, "lab %s  vpc %s  EC2 API %s  owner %s\n\n", s.Name, s.VPCID, s.EC2Endpoint, s.Owner)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tINSTANCE\tTYPE\tIPAMD")
	for _, n := range s.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Name, n.InstanceID, n.InstanceType, ipamdSummary(n.Ipamd))
	}
	tw.Flush()
	fmt.Fprintln(stdout)
	tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tENI\tDEV\tSUBNET\tADDRS\tUSED\tFREE\tPREFIXES")
	for _, n := range s.Nodes {
		for _, e := range n.ENIs {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\t%d\t%s\n", n.Name, e.ID, e.Device, e.SubnetID, e.Addresses, e.Used, e.Free, strings.Join(e.Prefixes, ","))
		}
	}
	tw.Flush()
	fmt.Fprintln(stdout)
	tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBNET\tCIDR\tAZ\tAVAILABLE")
	for _, sn := range s.Subnets {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", sn.ID, sn.CIDR, sn.AZ, sn.Available)
	}
	tw.Flush()
	fmt.Fprintln(stdout)
	return printPods(stdout, s)
}

// ipamdSummary is one cell: running (pid, restarts) or exited with its
// last log line.
func ipamdSummary(s lab.IpamdState) string {
	r := ""
	if s.Restarts > 0 {
		r = fmt.Sprintf(", %d restarts", s.Restarts)
	}
	switch s.State {
	case "running":
		return fmt.Sprintf("running (pid %d%s)", s.PID, r)
	case "exited":
		return fmt.Sprintf("EXITED %s%s: %s", s.Exit, r, s.LastLog)
	}
	return s.State
}

func printPods(stdout io.Writer, s lab.Status) error {
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tNODE\tIP")
	for _, n := range s.Nodes {
		for _, p := range n.Pods {
			fmt.Fprintf(tw, "%s/%s\t%s\t%s\n", p.Namespace, p.Name, n.Name, p.IP)
		}
	}
	return tw.Flush()
}

func splitPod(s string) (string, string, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok {
		ns, name = "default", s
	}
	if strings.Contains(name, "/") {
		return "", "", usagef("pod %q: want NAMESPACE/NAME", s)
	}
	if err := lab.ValidatePodName(ns, name); err != nil {
		return "", "", usagef("%v", err)
	}
	return ns, name, nil
}

const podsUsage = "pods add NAMESPACE/NAME [--node NODE] | pods del NAMESPACE/NAME | pods list [-o table|json]"

func cmdPods(g globals, args []string, stdout, _ io.Writer) error {
	sub, args, err := subcommand(args, podsUsage, "add", "del", "list")
	if err != nil {
		return err
	}
	usageLine := map[string]string{"add": "pods add NAMESPACE/NAME [--node NODE]", "del": "pods del NAMESPACE/NAME", "list": "pods list [-o table|json]"}[sub]
	fs := newFlags("pods "+sub, usageLine)
	var node *string
	var format func() (string, error)
	switch sub {
	case "add":
		node = fs.String("node", "", "node (default the first)")
	case "list":
		format = outputFlag(fs, "table", "json")
	}
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if sub == "list" {
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
		s, err := c.Status(ctx)
		if err != nil {
			return err
		}
		if f == "json" {
			pods := []lab.PodStatus{}
			for _, n := range s.Nodes {
				pods = append(pods, n.Pods...)
			}
			return printJSON(stdout, pods)
		}
		return printPods(stdout, s)
	}
	if len(pos) != 1 {
		return usagef("%s", usageLine)
	}
	ns, pod, err := splitPod(pos[0])
	if err != nil {
		return err
	}
	c, err := dial(g)
	if err != nil {
		return err
	}
	if sub == "del" {
		return c.DelPod(ctx, ns, pod)
	}
	p, err := c.AddPod(ctx, *node, ns, pod)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s/%s on %s: %s\n", p.Namespace, p.Name, p.Node, p.IP)
	return nil
}

func findPod(c *lab.Client, ref string) (lab.PodStatus, error) {
	ns, pod, err := splitPod(ref)
	if err != nil {
		return lab.PodStatus{}, err
	}
	s, err := c.Status(context.Background())
	if err != nil {
		return lab.PodStatus{}, err
	}
	for _, n := range s.Nodes {
		for _, p := range n.Pods {
			if p.Namespace == ns && p.Name == pod {
				return p, nil
			}
		}
	}
	return lab.PodStatus{}, usagef("no pod %s/%s", ns, pod)
}

func cmdExec(g globals, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("exec", "exec POD -- CMD... | exec --node NODE -- CMD...")
	node := fs.String("node", "", "run on this node (its network and mount namespaces) instead of in a pod")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	var nsArgs []string
	if *node != "" {
		if len(pos) < 2 || pos[0] != "--" {
			return usagef("exec --node NODE -- CMD...")
		}
		c, err := dial(g)
		if err != nil {
			return err
		}
		s, err := c.Status(context.Background())
		if err != nil {
			return err
		}
		for _, n := range s.Nodes {
			if n.Name == *node {
				nsArgs = []string{"--net=" + n.NetNS, "--mount=" + n.MountNS}
			}
		}
		if nsArgs == nil {
			return usagef("no node %q", *node)
		}
		pos = append([]string{""}, pos...)
	} else {
		if len(pos) < 3 || pos[1] != "--" {
			return usagef("exec POD -- CMD... (or exec --node NODE -- CMD...)")
		}
		c, err := dial(g)
		if err != nil {
			return err
		}
		p, err := findPod(c, pos[0])
		if err != nil {
			return err
		}
		nsArgs = []string{"--net=" + p.NetNS}
	}
	cmd := exec.Command("nsenter", append(append(nsArgs, "--"), pos[2:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	return cmd.Run()
}

func cmdPing(g globals, args []string, stdout, _ io.Writer) error {
	fs := newFlags("ping", "ping POD_A POD_B|IP")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("ping POD_A POD_B|IP")
	}
	c, err := dial(g)
	if err != nil {
		return err
	}
	a, err := findPod(c, pos[0])
	if err != nil {
		return err
	}
	dst := pos[1]
	if net.ParseIP(dst) == nil {
		b, err := findPod(c, dst)
		if err != nil {
			return err
		}
		dst = b.IP
	}
	out, err := exec.Command("nsenter", "--net="+a.NetNS, "--", "ping", "-c", "3", "-i", "0.2", "-W", "2", dst).CombinedOutput()
	fmt.Fprint(stdout, string(out))
	if err != nil {
		return fmt.Errorf("ping %s -> %s failed", pos[0], pos[1])
	}
	return nil
}

func cmdMetrics(g globals, args []string, stdout, _ io.Writer) error {
	fs := newFlags("metrics", "metrics NODE")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("metrics NODE")
	}
	c, err := dial(g)
	if err != nil {
		return err
	}
	m, err := c.Metrics(context.Background(), pos[0])
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, m)
	return nil
}

const ipamdUsage = "ipamd restart NODE | ipamd kill NODE [--signal SIG]"

func cmdIpamd(g globals, args []string, stdout, _ io.Writer) error {
	sub, args, err := subcommand(args, ipamdUsage, "restart", "kill")
	if err != nil {
		return err
	}
	usageLine := map[string]string{"restart": "ipamd restart NODE   (SIGKILL, start again, wait until it serves)",
		"kill": "ipamd kill NODE [--signal SIG]   (default KILL; the lab's --ipamd-restart policy then applies)"}[sub]
	fs := newFlags("ipamd "+sub, usageLine)
	var sig *string
	if sub == "kill" {
		sig = fs.String("signal", "KILL", "signal name or number")
	}
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("%s", usageLine)
	}
	if sub == "kill" {
		if _, err := lab.ParseSignal(*sig); err != nil {
			return usagef("--signal: %v", err)
		}
	}
	c, err := dial(g)
	if err != nil {
		return err
	}
	var st lab.IpamdState
	if sub == "restart" {
		st, err = c.RestartIpamd(context.Background(), pos[0])
	} else {
		st, err = c.SignalIpamd(context.Background(), pos[0], *sig)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "node %s: ipamd %s\n", pos[0], ipamdSummary(st))
	return nil
}
