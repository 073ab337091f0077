package ec2query

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/vpclab/vpclab/fakeec2/model"
)

// FuzzQueryDecoder feeds arbitrary request bodies to the Query API of a
// populated region: it must never panic, must answer EC2-shaped XML, and
// must keep the model's invariants.
func FuzzQueryDecoder(f *testing.F) {
	for _, s := range []string{
		"Action=CreateNetworkInterface&SubnetId=SUBNET&SecondaryPrivateIpAddressCount=3&Ipv4Prefix.1.Ipv4Prefix=10.0.0.32%2F28",
		"Action=AssignPrivateIpAddresses&NetworkInterfaceId=ENI&PrivateIpAddress.1=10.0.0.9&PrivateIpAddress.2=10.0.0.9",
		"Action=DescribeNetworkInterfaces&Filter.1.Name=tag-key&Filter.1.Value.1=x&MaxResults=5&NextToken=zz",
		"Action=AttachNetworkInterface&NetworkInterfaceId=ENI&InstanceId=INST&DeviceIndex=-1&NetworkCardIndex=99",
		"Action=CreateTags&ResourceId.1=ENI&Tag.1.Key=a&Tag.1.Value=b&Tag.0.Key=c",
		"Action=AssociateTrunkInterface&BranchInterfaceId=ENI&TrunkInterfaceId=ENI&VlanId=4095",
		"Action=UnassignPrivateIpAddresses&NetworkInterfaceId=ENI&Ipv4Prefix.1=10.0.0.0%2F28",
		"Action=RunInstances&InstanceType=m5.large&SubnetId=SUBNET&MinCount=2&MaxCount=1",
		"Action=ModifyNetworkInterfaceAttribute&NetworkInterfaceId=ENI&Attachment.DeleteOnTermination=maybe",
		"Action=AssignIpv6Addresses&NetworkInterfaceId=ENI&Ipv6AddressCount=99999999999",
		"%zz&&==",
	} {
		f.Add(s)
	}
	r := model.NewRegion(model.Options{Seed: 1})
	v, _ := r.CreateVPC(model.CreateVPCInput{CIDR: netip.MustParsePrefix("10.0.0.0/16")})
	sn, _ := r.CreateSubnet(model.CreateSubnetInput{VPCID: v.ID, CIDR: netip.MustParsePrefix("10.0.0.0/24")})
	insts, _ := r.RunInstances(model.RunInstancesInput{InstanceType: "m5.large", SubnetID: sn.ID})
	eni, _ := r.CreateNetworkInterface(model.CreateNetworkInterfaceInput{SubnetID: sn.ID})
	s := New(r, Options{})
	repl := strings.NewReplacer("SUBNET", sn.ID, "ENI", eni.ID, "INST", insts[0].ID)
	f.Fuzz(func(t *testing.T, body string) {
		body = repl.Replace(body)
		if !strings.Contains(body, "Version=") {
			body += "&Version=2016-11-15"
		}
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		out := w.Body.String()
		if w.Code == 200 {
			if !strings.Contains(out, "Response xmlns=") {
				t.Fatalf("200 without EC2 response: %q", out)
			}
		} else if !strings.Contains(out, "<Response><Errors><Error><Code>") || w.Code < 400 {
			t.Fatalf("status %d without EC2 error: %q", w.Code, out)
		}
		if err := r.CheckInvariants(); err != nil {
			t.Fatalf("invariants after %q: %v", body, err)
		}
	})
}

// FuzzFilters checks filter parsing and glob matching on arbitrary input.
func FuzzFilters(f *testing.F) {
	f.Add("tag:team", "n*t", "net")
	f.Add("status", "in-?se", "in-use")
	f.Add("attachment.instance-id", `\*`, "*")
	f.Add("bogus", "x", "x")
	f.Fuzz(func(t *testing.T, name, pattern, value string) {
		form := url.Values{"Filter.1.Name": {name}, "Filter.1.Value.1": {pattern}}
		fs, err := decodeQuery(form).filters()
		if err != nil {
			return
		}
		pred, err := eniFilters.compile(New(model.NewRegion(model.Options{}), Options{}), fs)
		if err != nil {
			if ae, ok := model.AsAPIError(err); !ok || ae.Code != "InvalidParameterValue" {
				t.Fatalf("filter error %v", err)
			}
			return
		}
		n := &model.NetworkInterface{Status: value, Tags: model.Tags{"team": value}, Description: value}
		_ = pred(n)
		if !strings.ContainsAny(pattern, `*?\`) && globMatch(pattern, value) != (pattern == value) {
			t.Fatalf("literal %q vs %q", pattern, value)
		}
		if globMatch("*", value) != true {
			t.Fatalf("* does not match %q", value)
		}
	})
}

func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"abc", "abc", true}, {"a*", "abc", true}, {"a?c", "abc", true}, {"a?c", "ac", false},
		{"*c", "abc", true}, {`a\*`, "a*", true}, {`a\*`, "ab", false}, {"*", "", true}, {"?", "", false},
		{"eni-*", "eni-0123", true}, {"*b*", "abc", true}, {"Abc", "abc", false},
	} {
		if got := globMatch(c.p, c.s); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v", c.p, c.s, got)
		}
	}
}
