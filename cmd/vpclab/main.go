// Command vpclab brings up and drives an EC2 networking lab: a fake
// region, its fabric, and nodes running ipamd with aws-cni. It is flag
// wiring only; labs are run and reached through package lab.
//
//	vpclab up [-f lab.yaml] [--nodes N] … | down | gc | demo | status | pods | exec | ping
//	vpclab events | faults | throttle | metrics | ipamd | max-pods | scenario run
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/vpclab/vpclab/lab"
)

// usageError is a bad invocation: one line, exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// helpRequested carries a command's usage to print on stdout (exit 0).
type helpRequested struct{ text string }

func (h helpRequested) Error() string { return h.text }

const usage = `usage: vpclab [--name N] COMMAND [flags]

--name N selects the lab (default "vpclab"); it may come before or after COMMAND.

Lab lifecycle (root):
  up [-f FILE] [--nodes N] [--instance-type T] [--subnet-cidr C] [--env K=V]... [--ipamd-restart D|never] [--foreground]
  down                       tear down a lab started by up
  gc                         remove what dead labs left (a lab is dead when its owner process is gone)
  demo                       bring up a lab, show pods, throttling and exhaustion, tear down

Inspecting a running lab:
  status [-o table|json]
  pods add NAMESPACE/NAME [--node NODE] | pods del NAMESPACE/NAME | pods list [-o table|json]
  exec POD -- CMD...         run a command in a pod (POD is NAMESPACE/NAME)
  exec --node NODE -- CMD... run a command on a node (its network and mount namespaces)
  ping POD_A POD_B|IP
  events [--action X] [--errors] [--follow] [-o json|table]
  faults add --action A (--code C | --latency D | --imds-lag D) [--count N] [--probability P] [--for D]
  faults list [-o table|json] | faults clear
  throttle set [--scale X] [--action A --capacity N --refill R] | throttle off
  metrics NODE
  ipamd restart NODE | ipamd kill NODE [--signal SIG]

Scenarios:
  scenario run FILE          run a YAML scenario (see scenarios/examples) and print PASS or FAIL

Offline:
  max-pods --instance-type T [--prefix-delegation] | max-pods --all

Every command takes --help.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// commands maps each command to its implementation.
var commands = map[string]func(g globals, args []string, stdout, stderr io.Writer) error{
	"up":        cmdUp,
	"serve-lab": cmdServeLab, // the background supervisor started by up
	"down":      cmdDown,
	"gc":        cmdGC,
	"status":    cmdStatus,
	"pods":      cmdPods,
	"exec":      cmdExec,
	"ping":      cmdPing,
	"events":    cmdEvents,
	"faults":    cmdFaults,
	"throttle":  cmdThrottle,
	"metrics":   cmdMetrics,
	"ipamd":     cmdIpamd,
	"max-pods":  cmdMaxPods,
	"demo":      cmdDemo,
	"scenario":  cmdScenario,
}

// globals are the flags every command takes, wherever they appear.
type globals struct {
	name    string
	nameSet bool
}

// splitGlobals takes --name out of args (before "--"), so it works before
// or after the command and its subcommand.
func splitGlobals(args []string) (globals, []string, error) {
	g := globals{name: "vpclab"}
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		switch {
		case a == "--name" || a == "-name":
			if i+1 >= len(args) {
				return g, nil, usagef("--name needs a value")
			}
			g.name, g.nameSet = args[i+1], true
			i++
		case strings.HasPrefix(a, "--name=") || strings.HasPrefix(a, "-name="):
			_, g.name, _ = strings.Cut(a, "=")
			g.nameSet = true
		default:
			rest = append(rest, a)
		}
	}
	return g, rest, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	g, args, err := splitGlobals(args)
	if err != nil {
		fmt.Fprintf(stderr, "vpclab: %v\n", err)
		return 2
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd := args[0]
	switch cmd {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	f, ok := commands[cmd]
	if !ok {
		fmt.Fprintf(stderr, "vpclab: unknown command %q (vpclab help lists them)\n", cmd)
		return 2
	}
	err = f(g, args[1:], stdout, stderr)
	var help helpRequested
	var ue usageError
	var nre *lab.NotRunningError
	var re *lab.RequestError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &help):
		fmt.Fprint(stdout, help.text)
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "vpclab %s: %s\n", cmd, lab.OneLine(err.Error()))
		return 2
	case errors.As(err, &re) && re.BadRequest():
		fmt.Fprintf(stderr, "vpclab %s: %s\n", cmd, lab.OneLine(err.Error()))
		return 2
	case errors.As(err, &nre):
		fmt.Fprintf(stderr, "vpclab %s: %s\n", cmd, err)
		return 1
	}
	fmt.Fprintf(stderr, "vpclab %s: %s\n", cmd, lab.OneLine(err.Error()))
	return 1
}

// flags is a command's flag set with its usage line.
type flags struct {
	*flag.FlagSet
	usage string
}

func newFlags(name, usageLine string) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &flags{FlagSet: fs, usage: usageLine}
}

// help renders the command's usage and flags.
func (f *flags) help() string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: vpclab %s\n", f.usage)
	n := 0
	f.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		b.WriteString("\nflags:\n")
		f.SetOutput(&b)
		f.PrintDefaults()
		f.SetOutput(io.Discard)
	}
	b.WriteString("  --name string\n    \tlab name (default \"vpclab\"; before or after the command)\n")
	return b.String()
}

// parse parses flags that may come before or after positional arguments;
// everything from "--" on is positional.
func (f *flags) parse(args []string) ([]string, error) {
	var tail []string
	for i, a := range args {
		if a == "--" {
			args, tail = args[:i], args[i:]
			break
		}
	}
	var pos []string
	for {
		if err := f.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, helpRequested{f.help()}
			}
			return nil, usagef("%v", err)
		}
		rest := f.Args()
		if len(rest) == 0 {
			return append(pos, tail...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// noArgs refuses positional arguments.
func noArgs(pos []string) error {
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	return nil
}

func needRoot() error {
	if os.Geteuid() != 0 {
		return usagef("must run as root (network and mount namespaces)")
	}
	return nil
}

// subcommand splits "pods add …": it returns the subcommand, or the
// group's help.
func subcommand(args []string, usageText string, valid ...string) (string, []string, error) {
	if len(args) == 0 {
		return "", nil, usagef("%s", strings.TrimSpace(usageText))
	}
	switch args[0] {
	case "-h", "--help", "help":
		return "", nil, helpRequested{"usage: vpclab " + usageText + "\n(each subcommand takes --help)\n"}
	}
	for _, v := range valid {
		if args[0] == v {
			return v, args[1:], nil
		}
	}
	return "", nil, usagef("%s %q: want %s", strings.Fields(usageText)[0], args[0], orList(valid))
}

// orList is "a, b or c".
func orList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// dial reaches the lab the globals name.
func dial(g globals) (*lab.Client, error) {
	return lab.Dial(g.name, "")
}

// nameHint is " --name N" when a lab name was given, for printed follow-ups.
func (g globals) nameHint() string {
	if !g.nameSet || g.name == "vpclab" {
		return ""
	}
	return " --name " + g.name
}
