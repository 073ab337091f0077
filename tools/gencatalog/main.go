// Command gencatalog regenerates fakeec2/catalog/data/instance_types.json, the
// instance-type catalog fakeec2 serves from DescribeInstanceTypes and uses to
// enforce ENI, address and branch limits.
//
// Provenance: the catalog is the union of three public, machine-generated
// tables, read as data only:
//
//   - aws/amazon-vpc-cni-k8s pkg/vpc/vpc_ip_resource_limit.go (--cni): the
//     instance types the VPC CNI knows, with max ENIs, IPv4 per ENI, network
//     cards, default card, hypervisor and bare-metal flag. This set defines
//     which types exist in the catalog.
//   - aws/amazon-vpc-resource-controller-k8s pkg/aws/vpc/limits.go (--rc):
//     trunking compatibility and the branch-ENI limit per type.
//   - optionally, an EC2 DescribeInstanceTypes dump in JSON (--describe, gzip
//     accepted), e.g. the one moto ships: IPv6 per ENI, EFA, vCPUs, memory and
//     network performance. Where absent, IPv6 per ENI equals IPv4 per ENI (true
//     for every type in such dumps that supports IPv6).
//
// Usage:
//
//	go run ./tools/gencatalog --cni vpc_ip_resource_limit.go --rc limits.go \
//	    [--describe instance_types.json.gz] > fakeec2/catalog/data/instance_types.json
package main

import (
	"compress/gzip"
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/vpclab/vpclab/fakeec2/catalog"
)

func main() {
	cni := flag.String("cni", "", "path to the VPC CNI's vpc_ip_resource_limit.go")
	rc := flag.String("rc", "", "path to the VPC resource controller's limits.go")
	describe := flag.String("describe", "", "optional DescribeInstanceTypes JSON dump (map or list; .gz ok)")
	flag.Parse()
	if *cni == "" || *rc == "" {
		fmt.Fprintln(os.Stderr, "gencatalog: --cni and --rc are required")
		os.Exit(2)
	}
	if err := run(*cni, *rc, *describe, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gencatalog:", err)
		os.Exit(1)
	}
}

func run(cniPath, rcPath, describePath string, out io.Writer) error {
	cniMap, err := readLiteralMap(cniPath)
	if err != nil {
		return fmt.Errorf("read %s: %w", cniPath, err)
	}
	rcMap, err := readLiteralMap(rcPath)
	if err != nil {
		return fmt.Errorf("read %s: %w", rcPath, err)
	}
	desc := map[string]map[string]any{}
	if describePath != "" {
		if desc, err = readDescribe(describePath); err != nil {
			return fmt.Errorf("read %s: %w", describePath, err)
		}
	}
	var types []catalog.InstanceType
	for name, v := range cniMap {
		f := v.(map[string]any)
		t := catalog.InstanceType{
			Name:        name,
			MaxENIs:     asInt(f["ENILimit"]),
			IPv4PerENI:  asInt(f["IPv4Limit"]),
			DefaultCard: asInt(f["DefaultNetworkCardIndex"]),
			Hypervisor:  asString(f["HypervisorType"]),
			BareMetal:   asBool(f["IsBareMetal"]),
		}
		if t.Hypervisor == "unknown" {
			t.Hypervisor = ""
		}
		for _, c := range asList(f["NetworkCards"]) {
			cm := c.(map[string]any)
			t.Cards = append(t.Cards, catalog.NetworkCard{Index: asInt(cm["NetworkCardIndex"]), MaxENIs: asInt(cm["MaximumNetworkInterfaces"]), Performance: asString(cm["NetworkPerformance"])})
		}
		if r, ok := rcMap[name].(map[string]any); ok {
			t.Trunking = asBool(r["IsTrunkingCompatible"])
			t.BranchENIs = asInt(r["BranchInterface"])
		}
		t.IPv6PerENI, t.IPv6Supported = t.IPv4PerENI, true
		if d, ok := desc[name]; ok {
			applyDescribe(&t, d)
		}
		if len(t.Cards) == 0 {
			t.Cards = []catalog.NetworkCard{{Index: 0, MaxENIs: t.MaxENIs}}
		}
		// The VPC CNI's ENILimit is per card on multi-card types; EC2's
		// maximumNetworkInterfaces is the instance total, the sum over cards.
		if sum := cardSum(t.Cards); sum > t.MaxENIs {
			t.MaxENIs = sum
		}
		sort.Slice(t.Cards, func(i, j int) bool { return t.Cards[i].Index < t.Cards[j].Index })
		types = append(types, t)
	}
	sort.Slice(types, func(i, j int) bool { return types[i].Name < types[j].Name })
	// One type per line keeps diffs of regenerations readable.
	if _, err := io.WriteString(out, "[\n"); err != nil {
		return err
	}
	for i, t := range types {
		b, err := json.Marshal(t)
		if err != nil {
			return err
		}
		sep := ",\n"
		if i == len(types)-1 {
			sep = "\n"
		}
		if _, err := fmt.Fprintf(out, "%s%s", b, sep); err != nil {
			return err
		}
	}
	_, err = io.WriteString(out, "]\n")
	return err
}

func cardSum(cards []catalog.NetworkCard) int {
	n := 0
	for _, c := range cards {
		n += c.MaxENIs
	}
	return n
}

func applyDescribe(t *catalog.InstanceType, d map[string]any) {
	if v, ok := d["VCpuInfo"].(map[string]any); ok {
		t.VCPUs = asInt(v["DefaultVCpus"])
	}
	if v, ok := d["MemoryInfo"].(map[string]any); ok {
		t.MemoryMiB = asInt(v["SizeInMiB"])
	}
	n, ok := d["NetworkInfo"].(map[string]any)
	if !ok {
		return
	}
	t.NetworkPerformance = asString(n["NetworkPerformance"])
	if s, ok := n["Ipv6Supported"].(bool); ok {
		t.IPv6Supported = s
	}
	if v := asInt(n["Ipv6AddressesPerInterface"]); v > 0 || !t.IPv6Supported {
		t.IPv6PerENI = v
	}
	if e, ok := n["EfaInfo"].(map[string]any); ok {
		t.MaxEFA = asInt(e["MaximumEfaInterfaces"])
	}
	perf := map[int]string{}
	for _, c := range asList(n["NetworkCards"]) {
		if cm, ok := c.(map[string]any); ok {
			perf[asInt(cm["NetworkCardIndex"])] = asString(cm["NetworkPerformance"])
		}
	}
	for i := range t.Cards {
		if p := perf[t.Cards[i].Index]; p != "" && t.Cards[i].Performance == "" {
			t.Cards[i].Performance = p
		}
	}
}

func readDescribe(path string) (map[string]map[string]any, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return nil, err
		}
		r = gz
	}
	var raw any
	if err := json.NewDecoder(r).Decode(&raw); err != nil {
		return nil, err
	}
	out := map[string]map[string]any{}
	add := func(v any) {
		if m, ok := v.(map[string]any); ok {
			if name := asString(m["InstanceType"]); name != "" {
				out[name] = m
			}
		}
	}
	switch x := raw.(type) {
	case map[string]any:
		if list, ok := x["InstanceTypes"].([]any); ok {
			for _, v := range list {
				add(v)
			}
		} else {
			for _, v := range x {
				add(v)
			}
		}
	case []any:
		for _, v := range x {
			add(v)
		}
	}
	return out, nil
}

// readLiteralMap finds the first package-level map literal with string keys
// in a Go source file and evaluates it to plain values (maps, lists, scalars).
func readLiteralMap(path string) (map[string]any, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, 0)
	if err != nil {
		return nil, err
	}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.VAR {
			continue
		}
		for _, s := range gd.Specs {
			vs := s.(*ast.ValueSpec)
			for _, v := range vs.Values {
				cl, ok := v.(*ast.CompositeLit)
				if !ok {
					continue
				}
				if _, isMap := cl.Type.(*ast.MapType); !isMap {
					continue
				}
				m, ok := eval(cl).(map[string]any)
				if ok && len(m) > 0 {
					return m, nil
				}
			}
		}
	}
	return nil, fmt.Errorf("no map literal found")
}

func eval(e ast.Expr) any {
	switch x := e.(type) {
	case *ast.CompositeLit:
		if len(x.Elts) > 0 {
			if _, kv := x.Elts[0].(*ast.KeyValueExpr); kv {
				m := map[string]any{}
				for _, el := range x.Elts {
					kv := el.(*ast.KeyValueExpr)
					m[keyName(kv.Key)] = eval(kv.Value)
				}
				return m
			}
		}
		var l []any
		for _, el := range x.Elts {
			l = append(l, eval(el))
		}
		return l
	case *ast.UnaryExpr:
		return eval(x.X)
	case *ast.BasicLit:
		switch x.Kind {
		case token.STRING:
			s, _ := strconv.Unquote(x.Value)
			return s
		case token.INT:
			n, _ := strconv.Atoi(x.Value)
			return n
		}
		return x.Value
	case *ast.Ident:
		switch x.Name {
		case "true":
			return true
		case "false":
			return false
		}
		return x.Name
	}
	return nil
}

func keyName(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.Ident:
		return x.Name
	case *ast.BasicLit:
		s, _ := strconv.Unquote(x.Value)
		return s
	}
	return ""
}

func asInt(v any) int {
	switch x := v.(type) {
	case int:
		return x
	case float64:
		return int(x)
	}
	return 0
}

func asString(v any) string { s, _ := v.(string); return s }
func asBool(v any) bool     { b, _ := v.(bool); return b }
func asList(v any) []any    { l, _ := v.([]any); return l }
