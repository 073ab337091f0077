package main

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"html"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/internal/labtest"
)

// TestFakeEC2 runs the Ginkgo specs of the standalone server (the
// reliability suite).
func TestFakeEC2(t *testing.T) { labtest.Suite(t, "fakeec2 serve", false) }

var bins = labtest.Binaries("fakeec2")

// gserver is a running standalone server.
type gserver struct {
	url, region string
}

// serve starts the binary with a world file and flags (wrap, when given,
// is a shell prefix such as "ulimit -n 600 &&") and waits for its endpoint.
func serve(world, wrap string, flags ...string) *gserver {
	GinkgoHelper()
	cfg := filepath.Join(GinkgoT().TempDir(), "world.yaml")
	Expect(os.WriteFile(cfg, []byte(world), 0o644)).To(Succeed())
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--config", cfg, "--no-throttle"}, flags...)
	cmd := exec.Command(filepath.Join(*bins, "fakeec2"), args...)
	if wrap != "" {
		q := make([]string, len(args))
		for i, a := range args {
			q[i] = "'" + a + "'"
		}
		cmd = exec.Command("sh", "-c", wrap+" exec "+filepath.Join(*bins, "fakeec2")+" "+strings.Join(q, " "))
	}
	out, err := cmd.StdoutPipe()
	Expect(err).NotTo(HaveOccurred())
	cmd.Stderr = GinkgoWriter
	Expect(cmd.Start()).To(Succeed())
	DeferCleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	re := regexp.MustCompile(`EC2 API (http://\S+) \(region ([a-z0-9-]+)`)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			go func() { _, _ = io.Copy(io.Discard, out) }()
			return &gserver{url: m[1], region: m[2]}
		}
	}
	Fail("the server printed no endpoint")
	return nil
}

// post sends a form-encoded Query API request, optionally with headers.
func (s *gserver) post(form string, hdr map[string]string) (int, string) {
	GinkgoHelper()
	req, err := http.NewRequest(http.MethodPost, s.url+"/", strings.NewReader(form))
	Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return do(req)
}

func do(req *http.Request) (int, string) {
	GinkgoHelper()
	resp, err := http.DefaultClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, html.UnescapeString(string(b))
}

// sigv4 is a signer written from the SigV4 specification, independent of
// the SDK (which never gets these wrong) and of the server's verifier.
type sigv4 struct {
	keyID, secret, region, service string
	date                           time.Time
	scopeDate                      string   // overrides the scope's date
	signed                         []string // header names to sign (lower case)
	payloadHash                    string   // X-Amz-Content-Sha256 to send ("" none)
	hashOf                         []byte   // the body the signature covers (nil: the real one)
}

// sign sets X-Amz-Date and Authorization on req for body.
func (g sigv4) sign(req *http.Request, body []byte) {
	amzDate := g.date.UTC().Format("20060102T150405Z")
	req.Header.Set("X-Amz-Date", amzDate)
	if g.payloadHash != "" {
		req.Header.Set("X-Amz-Content-Sha256", g.payloadHash)
	}
	covered := body
	if g.hashOf != nil {
		covered = g.hashOf
	}
	sum := sha256.Sum256(covered)
	payload := hex.EncodeToString(sum[:])
	if g.payloadHash == "UNSIGNED-PAYLOAD" {
		payload = g.payloadHash
	}
	signed := append([]string(nil), g.signed...)
	sort.Strings(signed)
	var canonHeaders strings.Builder
	for _, h := range signed {
		v := req.Header.Get(h)
		if h == "host" {
			v = req.Host
			if v == "" {
				v = req.URL.Host
			}
		}
		canonHeaders.WriteString(h + ":" + strings.TrimSpace(v) + "\n")
	}
	q := req.URL.Query()
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var cq []string
	for _, k := range keys {
		for _, v := range q[k] {
			cq = append(cq, url.QueryEscape(k)+"="+url.QueryEscape(v))
		}
	}
	canonical := strings.Join([]string{req.Method, "/", strings.Join(cq, "&"), canonHeaders.String(), strings.Join(signed, ";"), payload}, "\n")
	ch := sha256.Sum256([]byte(canonical))
	scopeDate := amzDate[:8]
	if g.scopeDate != "" {
		scopeDate = g.scopeDate
	}
	scope := scopeDate + "/" + g.region + "/" + g.service + "/aws4_request"
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(ch[:])
	mac := func(k []byte, s string) []byte { h := hmac.New(sha256.New, k); h.Write([]byte(s)); return h.Sum(nil) }
	k := mac([]byte("AWS4"+g.secret), scopeDate)
	k = mac(k, g.region)
	k = mac(k, g.service)
	k = mac(k, "aws4_request")
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+g.keyID+"/"+scope+", SignedHeaders="+strings.Join(signed, ";")+", Signature="+hex.EncodeToString(mac(k, toSign)))
}
