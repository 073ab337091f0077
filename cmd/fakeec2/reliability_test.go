package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

const strictWorld = `
region: us-west-2
credentials: {AKIDSTRICT: s3cr3t}
vpcs:
  - name: main
    cidr: 10.0.0.0/16
    subnets: [{name: a, cidr: 10.0.0.0/24, az: us-west-2a}]
`

var _ = Describe("--strict checks what AWS checks", Label("reliability"), func() {
	var s *gserver
	BeforeEach(func() { s = serve(strictWorld, "", "--strict") })

	good := func() sigv4 {
		return sigv4{keyID: "AKIDSTRICT", secret: "s3cr3t", region: "us-west-2", service: "ec2", date: time.Now(),
			signed: []string{"content-type", "host", "x-amz-date"}}
	}
	send := func(g sigv4, body string, signedBody []byte) (int, string) {
		req, err := http.NewRequest(http.MethodPost, s.url+"/", strings.NewReader(body))
		Expect(err).NotTo(HaveOccurred())
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
		g.hashOf = signedBody
		g.sign(req, []byte(body))
		return do(req)
	}
	const read = "Action=DescribeVpcs&Version=2016-11-15"

	It("accepts a correctly signed request", func() {
		code, body := send(good(), read, nil)
		Expect(code).To(Equal(200), body)
		Expect(body).To(ContainSubstring("<vpcSet>"))
	})

	DescribeTable("refuses a forgery",
		func(mutate func(*sigv4), body string, signedBody []byte, wantCode, wantMsg string) {
			g := good()
			mutate(&g)
			code, resp := send(g, body, signedBody)
			Expect(code).To(BeNumerically(">=", 400), resp)
			Expect(resp).To(ContainSubstring("<Code>" + wantCode + "</Code>"))
			Expect(resp).To(ContainSubstring(wantMsg))
		},
		Entry("scoped to s3", func(g *sigv4) { g.service = "s3" }, read, nil, "SignatureDoesNotMatch", "Credential should be scoped to correct service: 'ec2'"),
		Entry("scoped to another region", func(g *sigv4) { g.region = "eu-west-1" }, read, nil, "SignatureDoesNotMatch", "Credential should be scoped to a valid region, not 'eu-west-1'"),
		Entry("a scope dated 2001", func(g *sigv4) { g.scopeDate = "20010101" }, read, nil, "SignatureDoesNotMatch", "Date in Credential scope does not match"),
		Entry("an old request", func(g *sigv4) { g.date = time.Now().Add(-20 * time.Minute) }, read, nil, "RequestExpired", "Request has expired"),
		Entry("a mutating body under a read's signature (header claims the read's hash)",
			func(g *sigv4) { g.payloadHash = sha256hex(read) }, "Action=CreateVpc&Version=2016-11-15&CidrBlock=10.9.0.0/16", []byte(read), "SignatureDoesNotMatch", "x-amz-content-sha256"),
		Entry("a mutating body under a read's signature (no hash header)",
			func(*sigv4) {}, "Action=CreateVpc&Version=2016-11-15&CidrBlock=10.9.0.0/16", []byte(read), "SignatureDoesNotMatch", "signature we calculated does not match"),
		Entry("UNSIGNED-PAYLOAD", func(g *sigv4) { g.payloadHash = "UNSIGNED-PAYLOAD" }, "Action=CreateVpc&Version=2016-11-15&CidrBlock=10.9.0.0/16", nil, "SignatureDoesNotMatch", "x-amz-content-sha256"),
		Entry("Host not signed", func(g *sigv4) { g.signed = []string{"content-type", "x-amz-date"} }, read, nil, "IncompleteSignature", "'Host' or ':authority' must be a 'SignedHeader'"),
		Entry("an unknown key", func(g *sigv4) { g.keyID = "AKIDNOBODY" }, read, nil, "AuthFailure", "not able to validate"),
		Entry("a wrong secret", func(g *sigv4) { g.secret = "guess" }, read, nil, "SignatureDoesNotMatch", "signature we calculated does not match"),
	)

	It("refuses a missing or incomplete Authorization header", func() {
		code, body := s.post(read, nil)
		Expect(code).To(Equal(401))
		Expect(body).To(ContainSubstring("AuthFailure"))
		code, body = s.post(read, map[string]string{"Authorization": "AWS4-HMAC-SHA256 Credential=AKIDSTRICT/20260101/us-west-2/ec2/aws4_request"})
		Expect(code).To(Equal(400))
		Expect(body).To(ContainSubstring("<Code>IncompleteSignature</Code>"))
		Expect(body).To(ContainSubstring("'SignedHeaders'"))
	})
})

func sha256hex(s string) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(s))) }

// awsCLIAt runs /usr/bin/aws against a server; it returns parsed JSON or
// the error text.
func awsCLIAt(s *gserver, args ...string) (map[string]any, string) {
	GinkgoHelper()
	full := append([]string{"--endpoint-url", s.url, "--region", s.region, "--output", "json", "ec2"}, args...)
	cmd := exec.Command(awsCLI, full...)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY=secret", "AWS_MAX_ATTEMPTS=1",
		"AWS_PAGER=", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, stderr.String() + err.Error()
	}
	var out map[string]any
	Expect(json.Unmarshal(stdout.Bytes(), &out)).To(Succeed(), stdout.String())
	return out, ""
}

var _ = Describe("regions", Label("reliability"), func() {
	It("refuses a request signed for another region, even without --strict, and --region serves that region", func() {
		s := serve("", "")
		Expect(s.region).To(Equal("us-west-2"))
		g := sigv4{keyID: "x", secret: "x", region: "eu-west-1", service: "ec2", date: time.Now(), signed: []string{"host", "x-amz-date"}}
		req, _ := http.NewRequest(http.MethodPost, s.url+"/", strings.NewReader("Action=DescribeAvailabilityZones&Version=2016-11-15"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		g.sign(req, []byte("Action=DescribeAvailabilityZones&Version=2016-11-15"))
		code, body := do(req)
		Expect(code).To(Equal(403))
		Expect(body).To(ContainSubstring("Credential should be scoped to a valid region, not 'eu-west-1'"))
		Expect(body).To(ContainSubstring("--region eu-west-1"))

		eu := serve("", "", "--region", "eu-west-1")
		Expect(eu.region).To(Equal("eu-west-1"))
		out, errText := awsCLIAt(eu, "describe-availability-zones")
		Expect(errText).To(BeEmpty())
		var names []string
		for _, z := range out["AvailabilityZones"].([]any) {
			z := z.(map[string]any)
			Expect(z["State"]).To(Equal("available"))
			Expect(z["RegionName"]).To(Equal("eu-west-1"))
			names = append(names, z["ZoneName"].(string))
		}
		Expect(names).To(ConsistOf("eu-west-1a", "eu-west-1b", "eu-west-1c"))
		out, errText = awsCLIAt(eu, "describe-regions")
		Expect(errText).To(BeEmpty())
		Expect(out["Regions"]).To(HaveLen(1))
		Expect(out["Regions"].([]any)[0].(map[string]any)["RegionName"]).To(Equal("eu-west-1"))
		_, errText = awsCLIAt(eu, "create-subnet", "--vpc-id", "vpc-00000000", "--cidr-block", "10.0.4.1/24")
		Expect(errText).To(Or(ContainSubstring("InvalidVpcID.NotFound"), ContainSubstring("InvalidSubnet.Range")))
	})
})

var _ = Describe("fidelity of refusals", Label("reliability"), func() {
	var s *gserver
	BeforeEach(func() {
		s = serve("vpcs: [{name: v, cidr: 10.0.0.0/16}]\n", "")
	})

	It("answers UnknownParameter for a parameter the action does not have", func() {
		code, body := s.post("Action=DescribeVpcs&Version=2016-11-15&Bogus=1", nil)
		Expect(code).To(Equal(400))
		Expect(body).To(ContainSubstring("<Code>UnknownParameter</Code>"))
		Expect(body).To(ContainSubstring("The parameter Bogus is not recognized"))
		code, body = s.post("Action=DescribeVpcs&Version=2016-11-15&Filter.1.Name=vpc-id&Filter.1.Value.1=vpc-1&MaxResults=5", nil)
		Expect(code).To(Equal(200), body)
	})

	It("refuses a GET with more than 10,000 parameters clearly, not as a missing Action", func() {
		var b strings.Builder
		b.WriteString("Action=DescribeVpcs&Version=2016-11-15")
		for i := 0; i < 10001; i++ {
			fmt.Fprintf(&b, "&VpcId.%d=vpc-%08x", i+1, i)
		}
		req, _ := http.NewRequest(http.MethodGet, s.url+"/?"+b.String(), nil)
		code, body := do(req)
		Expect(code).To(Equal(400))
		Expect(body).To(ContainSubstring("InvalidParameterValue"))
		Expect(body).To(ContainSubstring("parameters"))
		Expect(body).NotTo(ContainSubstring("MissingParameter"))
	})

	It("refuses CreateSubnet with host bits set instead of normalising it", func() {
		_, body := s.post("Action=DescribeVpcs&Version=2016-11-15", nil)
		vpc := strings.Split(strings.Split(body, "<vpcId>")[1], "<")[0]
		code, body := s.post("Action=CreateSubnet&Version=2016-11-15&VpcId="+vpc+"&CidrBlock=10.0.4.1/24", nil)
		Expect(code).To(Equal(400))
		Expect(body).To(ContainSubstring("InvalidSubnet.Range"))
		Expect(body).To(ContainSubstring("10.0.4.1/24"))
	})

	It("refuses a fault rule with an empty action", func() {
		resp, err := http.Post(s.url+"/_fake/v1/faults", "application/json", strings.NewReader(`[{"action":"","code":"RequestLimitExceeded"}]`))
		Expect(err).NotTo(HaveOccurred())
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(400), string(b))
		Expect(string(b)).To(ContainSubstring("action"))
	})

	It("refuses cross-origin requests (a web page's text/plain POST) on both APIs", func() {
		code, body := s.post("Action=CreateVpc&Version=2016-11-15&CidrBlock=10.8.0.0/16", map[string]string{"Origin": "http://evil.example", "Content-Type": "text/plain"})
		Expect(code).To(Equal(403))
		Expect(body).To(ContainSubstring("Cross-origin requests are refused"))
		req, _ := http.NewRequest(http.MethodPost, s.url+"/_fake/v1/faults", strings.NewReader(`[{"action":"*","code":"X"}]`))
		req.Header.Set("Origin", "http://evil.example")
		code, _ = do(req)
		Expect(code).To(Equal(403))
		u, _ := url.Parse(s.url)
		code, _ = s.post("Action=DescribeVpcs&Version=2016-11-15", map[string]string{"Origin": "http://" + u.Host})
		Expect(code).To(Equal(200))
	})
})

var _ = Describe("--control-token", Label("reliability"), func() {
	It("refuses control requests without the token", func() {
		s := serve("", "", "--control-token", "t0ken")
		req, _ := http.NewRequest(http.MethodGet, s.url+"/_fake/v1/faults", nil)
		code, _ := do(req)
		Expect(code).To(Equal(401))
		req.Header.Set("Authorization", "Bearer wrong")
		code, _ = do(req)
		Expect(code).To(Equal(401))
		req.Header.Set("Authorization", "Bearer t0ken")
		code, _ = do(req)
		Expect(code).To(Equal(200))
	})
})

var _ = Describe("instance limits and IMDS listeners", Label("reliability"), func() {
	const world = "vpcs: [{name: v, cidr: 10.0.0.0/16, subnets: [{name: a, cidr: 10.0.0.0/20, az: us-west-2a}]}]\n"
	subnet := func(s *gserver) string {
		_, body := s.post("Action=DescribeSubnets&Version=2016-11-15", nil)
		return strings.Split(strings.Split(body, "<subnetId>")[1], "<")[0]
	}

	It("caps instances per region with InstanceLimitExceeded", func() {
		s := serve(world, "")
		sn := subnet(s)
		code, body := s.post("Action=RunInstances&Version=2016-11-15&InstanceType=t3.nano&MinCount=1001&MaxCount=1001&SubnetId="+sn, nil)
		Expect(code).To(Equal(400))
		Expect(body).To(ContainSubstring("<Code>InstanceLimitExceeded</Code>"))
		Expect(body).To(ContainSubstring("instance limit of 1000"))
		code, body = s.post("Action=RunInstances&Version=2016-11-15&InstanceType=t3.nano&MinCount=1&MaxCount=1200&SubnetId="+sn, nil)
		Expect(code).To(Equal(200), body)
		Expect(strings.Count(body, "<instanceState>")).To(Equal(1000), "MaxCount is trimmed to what the limit allows")
	})

	It("gives 2,000 instances IMDS from one listener under a 600-descriptor limit", func() {
		s := serve(world, "ulimit -n 600 &&", "--max-instances", "2000")
		sn := subnet(s)
		for i := 0; i < 20; i++ {
			code, body := s.post("Action=RunInstances&Version=2016-11-15&InstanceType=t3.nano&MinCount=100&MaxCount=100&SubnetId="+sn, nil)
			Expect(code).To(Equal(200), body)
		}
		code, body := s.post("Action=RunInstances&Version=2016-11-15&InstanceType=t3.nano&MinCount=1&MaxCount=1&SubnetId="+sn, nil)
		Expect(code).To(Equal(400))
		Expect(body).To(ContainSubstring("InstanceLimitExceeded"))
		resp, err := http.Get(s.url + "/_fake/v1/instances")
		Expect(err).NotTo(HaveOccurred())
		var insts []struct{ InstanceID, IMDSEndpoint string }
		Expect(json.NewDecoder(resp.Body).Decode(&insts)).To(Succeed())
		resp.Body.Close()
		Expect(insts).To(HaveLen(2000))
		hosts := map[string]bool{}
		for _, in := range insts {
			u, err := url.Parse(in.IMDSEndpoint)
			Expect(err).NotTo(HaveOccurred(), in.InstanceID)
			hosts[u.Host] = true
		}
		Expect(hosts).To(HaveLen(1), "one listener")
		for _, k := range []int{0, 1, 999, 1500, 1999} {
			in := insts[k]
			// The SDKs and curl send the URL's user as basic auth.
			req, _ := http.NewRequest(http.MethodGet, in.IMDSEndpoint+"/latest/meta-data/instance-id", nil)
			code, body := do(req)
			Expect(code).To(Equal(200))
			Expect(body).To(Equal(in.InstanceID))
		}
	})
})
