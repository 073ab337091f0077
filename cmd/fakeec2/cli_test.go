package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/vpclab/vpclab/internal/labtest"
)

// awsCLI is Debian's AWS CLI v2 (package awscli), installed by make deps.
const awsCLI = "/usr/bin/aws"

const worldYAML = `
region: us-west-2
seed: 7
throttling:
  enabled: true
  overrides:
    CreateTags: {capacity: 2, refill: 0.01}
vpcs:
  - name: main
    cidr: 10.0.0.0/16
    subnets:
      - {name: big, cidr: 10.0.0.0/24, az: us-west-2a}
      - {name: tiny, cidr: 10.0.1.0/28, az: us-west-2a}
      - {name: pd, cidr: 10.0.2.0/24, az: us-west-2a}
instances:
  - {name: m5, type: m5.large, subnet: big}
  - {name: nano, type: t3.nano, subnet: big}
  - {name: pdnode, type: m5.large, subnet: pd}
`

type server struct {
	t      *testing.T
	url    string
	region string // the region the server says it serves

	mu  sync.Mutex
	out []string // stdout lines after the EC2 API line
}

// printed waits until the server has printed n lines after its EC2 API
// line and returns them.
func (s *server) printed(n int) []string {
	s.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		out := slices.Clone(s.out)
		s.mu.Unlock()
		if len(out) >= n {
			return out
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("server printed %d lines, want %d: %q", len(out), n, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serverBin builds the standalone binary once for the plain tests.
var serverBin = sync.OnceValues(func() (string, error) { return labtest.Build("fakeec2") })

// startServer starts the standalone binary and waits for the control API,
// as other tools do.
func startServer(t *testing.T, config string, extra ...string) *server {
	t.Helper()
	dir := t.TempDir()
	built, err := serverBin()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(built, "fakeec2")
	cfg := filepath.Join(dir, "world.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--config", cfg}, extra...)...)
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	re := regexp.MustCompile(`EC2 API (http://\S+) \(region ([a-z0-9-]+)`)
	var url, region string
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			url, region = m[1], m[2]
			break
		}
	}
	if url == "" {
		t.Fatalf("server printed no endpoint; stderr: %s", stderr.String())
	}
	srv := &server{t: t, url: url, region: region}
	go func() {
		for sc.Scan() {
			srv.mu.Lock()
			srv.out = append(srv.out, sc.Text())
			srv.mu.Unlock()
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(url + "/_fake/v1/instances")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("control API never answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return srv
}

func (s *server) instances() []map[string]any {
	resp, err := http.Get(s.url + "/_fake/v1/instances")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// aws runs the CLI; it returns parsed JSON output or the error text.
func (s *server) aws(args ...string) (map[string]any, string) {
	s.t.Helper()
	full := append([]string{"--endpoint-url", s.url, "--region", s.region, "--output", "json", "ec2"}, args...)
	cmd := exec.Command(awsCLI, full...)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY=secret", "AWS_MAX_ATTEMPTS=1",
		"AWS_RETRY_MODE=standard", "AWS_PAGER=", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			s.t.Fatalf("run %s: %v", awsCLI, err)
		}
		return nil, stderr.String()
	}
	var out map[string]any
	if stdout.Len() > 0 {
		if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
			s.t.Fatalf("aws %v: bad JSON %q", args, stdout.String())
		}
	}
	return out, ""
}

func (s *server) ok(args ...string) map[string]any {
	s.t.Helper()
	out, errText := s.aws(args...)
	if errText != "" {
		s.t.Fatalf("aws ec2 %s: %s", strings.Join(args, " "), errText)
	}
	return out
}

func (s *server) fails(code string, args ...string) {
	s.t.Helper()
	_, errText := s.aws(args...)
	if !strings.Contains(errText, "("+code+")") {
		s.t.Fatalf("aws ec2 %s: want %s, got %q", strings.Join(args, " "), code, errText)
	}
}

func get(m any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m = m.(map[string]any)[k]
		case int:
			m = m.([]any)[k]
		}
	}
	return m
}

func str(m any, path ...any) string { return fmt.Sprint(get(m, path...)) }

func TestAWSCLIv2(t *testing.T) {
	if _, err := os.Stat(awsCLI); err != nil {
		t.Fatalf("%s missing (run make deps): %v", awsCLI, err)
	}
	s := startServer(t, worldYAML)
	byType := map[string]map[string]any{}
	for _, i := range s.instances() {
		if _, ok := i["instanceId"].(string); !ok {
			t.Fatalf("instance without instanceId: %v", i)
		}
		byType[str(i, "instanceType")+"/"+str(i, "subnetId")] = i
	}
	subnets := s.ok("describe-subnets")
	ids := map[string]string{}
	for _, sn := range get(subnets, "Subnets").([]any) {
		ids[str(sn, "CidrBlock")] = str(sn, "SubnetId")
	}
	big, tiny, pd := ids["10.0.0.0/24"], ids["10.0.1.0/28"], ids["10.0.2.0/24"]
	m5 := str(byType["m5.large/"+big], "instanceId")
	nano := str(byType["t3.nano/"+big], "instanceId")
	pdnode := byType["m5.large/"+pd]

	t.Run("m5.large 3 ENIs x 10 IPv4", func(t *testing.T) {
		d := s.ok("describe-instances", "--instance-ids", m5)
		primary := str(d, "Reservations", 0, "Instances", 0, "NetworkInterfaces", 0, "NetworkInterfaceId")
		s.ok("assign-private-ip-addresses", "--network-interface-id", primary, "--secondary-private-ip-address-count", "9")
		s.fails("PrivateIpAddressLimitExceeded", "assign-private-ip-addresses", "--network-interface-id", primary, "--secondary-private-ip-address-count", "1")
		for dev := 1; dev <= 3; dev++ {
			eni := str(s.ok("create-network-interface", "--subnet-id", big), "NetworkInterface", "NetworkInterfaceId")
			args := []string{"attach-network-interface", "--network-interface-id", eni, "--instance-id", m5, "--device-index", fmt.Sprint(dev)}
			if dev == 3 {
				s.fails("AttachmentLimitExceeded", args...)
			} else {
				s.ok(args...)
			}
		}
	})
	t.Run("t3.nano 2 ENIs x 2 IPv4", func(t *testing.T) {
		d := s.ok("describe-instances", "--instance-ids", nano)
		primary := str(d, "Reservations", 0, "Instances", 0, "NetworkInterfaces", 0, "NetworkInterfaceId")
		s.fails("PrivateIpAddressLimitExceeded", "assign-private-ip-addresses", "--network-interface-id", primary, "--secondary-private-ip-address-count", "2")
		s.ok("assign-private-ip-addresses", "--network-interface-id", primary, "--secondary-private-ip-address-count", "1")
		e1 := str(s.ok("create-network-interface", "--subnet-id", big), "NetworkInterface", "NetworkInterfaceId")
		e2 := str(s.ok("create-network-interface", "--subnet-id", big), "NetworkInterface", "NetworkInterfaceId")
		s.ok("attach-network-interface", "--network-interface-id", e1, "--instance-id", nano, "--device-index", "1")
		s.fails("AttachmentLimitExceeded", "attach-network-interface", "--network-interface-id", e2, "--instance-id", nano, "--device-index", "2")
	})
	t.Run("/28 exhausts after 11 addresses", func(t *testing.T) {
		out := s.ok("create-network-interface", "--subnet-id", tiny, "--secondary-private-ip-address-count", "10")
		addrs := get(out, "NetworkInterface", "PrivateIpAddresses").([]any)
		if len(addrs) != 11 {
			t.Fatalf("got %d addresses", len(addrs))
		}
		seen := map[string]bool{}
		for _, a := range addrs {
			ip := netip.MustParseAddr(str(a, "PrivateIpAddress"))
			if last := ip.As4()[3]; seen[ip.String()] || last < 4 || last == 15 {
				t.Fatalf("bad address %s", ip)
			}
			seen[ip.String()] = true
		}
		s.fails("InsufficientFreeAddressesInSubnet", "create-network-interface", "--subnet-id", tiny)
		sn := s.ok("describe-subnets", "--subnet-ids", tiny)
		if n := str(sn, "Subnets", 0, "AvailableIpAddressCount"); n != "0" {
			t.Fatalf("available %s", n)
		}
	})
	t.Run("aligned /28 prefixes", func(t *testing.T) {
		primary := str(pdnode, "primaryNetworkInterfaceId")
		out := s.ok("assign-private-ip-addresses", "--network-interface-id", primary, "--ipv4-prefix-count", "3")
		pfx := get(out, "AssignedIpv4Prefixes").([]any)
		if len(pfx) != 3 {
			t.Fatalf("got %d prefixes", len(pfx))
		}
		for _, p := range pfx {
			pf := netip.MustParsePrefix(str(p, "Ipv4Prefix"))
			if pf.Bits() != 28 || pf.Masked() != pf || !netip.MustParsePrefix("10.0.2.0/24").Contains(pf.Addr()) {
				t.Fatalf("prefix %s", pf)
			}
		}
		d := s.ok("describe-network-interfaces", "--filters", "Name=network-interface-id,Values="+primary)
		if n := len(get(d, "NetworkInterfaces", 0, "Ipv4Prefixes").([]any)); n != 3 {
			t.Fatalf("describe shows %d prefixes", n)
		}
	})
	t.Run("trunk and branch", func(t *testing.T) {
		trunk := str(s.ok("create-network-interface", "--subnet-id", big, "--interface-type", "trunk", "--description", "trunk-eni"), "NetworkInterface", "NetworkInterfaceId")
		branch := str(s.ok("create-network-interface", "--subnet-id", big, "--description", "branch-eni"), "NetworkInterface", "NetworkInterfaceId")
		d := s.ok("describe-instances", "--instance-ids", str(pdnode, "instanceId"))
		_ = d
		// pdnode is in another subnet but the same AZ and VPC: attach the trunk there.
		s.ok("attach-network-interface", "--network-interface-id", trunk, "--instance-id", str(pdnode, "instanceId"), "--device-index", "1")
		as := s.ok("associate-trunk-interface", "--branch-interface-id", branch, "--trunk-interface-id", trunk, "--vlan-id", "42")
		if str(as, "InterfaceAssociation", "VlanId") != "42" || str(as, "InterfaceAssociation", "InterfaceProtocol") != "VLAN" {
			t.Fatalf("association %v", as)
		}
		di := s.ok("describe-network-interfaces", "--network-interface-ids", branch, trunk)
		types, status := map[string]string{}, map[string]string{}
		for _, n := range get(di, "NetworkInterfaces").([]any) {
			types[str(n, "NetworkInterfaceId")] = str(n, "InterfaceType")
			status[str(n, "NetworkInterfaceId")] = str(n, "Status")
		}
		if types[trunk] != "trunk" || types[branch] != "branch" {
			t.Fatalf("interface types %v", types)
		}
		if status[branch] != "in-use" {
			t.Fatalf("an associated branch is %q, want in-use as on EC2", status[branch])
		}
		avail := s.ok("describe-network-interfaces", "--filters", "Name=status,Values=available", "Name=network-interface-id,Values="+branch)
		if n := len(get(avail, "NetworkInterfaces").([]any)); n != 0 {
			t.Fatalf("status=available lists the associated branch")
		}
		dt := s.ok("describe-trunk-interface-associations", "--association-ids", str(as, "InterfaceAssociation", "AssociationId"))
		if n := len(get(dt, "InterfaceAssociations").([]any)); n != 1 {
			t.Fatalf("describe associations: %d", n)
		}
	})
	t.Run("RequestLimitExceeded under a burst", func(t *testing.T) {
		// CreateTags has a 2-token bucket in this world; the third call in a
		// row is throttled (the CLI runs with one attempt).
		for i := 0; i < 2; i++ {
			s.ok("create-tags", "--resources", m5, "--tags", fmt.Sprintf("Key=k%d,Value=v", i))
		}
		s.fails("RequestLimitExceeded", "create-tags", "--resources", m5, "--tags", "Key=k9,Value=v")
		resp, err := http.Get(s.url + "/_fake/v1/events?code=RequestLimitExceeded")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var recs []map[string]any
		json.NewDecoder(resp.Body).Decode(&recs)
		if len(recs) != 1 || recs[0]["eventName"] != "CreateTags" || !strings.Contains(fmt.Sprint(recs[0]["userAgent"]), "aws-cli/2") {
			t.Fatalf("audit records %v", recs)
		}
	})
	resp, err := http.Get(s.url + "/_fake/v1/invariants")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("invariants: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()
}

func TestServeErrors(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"bogus"}, &out, &errb); code != 2 {
		t.Fatalf("bogus command: exit %d", code)
	}
	errb.Reset()
	if code := run([]string{"serve", "--config", "/nonexistent.yaml"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--config") {
		t.Fatalf("missing config: exit %d %s", code, errb.String())
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("vpcs:\n  - name: x\n    cidr: 10.0.0.0/8\n"), 0o644)
	errb.Reset()
	if code := run([]string{"serve", "--config", bad}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "InvalidVpc.Range") {
		t.Fatalf("bad CIDR: exit %d %s", code, errb.String())
	}
	os.WriteFile(bad, []byte("vpcz: []\n"), 0o644)
	errb.Reset()
	if code := run([]string{"serve", "--config", bad}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "vpcz") {
		t.Fatalf("unknown field: exit %d %s", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"serve", "--strict"}, &out, &errb); code != 2 {
		t.Fatalf("strict without credentials: exit %d", code)
	}
}

const imdsYAML = `
region: eu-west-1
vpcs:
  - name: main
    cidr: 10.2.0.0/16
    subnets:
      - {name: a, cidr: 10.2.0.0/24, az: eu-west-1b}
instances:
  - {name: fixed, type: m5.large, subnet: a, imds: "127.0.0.1:0", metadata: {httpTokens: required}}
  - {name: auto, type: t3.small, subnet: a, imdsLag: 1s}
`

// TestStandaloneIMDS checks that every instance, from the config and from
// RunInstances, gets an IMDS listener that is printed, listed as
// imdsEndpoint, and usable through AWS_EC2_METADATA_SERVICE_ENDPOINT.
func TestStandaloneIMDS(t *testing.T) {
	s := startServer(t, imdsYAML)
	lines := s.printed(3) // control API + 2 instances
	re := regexp.MustCompile(`instance (i-[0-9a-f]+) \S+ \S+ imds (http://(?:i-[0-9a-f]+@)?127\.0\.0\.1:\d+)$`)
	printed := map[string]string{}
	for _, l := range lines {
		if m := re.FindStringSubmatch(l); m != nil {
			printed[m[1]] = m[2]
		}
	}
	if len(printed) != 2 {
		t.Fatalf("start-up lines lack IMDS endpoints: %q", lines)
	}
	readID := func(endpoint string) string {
		t.Helper()
		t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)
		t.Setenv("AWS_CONFIG_FILE", "/dev/null")
		t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
		cfg, err := config.LoadDefaultConfig(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out, err := imds.NewFromConfig(cfg).GetMetadata(context.Background(), &imds.GetMetadataInput{Path: "instance-id"})
		if err != nil {
			t.Fatalf("IMDS at %s: %v", endpoint, err)
		}
		b, _ := io.ReadAll(out.Content)
		return string(b)
	}
	for _, i := range s.instances() {
		id, ep := str(i, "instanceId"), str(i, "imdsEndpoint")
		if printed[id] != ep {
			t.Fatalf("instance %s: printed %q, listed %q", id, printed[id], ep)
		}
		if got := readID(ep); got != id {
			t.Fatalf("IMDS at %s says instance-id %q, want %s", ep, got, id)
		}
	}
	// An instance launched through the API gets a listener too.
	subnet := str(s.ok("describe-subnets"), "Subnets", 0, "SubnetId")
	out := s.ok("run-instances", "--instance-type", "c5.xlarge", "--subnet-id", subnet, "--image-id", "ami-11112222", "--count", "1")
	id := str(out, "Instances", 0, "InstanceId")
	var ep string
	for _, i := range s.instances() {
		if str(i, "instanceId") == id {
			ep, _ = i["imdsEndpoint"].(string)
		}
	}
	if ep == "" {
		t.Fatalf("RunInstances instance %s has no imdsEndpoint", id)
	}
	if got := readID(ep); got != id {
		t.Fatalf("new instance's IMDS says %q, want %s", got, id)
	}
	// The control API shows lags (the config gave "auto" its own).
	resp, err := http.Get(s.url + "/_fake/v1/imds")
	if err != nil {
		t.Fatal(err)
	}
	var st []map[string]any
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	own := 0
	for _, x := range st {
		if x["ownLag"] == true && x["lag"] == "1s" {
			own++
		}
	}
	if len(st) != 3 || own != 1 {
		t.Fatalf("GET /_fake/v1/imds = %v", st)
	}
}

func TestServeIMDSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	base := "vpcs:\n  - name: v\n    cidr: 10.0.0.0/16\n    subnets: [{name: a, cidr: 10.0.0.0/24}]\ninstances:\n"
	for _, c := range []struct{ inst, want string }{
		{"  - {type: m5.large, subnet: a, count: 2, imds: \"127.0.0.1:9999\"}", "fixed port"},
		{"  - {type: m5.large, subnet: a, imds: \"nonsense\"}", "imds \"nonsense\""},
		{"  - {type: m5.large, subnet: a, imdsLag: -1s}", "imdsLag"},
	} {
		os.WriteFile(bad, []byte(base+c.inst+"\n"), 0o644)
		var out, errb bytes.Buffer
		if code := run([]string{"serve", "--listen", "127.0.0.1:0", "--config", bad}, &out, &errb); code != 2 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%s: exit %d, stderr %s", c.inst, code, errb.String())
		}
	}
}
