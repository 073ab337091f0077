// Command genparams regenerates fakeec2/ec2query/data/params.json: for every EC2
// action fakeec2 serves, the top-level Query API parameter names the action
// accepts. fakeec2 answers any other parameter with UnknownParameter, as
// EC2 does.
//
// Provenance: the names are read, as data, from aws-sdk-go-v2's generated
// ec2query serializers (service/ec2/serializers.go): each action's
// awsEc2query_serializeOpDocument<Action>Input function sets exactly the
// keys of the action's input shape (object.Key / object.FlatKey).
//
// Usage (the SDK module's directory comes from the module cache):
//
//	go run ./tools/genparams $(go list -m -f '{{.Dir}}' github.com/aws/aws-sdk-go-v2/service/ec2) > fakeec2/ec2query/data/params.json
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
)

var (
	funcRE = regexp.MustCompile(`(?m)^func awsEc2query_serializeOpDocument(\w+)Input\(`)
	keyRE  = regexp.MustCompile(`object\.(?:Flat)?Key\("(\w+)"\)`)
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: genparams SDK_EC2_MODULE_DIR > fakeec2/ec2query/data/params.json")
		os.Exit(2)
	}
	b, err := os.ReadFile(filepath.Join(os.Args[1], "serializers.go"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "genparams:", err)
		os.Exit(1)
	}
	src := string(b)
	bodies := map[string]string{}
	locs := funcRE.FindAllStringSubmatchIndex(src, -1)
	for i, l := range locs {
		end := len(src)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		body := src[l[1]:end]
		if j := strings.Index(body, "\n}\n"); j >= 0 {
			body = body[:j]
		}
		bodies[src[l[2]:l[3]]] = body
	}
	out := map[string][]string{}
	actions := ec2query.Actions()
	sort.Strings(actions)
	for _, a := range actions {
		body, ok := bodies[a]
		if !ok {
			fmt.Fprintf(os.Stderr, "genparams: no serializer for %s in the SDK\n", a)
			os.Exit(1)
		}
		keys := []string{}
		for _, m := range keyRE.FindAllStringSubmatch(body, -1) {
			keys = append(keys, m[1])
		}
		sort.Strings(keys)
		out[a] = keys
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "genparams:", err)
		os.Exit(1)
	}
}
