package fakeec2_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/fakeec2/world"
	"github.com/vpclab/vpclab/internal/httpx"
)

func TestStrictSigV4(t *testing.T) {
	e := newEnv(t, model.Options{Seed: 20}, fakeec2.ServerOptions{}, "10.0.0.0/24")
	strict := fakeec2.NewServer(e.region, fakeec2.ServerOptions{API: ec2query.Options{Strict: true, Credentials: map[string]string{"AKIDGOOD": "right"}}})
	srv := httpServer(t, strict)
	client := func(key, secret string) *ec2.Client {
		return ec2.New(ec2.Options{Region: "us-west-2", BaseEndpoint: aws.String(srv), HTTPClient: httpx.BodyCopyClient{},
			Credentials: credentials.NewStaticCredentialsProvider(key, secret, ""), Retryer: retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = 1 })})
	}
	if _, err := client("AKIDGOOD", "right").DescribeVpcs(ctx, &ec2.DescribeVpcsInput{}); err != nil {
		t.Fatalf("good signature refused: %v", err)
	}
	_, err := client("AKIDGOOD", "wrong").DescribeVpcs(ctx, &ec2.DescribeVpcsInput{})
	wantCode(t, err, "SignatureDoesNotMatch")
	_, err = client("AKIDOTHER", "right").DescribeVpcs(ctx, &ec2.DescribeVpcsInput{})
	wantCode(t, err, "AuthFailure")
}

func TestControlAPI(t *testing.T) {
	e := newEnv(t, model.Options{Seed: 21}, fakeec2.ServerOptions{}, "10.0.0.0/24")
	inst := e.run("m5.large")
	do := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, e.http.URL+"/_fake/v1/"+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	st, body := do("GET", "instances", "")
	var insts []map[string]any
	if err := json.Unmarshal([]byte(body), &insts); err != nil || st != 200 || len(insts) != 1 || insts[0]["instanceId"] != *inst.InstanceId || insts[0]["instanceType"] != "m5.large" {
		t.Fatalf("instances: %d %s", st, body)
	}
	if st, body = do("POST", "faults", `{"action":"DescribeVpcs","code":"Unavailable","count":1}`); st != 201 {
		t.Fatalf("add fault: %d %s", st, body)
	}
	_, err := e.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{})
	wantCode(t, err, "Unavailable")
	if st, body = do("POST", "faults", `{"action":"*","probability":3,"code":"X"}`); st != 400 || !strings.Contains(body, "probability") {
		t.Fatalf("bad fault accepted: %d %s", st, body)
	}
	if st, body = do("PUT", "throttling", `{"enabled":true,"overrides":{"DescribeVpcs":{"capacity":1,"refill":0.001}}}`); st != 200 {
		t.Fatalf("throttling: %d %s", st, body)
	}
	e.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{})
	_, err = e.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{})
	wantCode(t, err, "RequestLimitExceeded")
	if st, body = do("PUT", "throttling", `{"enabled":true,"bogus":1}`); st != 400 {
		t.Fatalf("unknown field accepted: %d %s", st, body)
	}
	if st, body = do("PUT", "timing", `{"attachLatency":"2s","detachLatency":"1s","consistencyLag":"0s"}`); st != 200 {
		t.Fatalf("timing: %d %s", st, body)
	}
	if a, _, _ := e.region.Timing(); a.Seconds() != 2 {
		t.Fatalf("attach latency %v", a)
	}
	if st, body = do("GET", "allocation", ""); st != 200 || !strings.Contains(body, `"policy": "random"`) || !strings.Contains(body, `"avoidRecent": "1m0s"`) {
		t.Fatalf("allocation default: %d %s", st, body)
	}
	if st, body = do("PUT", "allocation", `{"policy":"first-fit"}`); st != 400 || !strings.Contains(body, "allocation.policy") {
		t.Fatalf("bad allocation policy: %d %s", st, body)
	}
	if st, body = do("PUT", "allocation", `{"policy":"lowest"}`); st != 200 || e.region.Allocation().Policy != model.AllocLowest {
		t.Fatalf("allocation lowest: %d %s", st, body)
	}
	st, body = do("GET", "events?action=DescribeVpcs&errors=true", "")
	var recs []ec2query.Record
	if err := json.Unmarshal([]byte(body), &recs); err != nil || st != 200 || len(recs) != 2 || recs[0].ErrorCode != "Unavailable" || recs[1].ErrorCode != "RequestLimitExceeded" {
		t.Fatalf("events: %d %s", st, body)
	}
	st, body = do("GET", "events?action=RunInstances", "")
	json.Unmarshal([]byte(body), &recs)
	if len(recs) != 1 || recs[0].EventSource != "ec2.amazonaws.com" || recs[0].ResponseElements == nil || recs[0].RequestParameters == nil || recs[0].RequestID == "" {
		t.Fatalf("RunInstances record: %s", body)
	}
	if st, body = do("GET", "invariants", ""); st != 200 || !strings.Contains(body, `"ok": true`) {
		t.Fatalf("invariants: %d %s", st, body)
	}
	if st, _ = do("GET", "state", ""); st != 200 {
		t.Fatalf("state: %d", st)
	}
	if st, _ = do("DELETE", "state", ""); st != 405 {
		t.Fatalf("DELETE state: %d", st)
	}
	if st, _ = do("GET", "nothing", ""); st != 404 {
		t.Fatalf("unknown: %d", st)
	}
}

func TestConfigApply(t *testing.T) {
	cfg, err := world.ParseConfig([]byte(`
region: eu-west-1
seed: 3
timing: {attachLatency: 500ms}
allocation: {policy: lowest}
faults: [{action: "Attach*", code: InternalError, count: 1}]
vpcs:
  - name: v
    cidr: 192.168.0.0/16
    subnets: [{name: a, cidr: 192.168.0.0/19, az: eu-west-1a}]
    securityGroups: [{name: nodes}]
instances: [{name: n, type: m5.large, subnet: a, count: 2, securityGroups: [nodes], metadata: {httpTokens: required, hopLimit: 2}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	r := model.NewRegion(cfg.RegionOptions())
	s := fakeec2.NewServer(r, cfg.ServerOptions())
	w, err := cfg.Apply(r, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Instances["n"]) != 2 || len(s.Faults().List()) != 1 {
		t.Fatalf("world %+v", w)
	}
	i, _ := r.Instance(w.Instances["n"][0])
	if i.AZ != "eu-west-1a" || i.Metadata.HTTPTokens != "required" || i.Metadata.HopLimit != 2 || i.SecurityGroups[0] != w.SecurityGroups["nodes"] {
		t.Fatalf("instance %+v", i)
	}
	if a, _, _ := r.Timing(); a.Milliseconds() != 500 {
		t.Fatalf("attach latency %v", a)
	}
	if _, err := world.ParseConfig([]byte("faults: [{code: X, probability: 2}]")); err == nil {
		t.Fatal("bad probability accepted")
	}
	// allocation: lowest gives the first instance the subnet's first usable address.
	if i.PrivateIP != netip.MustParseAddr("192.168.0.4") || r.Allocation().Policy != model.AllocLowest {
		t.Fatalf("allocation lowest: first instance at %s, policy %+v", i.PrivateIP, r.Allocation())
	}
	if _, err := world.ParseConfig([]byte("allocation: {policy: first-fit}")); err == nil || !strings.Contains(err.Error(), "allocation.policy") {
		t.Fatalf("bad allocation policy: %v", err)
	}
	if _, err := world.ParseConfig([]byte("allocation: {avoidRecent: soon}")); err == nil || !strings.Contains(err.Error(), "soon") {
		t.Fatalf("bad avoidRecent: %v", err)
	}
}

func httpServer(t *testing.T, h http.Handler) string {
	s := httptestServer(h)
	t.Cleanup(s.Close)
	return s.URL
}
