// Command vpclab brings up and drives an EC2 networking lab: a fake
// region, its fabric, and nodes running ipamd with aws-cni (vpclab help).
// It is flag wiring only: labs are built, run and reached through lab.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/vpclab/vpclab/internal/cli"
	"github.com/vpclab/vpclab/lab"
	"github.com/vpclab/vpclab/scenarios"
)

const usage = `usage: vpclab [--name N] COMMAND [flags]   (--name selects the lab, default "vpclab")

Lab lifecycle (root):
  up                 bring a lab up (-f FILE, --nodes, --instance-type, --subnet-cidr, --env K=V, --cni, --kubernetes, --foreground …)
  down | gc          tear down a lab started by up | remove what dead labs left
  demo               a lab with pods, a throttling episode and an exhausted subnet, torn down
Inspecting a running lab:
  status             nodes, ipamd, ENIs (IMDS column: how the node's IMDS lags EC2), subnets, pods (-o json)
  pods add|del|list  NAMESPACE/NAME... [--node NODE] [--retry D] [--parallel N] [--count N --prefix P]
  imds NODE [PATH]   the node's instance metadata, fetched inside the node with a token, as ipamd does
  exec POD|--node NODE -- CMD...   ping POD_A POD_B|IP   metrics NODE
  events             CloudTrail-shaped records of EC2 calls (--action, --errors, --follow, -o table)
  sg                 security groups: rules, members, and packets each ENI's groups dropped (-o json)
  ui                 a live page: topology, timeline of pools, pods and EC2 calls, the calls' records (--listen)
  faults add|list|clear   throttle set|off   ipamd restart|kill NODE
Kubernetes labs (up --kubernetes):
  kubectl ARGS...    the lab's kubectl, admin kubeconfig   image import TAR   into every node's containerd
Scenarios and offline:
  scenario run|diff|list  run a scenario (YAML or built-in) and print PASS or FAIL; compare CNIs side by side
  max-pods           --instance-type T [--prefix-delegation] | --all

Every command takes --help.
`

// nameFooter closes every command's help.
const nameFooter = "  --name string\n    \tlab name (default \"vpclab\"; before or after the command)\n"

// env is what every command gets: the lab it names, where to write, and a
// context cancelled by SIGINT or SIGTERM (commands that build labs tear
// them down on it instead of dying).
type env struct {
	name   string // the lab: --name, or "vpclab"
	given  string // --name as given ("" without it)
	ctx    context.Context
	stdout io.Writer
	stderr io.Writer
}

var commands = map[string]func(e env, args []string) error{
	"up": cmdUp, "serve-lab": cmdServeLab, "down": cmdDown, "gc": cmdGC, "demo": cmdDemo,
	"status": cmdStatus, "sg": cmdSG, "pods": cmdPods, "imds": cmdIMDS, "exec": cmdExec, "ping": cmdPing, "metrics": cmdMetrics, "ipamd": cmdIpamd,
	"events": cmdEvents, "faults": cmdFaults, "throttle": cmdThrottle, "max-pods": cmdMaxPods, "scenario": cmdScenario,
	"kubectl": cmdKubectl, "image": cmdImage, "ui": cmdUI,
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	given, _, rest, err := cli.TakeFlag(args, "name")
	if err != nil {
		fmt.Fprintf(stderr, "vpclab: %v\n", err)
		return 2
	}
	e := env{name: cmp.Or(given, "vpclab"), given: given, ctx: ctx, stdout: stdout, stderr: stderr}
	if len(rest) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if h := rest[0]; h == "-h" || h == "--help" || h == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	f, ok := commands[rest[0]]
	if !ok {
		fmt.Fprintf(stderr, "vpclab: unknown command %q (vpclab help lists them)\n", rest[0])
		return 2
	}
	return cli.Exit("vpclab", rest[0], f(e, rest[1:]), func(err error) bool {
		var re *lab.RequestError
		return errors.As(err, &re) && re.BadRequest() || errors.Is(err, lab.ErrNoCNI) || errors.As(err, new(*scenarios.UsageError))
	}, stdout, stderr)
}

// flags starts a command's flags.
func flags(usage string) *cli.Flags { return cli.NewFlags("vpclab", usage, nameFooter) }

// subFlags splits "group sub …" (see cli.SubFlags).
func subFlags(args []string, usages map[string]string, subs ...string) (string, *cli.Flags, []string, error) {
	return cli.SubFlags("vpclab", nameFooter, args, usages, subs...)
}

// rootCommand parses a command that takes no arguments and needs root.
func rootCommand(usage string, args []string) error {
	if _, err := flags(usage).Parse(args, 0); err != nil {
		return err
	}
	return needRoot()
}

func needRoot() error { return cli.NeedRoot("network and mount namespaces") }

// dial reaches the lab e names.
func (e env) dial() (*lab.Client, error) { return lab.Dial(e.name, "") }

// nameHint is " --name N" when a lab name was given, for printed follow-ups.
func (e env) nameHint() string {
	if e.given == "" || e.given == "vpclab" {
		return ""
	}
	return " --name " + e.name
}
