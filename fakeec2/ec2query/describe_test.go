package ec2query

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/vpclab/vpclab/fakeec2/model"
)

// TestFiltersUseTheRegionsAccountAndName pins filters that depend on the
// region: owner-id is the configured account (not a constant), and
// private-dns-name carries the region's suffix.
func TestFiltersUseTheRegionsAccountAndName(t *testing.T) {
	r := model.NewRegion(model.Options{Name: "eu-west-1", AccountID: "111122223333"})
	v, _ := r.CreateVPC(model.CreateVPCInput{CIDR: netip.MustParsePrefix("10.0.0.0/16")})
	sn, _ := r.CreateSubnet(model.CreateSubnetInput{VPCID: v.ID, CIDR: netip.MustParsePrefix("10.0.0.0/24")})
	eni, _ := r.CreateNetworkInterface(model.CreateNetworkInterfaceInput{SubnetID: sn.ID})
	s := New(r, Options{})
	call := func(body string) string {
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body+"&Version=2016-11-15"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		return w.Body.String()
	}
	dns := "ip-" + strings.ReplaceAll(eni.PrivateIP.String(), ".", "-") + ".eu-west-1.compute.internal"
	for _, c := range []struct {
		body string
		want bool
	}{
		{"Action=DescribeNetworkInterfaces&Filter.1.Name=owner-id&Filter.1.Value.1=111122223333", true},
		{"Action=DescribeNetworkInterfaces&Filter.1.Name=owner-id&Filter.1.Value.1=123456789012", false},
		{"Action=DescribeNetworkInterfaces&Filter.1.Name=private-dns-name&Filter.1.Value.1=" + dns, true},
		{"Action=DescribeSecurityGroups&Filter.1.Name=owner-id&Filter.1.Value.1=111122223333", true},
		{"Action=DescribeSecurityGroups&Filter.1.Name=owner-id&Filter.1.Value.1=123456789012", false},
	} {
		out := call(c.body)
		if got := strings.Contains(out, "<item>"); got != c.want {
			t.Errorf("%s: matched %v, want %v\n%s", c.body, got, c.want, out)
		}
	}
}
