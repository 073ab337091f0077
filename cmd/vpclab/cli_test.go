package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vpclab/vpclab/internal/labtest"
	"github.com/vpclab/vpclab/lab"
	"github.com/vpclab/vpclab/scenarios"
)

// cliBins builds vpclab and the node binaries into one directory, as make
// build does, once for the plain tests.
var cliBins = sync.OnceValues(func() (string, error) {
	return labtest.Build("vpclab", "ipamd", "aws-cni", "aws-vpc-cni", "egress-cni", labtest.RefPlugins)
})

func buildCLI(t *testing.T) string {
	t.Helper()
	dir, err := cliBins()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func vpclab(t *testing.T, dir string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(dir, "vpclab"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

func labName() string { return labtest.Name("c", 5) }

func TestMaxPodsPublished(t *testing.T) {
	dir := buildCLI(t)
	for typ, want := range map[string]string{"t3.nano": "4", "t3.micro": "4", "t3.small": "11", "t3.medium": "17", "t3.large": "35",
		"t3.xlarge": "58", "t3.2xlarge": "58", "m5.large": "29", "m5.xlarge": "58", "m5.24xlarge": "737", "c5.18xlarge": "737", "p4d.24xlarge": "737"} {
		code, out, errs := vpclab(t, dir, "max-pods", "--instance-type", typ)
		if code != 0 || strings.TrimSpace(out) != want {
			t.Errorf("max-pods %s = %q (exit %d, %s), want %s", typ, out, code, errs, want)
		}
	}
	if _, out, _ := vpclab(t, dir, "max-pods", "--instance-type", "m5.large", "--prefix-delegation"); strings.TrimSpace(out) != "110" {
		t.Errorf("m5.large with prefixes: %q, want 110", out)
	}
	if _, out, _ := vpclab(t, dir, "max-pods", "--instance-type", "m5.large", "--custom-networking"); strings.TrimSpace(out) != "20" {
		t.Errorf("max-pods m5.large --custom-networking = %q, want 20 (one ENI fewer: 2 × 9 + 2)", out)
	}
	code, out, _ := vpclab(t, dir, "max-pods", "--all")
	if code != 0 || !strings.Contains(out, "m5.large") || len(strings.Split(out, "\n")) < 1000 {
		t.Errorf("max-pods --all: exit %d, %d lines", code, len(strings.Split(out, "\n")))
	}
}

// TestCLIErrors covers each error path: one line naming the problem, exit
// code 2, nothing left behind.
func TestCLIErrors(t *testing.T) {
	dir := buildCLI(t)
	yamlDir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(yamlDir, name)
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	name := labName()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"up", "--name", name, "--nodes", "x"}, "invalid value"},
		{[]string{"up", "--name", name, "--bogus"}, "flag provided but not defined"},
		{[]string{"up", "--name", name, "-f", write("bad.yaml", "nodes: [unclosed")}, "bad.yaml"},
		{[]string{"up", "--name", name, "-f", write("unknown.yaml", "vpcz: 1\n")}, "vpcz"},
		{[]string{"up", "--name", name, "--instance-type", "m9.gigantic"}, `unknown instance type`},
		{[]string{"up", "--name", name, "-f", write("overlap.yaml", "vpcCidr: 10.0.0.0/16\nsubnets: [{name: a, cidr: 10.0.0.0/24}, {name: b, cidr: 10.0.0.128/25}]\nnodes: [{name: n, instanceType: m5.large}]\n")}, "overlaps"},
		{[]string{"up", "--name", name, "--subnet-cidr", "172.16.0.0/24"}, "not inside vpcCidr"},
		{[]string{"up", "--name", "Bad_Name"}, "name"},
		{[]string{"up", "--name", name, "--env", "NOEQUALS"}, "KEY=VALUE"},
		{[]string{"status", "-o", "yaml"}, "-o"},
		{[]string{"pods", "frob"}, "want add, del or list"},
		{[]string{"max-pods"}, "--instance-type is required"},
		{[]string{"max-pods", "--instance-type", "m9.gigantic"}, "unknown instance type"},
		{[]string{"exec", "default/x"}, "exec POD -- CMD"},
		{[]string{"faults", "add", "--action", "X"}, "needs a code"},
		{[]string{"throttle", "sideways"}, "want set or off"},
	}
	for _, tc := range cases {
		code, out, errs := vpclab(t, dir, tc.args...)
		lines := strings.Split(strings.TrimSpace(errs), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(errs, tc.want) {
			t.Errorf("vpclab %v: exit %d, stderr %q (want one line with %q), stdout %q", tc.args, code, errs, tc.want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(lab.DefaultStateDir, name)); err == nil {
		t.Errorf("a failed up left %s", filepath.Join(lab.DefaultStateDir, name))
	}
	// Without root (from a directory nobody can read).
	pub, err := os.MkdirTemp("", "vpclab-pub")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(pub)
	os.Chmod(pub, 0o755)
	b, _ := os.ReadFile(filepath.Join(dir, "vpclab"))
	os.WriteFile(filepath.Join(pub, "vpclab"), b, 0o755)
	cmd := exec.Command(filepath.Join(pub, "vpclab"), "up", "--name", name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(errb.String(), "root") {
		t.Errorf("up without root: %v %q", err, errb.String())
	}
	// Commands against a lab that is not running.
	if code, _, errs := vpclab(t, dir, "status", "--name", name); code != 1 || !strings.Contains(errs, "no running lab") {
		t.Errorf("status of no lab: exit %d %q", code, errs)
	}
}

// TestCLIFlow drives up/status/pods/exec/ping/events/faults/throttle/
// metrics/down as a user would.
func TestCLIFlow(t *testing.T) {
	dir := buildCLI(t)
	name := labName()
	t.Cleanup(func() { vpclab(t, dir, "down", "--name", name); vpclab(t, dir, "gc", "--name", name) })
	code, out, errs := vpclab(t, dir, "up", "--name", name, "--nodes", "2", "--env", "VPCLAB_POOL_INTERVAL=100ms")
	if code != 0 {
		t.Fatalf("up: exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"EC2 API: http://127.0.0.1:", "node node-1", "node node-2", "is up"} {
		if !strings.Contains(out, want) {
			t.Errorf("up output lacks %q:\n%s", want, out)
		}
	}
	if code, _, errs := vpclab(t, dir, "up", "--name", name); code != 2 || !strings.Contains(errs, "already exists") {
		t.Errorf("second up: exit %d %q", code, errs)
	}
	code, out, errs = vpclab(t, dir, "status", "--name", name, "-o", "json")
	if code != 0 {
		t.Fatalf("status: %d %s", code, errs)
	}
	var st lab.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	if !strings.HasPrefix(st.EC2Endpoint, "http://127.0.0.1:") || len(st.Nodes) != 2 || st.Nodes[0].Name != "node-1" || st.Nodes[0].InstanceID == "" || st.Nodes[0].InstanceType != "m5.large" {
		t.Fatalf("status: %+v", st)
	}
	// The AWS CLI can inspect the running lab.
	if _, err := os.Stat("/usr/bin/aws"); err == nil {
		cmd := exec.Command("/usr/bin/aws", "--endpoint-url", st.EC2Endpoint, "--region", st.Region, "ec2", "describe-instances", "--output", "json")
		cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=x", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_PAGER=")
		b, err := cmd.Output()
		if err != nil || !strings.Contains(string(b), st.Nodes[0].InstanceID) {
			t.Errorf("aws ec2 describe-instances against the lab: %v %s", err, b)
		}
	}
	for _, p := range []struct{ pod, node string }{{"default/a", "node-1"}, {"default/b", "node-2"}} {
		if code, out, errs := vpclab(t, dir, "pods", "add", p.pod, "--node", p.node, "--name", name); code != 0 || !strings.Contains(out, "on "+p.node) {
			t.Fatalf("pods add %s: %d %s %s", p.pod, code, out, errs)
		}
	}
	if code, out, _ := vpclab(t, dir, "pods", "list", "--name", name); code != 0 || !strings.Contains(out, "default/a") || !strings.Contains(out, "default/b") {
		t.Errorf("pods list: %s", out)
	}
	if code, out, errs := vpclab(t, dir, "ping", "default/a", "default/b", "--name", name); code != 0 || !strings.Contains(out, "0% packet loss") {
		t.Errorf("ping: %d %s %s", code, out, errs)
	}
	checkSecurityGroupsWithAWSCLI(t, dir, name, st)
	checkUI(t, dir, name, st)
	if code, out, _ := vpclab(t, dir, "exec", "--name", name, "default/a", "--", "ip", "-4", "addr", "show", "eth0"); code != 0 || !strings.Contains(out, "/32") {
		t.Errorf("exec: %d %s", code, out)
	}
	if code, out, _ := vpclab(t, dir, "exec", "--name", name, "--node", "node-1", "--", "ls", "/var/run/aws-node"); code != 0 || !strings.Contains(out, "ipamd.sock") {
		t.Errorf("exec --node: %d %s", code, out)
	}
	code, out, _ = vpclab(t, dir, "events", "--name", name, "--action", "CreateNetworkInterface")
	if code != 0 || !strings.Contains(out, `"eventName":"CreateNetworkInterface"`) {
		t.Errorf("events: %d %s", code, out)
	}
	if code, out, errs := vpclab(t, dir, "faults", "add", "--name", name, "--action", "AssignPrivateIpAddresses", "--code", "RequestLimitExceeded", "--count", "2"); code != 0 || !strings.Contains(out, "added") {
		t.Errorf("faults add: %d %s %s", code, out, errs)
	}
	if _, out, _ := vpclab(t, dir, "faults", "list", "--name", name); !strings.Contains(out, "RequestLimitExceeded") {
		t.Errorf("faults list: %s", out)
	}
	if code, _, _ := vpclab(t, dir, "faults", "clear", "--name", name); code != 0 {
		t.Errorf("faults clear: %d", code)
	}
	if code, out, _ := vpclab(t, dir, "throttle", "set", "--name", name, "--action", "AssignPrivateIpAddresses", "--capacity", "2", "--refill", "0.5"); code != 0 || !strings.Contains(out, "on") {
		t.Errorf("throttle set: %d %s", code, out)
	}
	if code, _, _ := vpclab(t, dir, "throttle", "off", "--name", name); code != 0 {
		t.Errorf("throttle off: %d", code)
	}
	if code, out, _ := vpclab(t, dir, "metrics", "node-1", "--name", name); code != 0 || !strings.Contains(out, "awscni_assigned_ip_addresses 1") {
		t.Errorf("metrics: %d %s", code, out)
	}
	if code, out, _ := vpclab(t, dir, "status", "--name", name); code != 0 || !strings.Contains(out, "NODE") || !strings.Contains(out, "default/a") {
		t.Errorf("status table: %s", out)
	}
	if code, out, _ := vpclab(t, dir, "pods", "del", "default/a", "--name", name); code != 0 {
		t.Errorf("pods del: %d %s", code, out)
	}
	if code, out, errs := vpclab(t, dir, "down", "--name", name); code != 0 || !strings.Contains(out, "down") {
		t.Fatalf("down: %d %s %s", code, out, errs)
	}
	time.Sleep(200 * time.Millisecond)
	if b, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(b), name+"-") {
		t.Errorf("namespaces left after down:\n%s", b)
	}
	for _, f := range []string{name, name + ".log", name + ".sock"} {
		if _, err := os.Stat(filepath.Join(lab.DefaultStateDir, f)); err == nil {
			t.Errorf("%s left after down", filepath.Join(lab.DefaultStateDir, f))
		}
	}
}

// checkSecurityGroupsWithAWSCLI drives a running lab's security groups
// with the AWS CLI alone: node-2's ENIs into a new group drops a → b, an
// ICMP rule lets it through (status and events show both), revoking the
// rule drops it again; node-2 then goes back to the default group.
func checkSecurityGroupsWithAWSCLI(t *testing.T, dir, name string, st lab.Status) {
	t.Helper()
	awsCLI := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("/usr/bin/aws", append([]string{"--endpoint-url", st.EC2Endpoint, "--region", st.Region, "--output", "text", "ec2"}, args...)...)
		cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=x", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_PAGER=")
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("aws ec2 %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		return strings.TrimSpace(string(b))
	}
	pings := func() bool {
		code, _, _ := vpclab(t, dir, "ping", "default/a", "default/b", "--name", name)
		return code == 0
	}
	cidr := awsCLI("describe-vpcs", "--vpc-ids", st.VPCID, "--query", "Vpcs[0].CidrBlock")
	def := awsCLI("describe-security-groups", "--filters", "Name=vpc-id,Values="+st.VPCID, "Name=group-name,Values=default", "--query", "SecurityGroups[0].GroupId")
	sg := awsCLI("create-security-group", "--group-name", "web", "--description", "web", "--vpc-id", st.VPCID, "--query", "GroupId")
	enis := strings.Fields(awsCLI("describe-network-interfaces", "--filters", "Name=attachment.instance-id,Values="+st.Nodes[1].InstanceID, "--query", "NetworkInterfaces[].NetworkInterfaceId"))
	if len(enis) == 0 {
		t.Fatal("node-2 has no ENIs")
	}
	for _, e := range enis {
		awsCLI("modify-network-interface-attribute", "--network-interface-id", e, "--groups", sg)
	}
	if pings() {
		t.Errorf("a → b passed with node-2 in %s (no inbound rule)", sg)
	}
	// vpclab sg names the group, its members and the inbound drops.
	code, out, errs := vpclab(t, dir, "sg", "--name", name, "-o", "json")
	var rep lab.SGReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("sg: %d %s %s", code, out, errs)
	}
	dropped := uint64(0)
	for _, e := range rep.ENIs {
		if slices.Contains(enis, e.ID) && e.Node == "node-2" {
			dropped += e.Drops.Inbound
		}
	}
	if dropped == 0 || !slices.ContainsFunc(rep.Groups, func(g lab.SGStatus) bool { return g.ID == sg && len(g.Members) == len(enis) }) {
		t.Errorf("sg: want %s with node-2's %d ENIs as members and inbound drops at them (%d):\n%s", sg, len(enis), dropped, out)
	}
	if code, out, _ := vpclab(t, dir, "sg", "--name", name); code != 0 || !strings.Contains(out, sg+"  web") || !strings.Contains(out, "DROPPED IN") {
		t.Errorf("sg table: %d\n%s", code, out)
	}
	rule := awsCLI("authorize-security-group-ingress", "--group-id", sg, "--protocol", "icmp", "--port", "-1", "--cidr", cidr, "--query", "SecurityGroupRules[0].SecurityGroupRuleId")
	if !pings() {
		t.Errorf("a → b dropped after %s allowed icmp from %s", sg, cidr)
	}
	if _, out, _ := vpclab(t, dir, "status", "--name", name); !strings.Contains(out, sg) {
		t.Errorf("status does not show %s:\n%s", sg, out)
	}
	if _, out, _ := vpclab(t, dir, "events", "--name", name, "--action", "AuthorizeSecurityGroupIngress", "-o", "table"); !strings.Contains(out, sg+"; icmp "+cidr) {
		t.Errorf("events do not show the rule:\n%s", out)
	}
	awsCLI("revoke-security-group-ingress", "--group-id", sg, "--security-group-rule-ids", rule)
	if pings() {
		t.Errorf("a → b passed after %s was revoked", rule)
	}
	for _, e := range enis {
		awsCLI("modify-network-interface-attribute", "--network-interface-id", e, "--groups", def)
	}
	if !pings() {
		t.Error("a → b dropped with node-2 back in the default group")
	}
}

// TestDemo runs `vpclab demo` and checks it tells its story and leaves
// nothing behind (its duration is printed; the target is under a minute).
func TestDemo(t *testing.T) {
	dir := buildCLI(t)
	code, out, errs := vpclab(t, dir, "demo")
	if code != 0 {
		t.Fatalf("demo: exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"pods get addresses from the VPC", "across nodes: ok", "ping: dropped by sg-", "the ping passes", "EC2 calls throttled", "InsufficientFreeAddressesInSubnet", "invariants hold", "then vpclab ui", "--report storm.html", "torn down"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if b, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(b), "vpcdemo-") {
		t.Errorf("demo left namespaces:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(lab.DefaultStateDir, "vpcdemo")); err == nil {
		t.Error("demo left its state directory")
	}
	t.Log(out)
}

// TestScenarioRunYAML runs the example YAML scenario through the CLI.
func TestScenarioRunYAML(t *testing.T) {
	dir := buildCLI(t)
	code, out, errs := vpclab(t, dir, "scenario", "run", "../../scenarios/examples/warm-ip.yaml")
	if code != 0 || !strings.Contains(out, "PASS WARM_IP_TARGET=2") {
		t.Fatalf("scenario run: exit %d\n%s\n%s", code, out, errs)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("name: x\nstepz: []\n"), 0o644)
	if code, _, errs := vpclab(t, dir, "scenario", "run", bad); code != 2 || !strings.Contains(errs, "stepz") {
		t.Errorf("bad scenario: exit %d %q", code, errs)
	}
}

// TestScenarioOffline pins the scenario commands that need no lab: list by
// label, show a built-in's YAML, new writes a template that loads, record
// turns a CloudTrail export into a replay, and their usage errors.
func TestScenarioOffline(t *testing.T) {
	dir := buildCLI(t)
	code, out, errs := vpclab(t, dir, "scenario", "list", "--label", "imds")
	if code != 0 || !strings.Contains(out, "an-attached-eni-vanishes-from-imds-for-6-s") || strings.Contains(out, "cooldown") {
		t.Fatalf("list --label imds: exit %d\n%s%s", code, out, errs)
	}
	if code, out, _ := vpclab(t, dir, "scenario", "show", "cooldown"); code != 0 || !strings.Contains(out, "name: cooldown") {
		t.Fatalf("show cooldown: exit %d\n%s", code, out)
	}
	if code, _, errs := vpclab(t, dir, "scenario", "show", "nope"); code != 2 || !strings.Contains(errs, `no built-in scenario "nope"`) {
		t.Fatalf("show nope: exit %d %q", code, errs)
	}
	tmpl := filepath.Join(t.TempDir(), "mine.yaml")
	if code, out, errs := vpclab(t, dir, "scenario", "new", tmpl); code != 0 || !strings.Contains(out, "wrote "+tmpl) {
		t.Fatalf("new: exit %d\n%s%s", code, out, errs)
	}
	if _, err := scenarios.Load(tmpl); err != nil {
		t.Fatalf("the template does not load: %v", err)
	}
	if code, _, errs := vpclab(t, dir, "scenario", "new", tmpl); code != 2 || !strings.Contains(errs, "exists") {
		t.Fatalf("new over an existing file: exit %d %q", code, errs)
	}
	trail := filepath.Join(t.TempDir(), "trail.json")
	os.WriteFile(trail, []byte(`{"Records": [{"eventName": "AssignPrivateIpAddresses", "eventTime": "2026-03-01T10:00:00Z", "eventSource": "ec2.amazonaws.com", "errorCode": "RequestLimitExceeded"},
	  {"eventName": "AssignPrivateIpAddresses", "eventTime": "2026-03-01T10:00:01.5Z", "eventSource": "ec2.amazonaws.com", "errorCode": "RequestLimitExceeded"}]}`), 0o644)
	code, out, errs = vpclab(t, dir, "scenario", "record", trail, "--pods", "6")
	if code != 0 {
		t.Fatalf("record: exit %d\n%s", code, errs)
	}
	replay := filepath.Join(t.TempDir(), "replay.yaml")
	os.WriteFile(replay, []byte(out), 0o644)
	s, err := scenarios.Load(replay)
	if err != nil || len(s.Steps) != 4 || !strings.Contains(out, "after: 1.5s") || !strings.Contains(out, "count: 6") {
		t.Fatalf("recorded scenario (%v):\n%s", err, out)
	}
	if code, _, errs := vpclab(t, dir, "scenario", "record", filepath.Join(t.TempDir(), "none.json")); code != 2 || !strings.Contains(errs, "no such file") {
		t.Fatalf("record a missing file: exit %d %q", code, errs)
	}
}

// checkUI runs `vpclab ui` on the lab: it prints a loopback URL with a
// token, serves the page (every node and pod on it) only with that token,
// and stops on SIGINT.
func checkUI(t *testing.T, dir, name string, st lab.Status) {
	t.Helper()
	cmd := exec.Command(filepath.Join(dir, "vpclab"), "ui", "--name", name)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	defer func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "vpclab ui: http://127.0.0.1:") {
		t.Fatalf("vpclab ui printed %q (%v) %s", line, err, errb.String())
	}
	url := strings.Fields(line)[2]
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, page)
	}
	for _, want := range []string{`data-node="node-1"`, `data-node="node-2"`, `data-pod="default/a"`, `data-pod="default/b"`, `<svg class="timeline"`, st.Nodes[0].ENIs[0].ID} {
		if !strings.Contains(string(page), want) {
			t.Errorf("vpclab ui's page lacks %s", want)
		}
	}
	base, _, _ := strings.Cut(url, "?")
	if resp, err := http.Get(base); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("without the token: %v %v; want 403", resp, err)
	} else {
		resp.Body.Close()
	}
	_ = cmd.Process.Signal(os.Interrupt)
	waited = true
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("vpclab ui after Ctrl-C: %v %s", err, errb.String())
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Error("vpclab ui did not stop on Ctrl-C")
	}
}
