package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"

	"github.com/vpclab/vpclab/internal/cli"
	"github.com/vpclab/vpclab/lab"
)

// show prints v as JSON for -o json, else runs table.
func (e env) show(format string, v any, table func() error) error {
	if format != "json" {
		return table()
	}
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// dialAs checks the -o format, then dials the lab.
func (e env) dialAs(format func() (string, error)) (string, *lab.Client, error) {
	f, err := format()
	if err != nil {
		return "", nil, err
	}
	c, err := e.dial()
	return f, c, err
}

// status reads the lab's status after checking the -o format.
func (e env) status(format func() (string, error)) (string, lab.Status, error) {
	f, c, err := e.dialAs(format)
	if err != nil {
		return "", lab.Status{}, err
	}
	s, err := c.Status(e.ctx)
	return f, s, err
}

func cmdStatus(e env, args []string) error {
	fs := flags("status [-o table|json]")
	format := fs.Output("table", "json")
	if _, err := fs.Parse(args, 0); err != nil {
		return err
	}
	f, s, err := e.status(format)
	if err != nil {
		return err
	}
	return e.show(f, s, func() error { return lab.WriteStatus(e.stdout, s) })
}

func cmdSG(e env, args []string) error {
	fs := flags("sg [-o table|json]")
	format := fs.Output("table", "json")
	if _, err := fs.Parse(args, 0); err != nil {
		return err
	}
	f, c, err := e.dialAs(format)
	if err != nil {
		return err
	}
	rep, err := c.SecurityGroups(e.ctx)
	if err != nil {
		return err
	}
	return e.show(f, rep, func() error { return lab.WriteSecurityGroups(e.stdout, rep) })
}

func cmdPods(e env, args []string) error {
	sub, fs, args, err := subFlags(args, map[string]string{"add": "pods add NAMESPACE/NAME... | --count N --prefix [NAMESPACE/]P [--node NODE] [--retry D] [--parallel N]", "del": "pods del NAMESPACE/NAME",
		"list": "pods list [-o table|json]"}, "add", "del", "list")
	if err != nil {
		return err
	}
	node := fs.String("node", "", "node for pods add (default the first)")
	format := fs.Output("table", "json")
	var b burst
	if sub == "add" {
		b.bind(fs)
	}
	want := map[string]int{"add": -1, "del": 1, "list": 0}[sub]
	pos, err := fs.Parse(args, want)
	if err != nil {
		return err
	}
	if sub == "list" {
		f, s, err := e.status(format)
		if err != nil {
			return err
		}
		return e.show(f, s.AllPods(), func() error { return lab.WritePods(e.stdout, s) })
	}
	if sub == "add" {
		refs, err := b.refs(pos)
		if err != nil {
			return cli.Usagef("%v", err)
		}
		c, err := e.dial()
		if err != nil {
			return err
		}
		return b.run(e, c, *node, refs)
	}
	ns, pod, err := lab.ParsePodRef(pos[0])
	if err != nil {
		return cli.Usagef("%v", err)
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	return c.DelPod(e.ctx, ns, pod)
}

// find enters a pod (or, with node set, a node): nsenter arguments and the
// pod's address.
func (e env) find(pod, node string) ([]string, string, error) {
	_, s, err := e.status(func() (string, error) { return "", nil })
	if err != nil {
		return nil, "", err
	}
	args, ip, err := s.Enter(pod, node)
	if err != nil {
		return nil, "", cli.Usagef("%v", err)
	}
	return args, ip, nil
}

func cmdExec(e env, args []string) error {
	fs := flags("exec POD -- CMD... | exec --node NODE -- CMD...")
	node := fs.String("node", "", "run on this node (its network and mount namespaces) instead of in a pod")
	pos, err := fs.Parse(args, -1)
	if err != nil {
		return err
	}
	target := ""
	if *node == "" && len(pos) > 0 && pos[0] != "--" {
		target, pos = pos[0], pos[1:]
	}
	if len(pos) < 2 || pos[0] != "--" || (target == "") == (*node == "") {
		return cli.Usagef("exec POD -- CMD... (or exec --node NODE -- CMD...)")
	}
	nsArgs, _, err := e.find(target, *node)
	if err != nil {
		return err
	}
	cmd := exec.Command("nsenter", append(append(nsArgs, "--"), pos[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, e.stdout, e.stderr
	return cmd.Run()
}

func cmdPing(e env, args []string) error {
	pos, err := flags("ping POD_A POD_B|IP").Parse(args, 2)
	if err != nil {
		return err
	}
	from, dst, err := e.find(pos[0], "")
	if err == nil && net.ParseIP(pos[1]) == nil {
		_, dst, err = e.find(pos[1], "")
	} else if err == nil {
		dst = pos[1]
	}
	if err != nil {
		return err
	}
	out, err := exec.Command("nsenter", append(from, "--", "ping", "-c", "3", "-i", "0.2", "-W", "2", dst)...).CombinedOutput()
	fmt.Fprint(e.stdout, string(out))
	if err != nil {
		return fmt.Errorf("ping %s -> %s failed", pos[0], pos[1])
	}
	return nil
}

func cmdMetrics(e env, args []string) error {
	pos, err := flags("metrics NODE").Parse(args, 1)
	if err != nil {
		return err
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	m, err := c.Metrics(e.ctx, pos[0])
	fmt.Fprint(e.stdout, m)
	return err
}

func cmdIMDS(e env, args []string) error {
	pos, err := flags("imds NODE [PATH]   (below /latest/, default meta-data/; fetched inside the node with an IMDSv2 token, as ipamd does)").Parse(args, -1)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return cli.Usagef("usage: vpclab imds NODE [PATH]")
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	path := ""
	if len(pos) == 2 {
		path = pos[1]
	}
	out, err := c.IMDS(e.ctx, pos[0], path)
	if err != nil {
		return err
	}
	fmt.Fprint(e.stdout, out)
	if out != "" && out[len(out)-1] != '\n' {
		fmt.Fprintln(e.stdout)
	}
	return nil
}

func cmdIpamd(e env, args []string) error {
	sub, fs, args, err := subFlags(args, map[string]string{"restart": "ipamd restart NODE   (SIGKILL, start again, wait until it serves)",
		"kill": "ipamd kill NODE [--signal SIG]   (default KILL; the lab's --ipamd-restart policy then applies)"}, "restart", "kill")
	if err != nil {
		return err
	}
	sig := fs.String("signal", "KILL", "signal name or number (kill)")
	pos, err := fs.Parse(args, 1)
	if err != nil {
		return err
	}
	if _, err := lab.ParseSignal(*sig); err != nil {
		return cli.Usagef("--signal: %v", err)
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	var st lab.IpamdState
	if sub == "restart" {
		st, err = c.RestartIpamd(e.ctx, pos[0])
	} else {
		st, err = c.SignalIpamd(e.ctx, pos[0], *sig)
	}
	if err == nil {
		fmt.Fprintf(e.stdout, "node %s: ipamd %s\n", pos[0], st.Summary())
	}
	return err
}
