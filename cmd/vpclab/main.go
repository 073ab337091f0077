// Command vpclab brings up and drives an EC2 networking lab: a fake
// region, its fabric, and nodes running ipamd with aws-cni.
//
//	sudo vpclab up [-f lab.yaml] [--nodes N] [--instance-type T] [--subnet-cidr C] [--env K=V]... [--foreground]
//	vpclab status [-o json] | pods add|del|list | exec POD -- CMD | ping A B
//	vpclab events [--action X] [--errors] [--follow] | faults add|list|clear | throttle set|off
//	vpclab metrics NODE | max-pods --instance-type T | down | gc | demo
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// usageError is a bad invocation: one line, exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

const usage = `usage: vpclab COMMAND [flags]

Lab lifecycle (root):
  up [-f FILE] [--name N] [--nodes N] [--instance-type T] [--subnet-cidr C] [--env K=V]... [--foreground]
  down [--name N]
  gc                         remove leftovers of dead labs
  demo                       bring up the default lab, show pods, throttling and exhaustion, tear down

Inspecting a running lab:
  status [-o table|json]
  pods add NAMESPACE/NAME --node NODE | pods del NAMESPACE/NAME | pods list
  exec POD -- CMD...         run a command in a pod (POD is NAMESPACE/NAME)
  exec --node NODE -- CMD... run a command on a node (its network and mount namespaces)
  ping POD_A POD_B|IP
  events [--action X] [--errors] [--follow] [-o json|table]
  faults add --action A (--code C | --latency D | --imds-lag D) [--count N] [--probability P] [--for D]
  faults list | faults clear
  throttle set [--scale X] [--action A --capacity N --refill R] | throttle off
  metrics NODE

Scenarios:
  scenario run FILE          run a YAML scenario (see scenarios/examples) and print PASS or FAIL

Offline:
  max-pods --instance-type T [--prefix-delegation] | max-pods --all
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "up":
		err = cmdUp(args[1:], stdout)
	case "serve-lab": // the background supervisor started by up
		err = cmdServeLab(args[1:], stdout)
	case "down":
		err = cmdDown(args[1:], stdout)
	case "gc":
		err = cmdGC(args[1:], stdout)
	case "status":
		err = cmdStatus(args[1:], stdout)
	case "pods":
		err = cmdPods(args[1:], stdout)
	case "exec":
		err = cmdExec(args[1:], stdout, stderr)
	case "ping":
		err = cmdPing(args[1:], stdout)
	case "events":
		err = cmdEvents(args[1:], stdout)
	case "faults":
		err = cmdFaults(args[1:], stdout)
	case "throttle":
		err = cmdThrottle(args[1:], stdout)
	case "metrics":
		err = cmdMetrics(args[1:], stdout)
	case "max-pods":
		err = cmdMaxPods(args[1:], stdout)
	case "demo":
		err = cmdDemo(args[1:], stdout)
	case "scenario":
		err = cmdScenario(args[1:], stdout)
	default:
		err = usagef("unknown command %q (vpclab help lists them)", args[0])
	}
	if err == nil {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "vpclab %s: %s\n", args[0], firstLine(err.Error()))
		return 2
	}
	fmt.Fprintf(stderr, "vpclab %s: %v\n", args[0], err)
	return 1
}

// firstLine folds a multi-line message (YAML errors) into one line.
func firstLine(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, " ")
}
