package ui_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/internal/labtest"
	"github.com/vpclab/vpclab/lab"
	"github.com/vpclab/vpclab/lab/ui"
	"github.com/vpclab/vpclab/scenarios"
)

func TestUI(t *testing.T) { labtest.Suite(t, "ui", true) }

var bins = labtest.Binaries("ipamd", "aws-cni", "aws-vpc-cni", "egress-cni", labtest.RefPlugins)

// artifacts is where screenshots go: $VPCLAB_ARTIFACTS, else the spec's
// temporary directory.
func artifacts() string {
	if d := os.Getenv("VPCLAB_ARTIFACTS"); d != "" {
		Expect(os.MkdirAll(d, 0o755)).To(Succeed())
		return d
	}
	return GinkgoT().TempDir()
}

// chromium runs Debian's headless Chromium (make deps installs it) with
// args, returning its stdout.
func chromium(ctx context.Context, args ...string) string {
	GinkgoHelper()
	bin, err := exec.LookPath("chromium")
	Expect(err).NotTo(HaveOccurred(), "chromium is not installed (make deps installs Debian's)")
	prof := GinkgoT().TempDir()
	all := append([]string{"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--user-data-dir=" + prof}, args...)
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, all...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	Expect(cmd.Run()).To(Succeed(), errb.String())
	return out.String()
}

// screenshot saves a PNG of url and checks it is one.
func screenshot(url, name string) string {
	GinkgoHelper()
	path := filepath.Join(artifacts(), name)
	chromium(context.Background(), "--window-size=1200,1000", "--hide-scrollbars", "--screenshot="+path, url)
	b, err := os.ReadFile(path)
	Expect(err).NotTo(HaveOccurred())
	Expect(len(b)).To(BeNumerically(">", 10_000))
	Expect(string(b[1:4])).To(Equal("PNG"))
	GinkgoWriter.Printf("screenshot: %s\n", path)
	return path
}

// labConfig is a two-node lab whose first address assignments (filling
// the pools at start) are throttled.
func labConfig() lab.Config {
	c := lab.Default()
	c.Name = labtest.Name("u", 7)
	c.Owner = "test"
	c.BinDir = *bins
	c.Env = map[string]string{"VPCLAB_POOL_INTERVAL": "100ms", "VPCLAB_IP_COOLDOWN": "0s"}
	c.Faults = []faults.Rule{{ID: "storm", Action: "AssignPrivateIpAddresses", Code: "RequestLimitExceeded", Count: 3}}
	return c
}

// noScript adds a policy that blocks every script to an answer (a second
// Content-Security-Policy header: both are enforced).
type noScript struct {
	http.ResponseWriter
	wrote bool
}

func (n *noScript) WriteHeader(code int) {
	if !n.wrote {
		n.wrote = true
		n.Header().Add("Content-Security-Policy", "script-src 'none'")
		n.ResponseWriter.WriteHeader(code)
	}
}

func (n *noScript) Write(b []byte) (int, error) {
	n.WriteHeader(http.StatusOK)
	return n.ResponseWriter.Write(b)
}

var updatesRE = regexp.MustCompile(`<body data-updates="(\d+)"`)

var _ = Describe("the live page", Label("ui"), func() {
	It("shows every node and ENI, the throttled calls on the timeline, and updates itself when a pod is added; its static parts need no JavaScript", func() {
		ctx := context.Background()
		l, err := lab.New(ctx, labConfig(), GinkgoWriter.Printf)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(l.Close)
		// The throttled assignments and the retries after them are in.
		Eventually(func() int { return len(l.Events(ec2query.EventFilter{ErrorsOnly: true})) }, 20*time.Second).Should(BeNumerically(">=", 3))

		srv := &ui.Server{Title: "vpclab lab " + l.Name(), Token: ui.NewToken(), Snapshot: func(context.Context) (lab.Snapshot, error) { return l.Snapshot(), nil }}
		// The page's first refresh finds a pod added after the page
		// was drawn: the test adds it when that refresh arrives.
		var once sync.Once
		var addErr error
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/fragment" {
				once.Do(func() { _, addErr = l.Nodes()[0].AddPodRetry(ctx, "default", "added-live", 20*time.Second) })
			}
			if r.URL.Query().Get("noscript") == "1" {
				w = &noScript{ResponseWriter: w}
			}
			srv.ServeHTTP(w, r)
		})
		hs := httptest.NewServer(h)
		DeferCleanup(hs.Close)
		url := hs.URL + "/?token=" + srv.Token

		resp, err := http.Get(hs.URL + "/")
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusForbidden), "no token, no page")

		dom := chromium(ctx, "--virtual-time-budget=6000", "--dump-dom", url)
		once.Do(func() {}) // after the handler's Do: addErr is settled
		Expect(addErr).NotTo(HaveOccurred(), "adding the pod while the page refreshed")
		m := updatesRE.FindStringSubmatch(dom)
		Expect(m).NotTo(BeNil(), dom[:min(len(dom), 400)])
		n, _ := strconv.Atoi(m[1])
		Expect(n).To(BeNumerically(">=", 1), "the page refreshed itself")
		Expect(dom).To(ContainSubstring(`data-pod="default/added-live"`), "the pod added after the page was drawn")
		for _, node := range l.Nodes() {
			Expect(dom).To(ContainSubstring(`data-node="`+node.Name+`"`), node.Name)
		}
		for _, e := range l.Region().NetworkInterfaces() {
			if e.Attachment != nil && e.VPCID == l.VPCID() {
				Expect(dom).To(ContainSubstring(`data-eni="`+e.ID+`"`), e.ID)
			}
		}
		throttled := strings.Count(dom, `class="call-error throttled" data-code="RequestLimitExceeded"`)
		Expect(throttled).To(BeNumerically(">=", 3), "the throttled AssignPrivateIpAddresses calls on the timeline")
		Expect(dom).To(ContainSubstring(`class="fault" data-fault="storm"`), "the fault's window")

		// Scripts off: the page's own script blocked by a policy added
		// to the answer (Chromium's headless dump needs JavaScript itself).
		static := chromium(ctx, "--virtual-time-budget=6000", "--dump-dom", url+"&noscript=1")
		Expect(static).To(ContainSubstring(`<body data-updates="0"`), "its script did not run, yet:")
		Expect(static).To(ContainSubstring(`<svg class="timeline"`))
		for _, node := range l.Nodes() {
			Expect(static).To(ContainSubstring(`data-node="` + node.Name + `"`))
		}
		Expect(static).To(ContainSubstring(`class="call-error throttled"`))
		screenshot(url, "ui-live.png")
	})
})

var _ = Describe("the scenario report", Label("ui"), func() {
	It("is one self-contained file with the steps, the timeline, the topology and the calls, readable without JavaScript", func() {
		s, err := scenarios.Parse([]byte(`name: report under throttling
labels: [ui]
timers: fast
lab:
  vpcCidr: 10.0.0.0/16
  subnets: [{name: a, cidr: 10.0.0.0/24}]
  nodes: [{name: node, instanceType: m5.large, count: 2}]
steps:
  - fault: {action: CreateNetworkInterface, code: RequestLimitExceeded, count: 2}
  - addPods: {count: 12, nodes: [all]}
  - name: pods despite the throttling
    expect: {pods: 12, failedAdds: 0, events: {RequestLimitExceeded: [2, -1]}}
  - delPods: 4
  - name: four gone
    expect: {pods: 8}
`), "inline")
		Expect(err).NotTo(HaveOccurred())
		r := scenarios.Runner{BinDir: *bins, Owner: "test", Capture: true, Log: GinkgoWriter.Printf}
		res := r.Run(context.Background(), s, labtest.Name("u", 7))
		Expect(res.Passed).To(BeTrue(), "%v\n%s", res.Failures, res.Dump)
		Expect(res.Snapshot).NotTo(BeNil())
		path := filepath.Join(GinkgoT().TempDir(), "report.html")
		Expect(scenarios.WriteReportFile(path, s, []scenarios.Result{res, res})).To(Succeed())
		raw, err := os.ReadFile(path)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(raw)).NotTo(MatchRegexp(`(src|href)="https?://`), "self-contained: no external URL")

		Expect(string(raw)).NotTo(ContainSubstring("<script"), "a report needs no JavaScript")
		dom := chromium(context.Background(), "--dump-dom", "file://"+path)
		Expect(strings.Count(dom, `<section class="run"`)).To(Equal(2), "two runs stacked")
		Expect(dom).To(ContainSubstring(`data-step="2"`))
		Expect(dom).To(ContainSubstring("pods despite the throttling"))
		Expect(strings.Count(dom, `class="step-end"`)).To(Equal(4), "both runs' two expect steps on their timelines")
		Expect(dom).To(ContainSubstring(`class="call-error throttled" data-code="RequestLimitExceeded" data-action="CreateNetworkInterface"`))
		for _, n := range res.Snapshot.Status.Nodes {
			Expect(dom).To(ContainSubstring(`data-node="` + n.Name + `"`))
			for _, e := range n.ENIs {
				Expect(dom).To(ContainSubstring(`data-eni="` + e.ID + `"`))
			}
		}
		Expect(strings.Count(dom, `class="pod-op add"`)).To(BeNumerically(">=", 2*12))
		Expect(dom).To(ContainSubstring(`PASS</span>`))
		screenshot("file://"+path, "ui-report.png")
	})
})
