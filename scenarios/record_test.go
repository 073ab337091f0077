package scenarios

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestRecordCloudTrail turns a CloudTrail export written here into a
// replay scenario: every error answer is a fault at its relative time,
// other EC2 sources and successful fast calls are left out, and the
// written YAML loads back as the same scenario.
func TestRecordCloudTrail(t *testing.T) {
	trail := `{"Records": [
	 {"eventName": "AssignPrivateIpAddresses", "eventTime": "2026-03-01T10:00:02.500Z", "eventSource": "ec2.amazonaws.com", "errorCode": "RequestLimitExceeded"},
	 {"eventName": "DescribeNetworkInterfaces", "eventTime": "2026-03-01T10:00:00Z", "eventSource": "ec2.amazonaws.com"},
	 {"eventName": "AssumeRole", "eventTime": "2026-03-01T10:00:01Z", "eventSource": "sts.amazonaws.com", "errorCode": "AccessDenied"},
	 {"eventName": "CreateNetworkInterface", "eventTime": "2026-03-01T10:00:04Z", "eventSource": "ec2.amazonaws.com", "errorCode": "InsufficientFreeAddressesInSubnet",
	  "requestParameters": {"subnetId": "subnet-1"}, "userIdentity": {"type": "AssumedRole"}}
	]}`
	recs, err := ReadTrail(strings.NewReader(trail))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || recs[0].EventName != "DescribeNetworkInterfaces" {
		t.Fatalf("records %+v", recs)
	}
	s, err := Record(recs, RecordOptions{Pods: 4})
	if err != nil {
		t.Fatal(err)
	}
	rules := *s.Steps[0].Action.(*FaultRules)
	if len(rules) != 2 || rules[0].Action != "AssignPrivateIpAddresses" || rules[0].Code != "RequestLimitExceeded" || time.Duration(rules[0].After) != 2500*time.Millisecond ||
		rules[1].Code != "InsufficientFreeAddressesInSubnet" || time.Duration(rules[1].After) != 4*time.Second || rules[1].Count != 1 {
		t.Fatalf("rules %+v", rules)
	}
	var b bytes.Buffer
	if err := WriteYAML(&b, s); err != nil {
		t.Fatal(err)
	}
	back, err := Parse(b.Bytes(), "recorded.yaml")
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if len(back.Steps) != len(s.Steps) || back.Steps[1].Action.(*AddPods).Count != 4 || len(*back.Steps[0].Action.(*FaultRules)) != 2 {
		t.Fatalf("read back as %+v\n%s", back, b.String())
	}
	// vpclab's own events (JSON lines) replay their slow calls too.
	lines := `{"eventName":"AttachNetworkInterface","eventTime":"2026-03-01T10:00:00Z","durationMs":1200}
{"eventName":"AttachNetworkInterface","eventTime":"2026-03-01T10:00:01Z","durationMs":3}`
	recs, err = ReadTrail(strings.NewReader(lines))
	if err != nil {
		t.Fatal(err)
	}
	s, err = Record(recs, RecordOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rules := *s.Steps[0].Action.(*FaultRules); len(rules) != 1 || time.Duration(rules[0].Latency) != 1200*time.Millisecond {
		t.Fatalf("slow call replayed as %+v", rules)
	}
	for _, bad := range []string{"", "{}", `{"Records": []}`, "not json"} {
		if _, err := ReadTrail(strings.NewReader(bad)); err == nil {
			t.Errorf("%q read without an error", bad)
		}
	}
}
