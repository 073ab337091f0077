package scenarios

import (
	"embed"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
)

// builtinFS holds the built-in scenarios, one YAML file each.
//
//go:embed builtin/*.yaml
var builtinFS embed.FS

// Builtin are the built-in scenarios (builtin/*.yaml), in file name order.
var Builtin []Scenario

// init loads the built-ins once every package variable (the action kinds
// the decoder looks up) is set.
func init() { Builtin = mustBuiltin() }

func mustBuiltin() []Scenario {
	out, err := loadBuiltin()
	if err != nil {
		panic(err) // the embedded files are the package's; its tests load them
	}
	return out
}

func loadBuiltin() ([]Scenario, error) {
	files, err := builtinFS.ReadDir("builtin")
	if err != nil {
		return nil, err
	}
	var out []Scenario
	for _, f := range files {
		b, err := builtinFS.ReadFile(path.Join("builtin", f.Name()))
		if err != nil {
			return nil, err
		}
		s, err := Parse(b, "builtin/"+f.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// BuiltinSource returns the YAML of the built-in scenario named (or
// slugged) name, or whose file (builtin/NAME.yaml) name names.
func BuiltinSource(name string) ([]byte, error) {
	i := builtinIndex(name)
	if i < 0 {
		return nil, fmt.Errorf("no built-in scenario %q", name)
	}
	files, _ := builtinFS.ReadDir("builtin")
	return builtinFS.ReadFile(path.Join("builtin", files[i].Name()))
}

// builtinIndex is the index in Builtin of the scenario arg names (its
// name, its slug, or its file's name without .yaml), or -1.
func builtinIndex(arg string) int {
	files, _ := builtinFS.ReadDir("builtin")
	for i, s := range Builtin {
		if s.Name == arg || Slug(s.Name) == arg || strings.TrimSuffix(files[i].Name(), ".yaml") == arg {
			return i
		}
	}
	return -1
}

// fastTimers are the pool timers scaled for CI (timers: fast): the VPC
// CNI's 5 s tick, 30 s decrease spacing, 1 min ENI lifetime and 30 s
// cooldown would make each scenario minutes long without changing its
// decisions. The real VPC CNI ignores the VPCLAB_* knobs; of these it has
// only IP_COOLDOWN_PERIOD.
var fastTimers = map[string]string{"VPCLAB_POOL_INTERVAL": "100ms", "VPCLAB_DECREASE_INTERVAL": "200ms", "VPCLAB_MIN_ENI_LIFETIME": "0s",
	"VPCLAB_IP_COOLDOWN": "0s", "IP_COOLDOWN_PERIOD": "0", "VPCLAB_INSUFFICIENT_CIDR_COOLDOWN": "500ms", "VPCLAB_RECONCILE_INTERVAL": "2s", "VPCLAB_SG_SYNC_INTERVAL": "2s"}

// timerEnv is env with the scenario's timer preset under it (env wins).
func timerEnv(timers string, env map[string]string) map[string]string {
	if timers != "fast" {
		return env
	}
	out := maps.Clone(fastTimers)
	maps.Copy(out, env)
	return out
}

// FastTimers lists the environment timers: fast sets, sorted "K=V".
func FastTimers() []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(fastTimers)) {
		out = append(out, k+"="+fastTimers[k])
	}
	return out
}

//go:embed template.yaml
var templateYAML []byte

// Template is the commented scenario `vpclab scenario new` writes.
func Template() []byte { return templateYAML }
