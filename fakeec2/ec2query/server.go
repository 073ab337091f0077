// Package ec2query is fakeec2's EC2 Query API (protocol 2016-11-15): it
// decodes a request, checks its signature, throttles it and applies fault
// rules, calls the region model and answers in EC2's XML shapes and errors.
// Every call is recorded in a CloudTrail-shaped audit log.
package ec2query

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/model"
)

// APIVersion is the only EC2 Query API version served.
const APIVersion = "2016-11-15"

const xmlns = "http://ec2.amazonaws.com/doc/2016-11-15/"

// maxBody bounds a request body; EC2 requests are small.
const maxBody = 1 << 20

// Options configure the Query API.
type Options struct {
	// Throttle configures EC2's per-action token buckets (off by default).
	Throttle ThrottleConfig
	// Seed makes request ids reproducible.
	Seed uint64
	// Credentials maps access key ids to secret keys for Strict mode.
	Credentials map[string]string
	// Strict verifies SigV4 signatures against Credentials.
	Strict bool
	// AuditCapacity bounds the audit log (default 100000 records).
	AuditCapacity int
	// Logger receives one debug line per call; slog.Default when nil.
	Logger *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Faults are the fault rules applied to calls (none when nil).
	Faults *faults.Rules
}

// Server serves the EC2 Query API for a region, with SigV4, throttling,
// fault injection and an audit log.
type Server struct {
	region   *model.Region
	throttle *Throttler
	faults   *faults.Rules
	audit    *Audit
	opts     Options
	log      *slog.Logger
	now      func() time.Time

	ridMu sync.Mutex
	rid   *rand.Rand

	hooks callHooks
}

// New returns the Query API of region.
func New(region *model.Region, opts Options) *Server {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	f := opts.Faults
	if f == nil {
		f = faults.New(opts.Seed, now)
	}
	return &Server{
		region: region, throttle: NewThrottler(opts.Throttle, now), faults: f,
		audit: NewAudit(opts.AuditCapacity), opts: opts, log: log, now: now,
		rid: rand.New(rand.NewPCG(opts.Seed, 0x5eed)),
	}
}

// Region returns the model behind the server.
func (s *Server) Region() *model.Region { return s.region }

// Throttler returns the throttling state.
func (s *Server) Throttler() *Throttler { return s.throttle }

// Faults returns the fault rules.
func (s *Server) Faults() *faults.Rules { return s.faults }

// Audit returns the audit log.
func (s *Server) Audit() *Audit { return s.audit }

func (s *Server) requestID() string {
	s.ridMu.Lock()
	defer s.ridMu.Unlock()
	a, b := s.rid.Uint64(), s.rid.Uint64()
	return fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", a>>32, a>>16&0xffff, a&0xfff, b>>48&0x3fff|0x8000, b&0xffffffffffff)
}

// ServeHTTP serves the EC2 Query API at every path.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !SameOrigin(r) {
		c := &call{rid: s.requestID(), start: time.Now(), action: r.URL.Query().Get("Action")}
		s.writeError(w, c, r, &model.APIError{Code: "UnauthorizedOperation", Message: "Cross-origin requests are refused (Origin " + r.Header.Get("Origin") + ").", Status: http.StatusForbidden}, false)
		return
	}
	s.serveAPI(w, r)
}

// SameOrigin refuses what a web page's script could send: a request with
// an Origin that is not the server's own. SDKs and the CLI send no Origin.
func SameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

// call carries one API request through the pipeline.
type call struct {
	action string
	// who made the call (CloudTrail's userIdentity).
	who   Identity
	form  url.Values
	q     *qnode
	rid   string
	start time.Time
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	c := &call{rid: s.requestID(), start: time.Now()}
	h, err := s.decodeCall(r, c)
	if err != nil {
		s.writeError(w, c, r, err, false)
		return
	}
	if throttled, err := s.admit(r, c); err != nil {
		s.writeError(w, c, r, err, throttled)
		return
	}
	out, err := h(s, c.q)
	if err != nil {
		s.writeError(w, c, r, err, false)
		return
	}
	s.writeResult(w, c, r, out)
}

// decodeCall reads, authenticates and checks one request into c and returns
// its action's handler.
func (s *Server) decodeCall(r *http.Request, c *call) (handler, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, model.Errorf("InvalidRequest", "Could not read the request body: %v", err)
	}
	if len(body) > maxBody {
		return nil, model.Errorf("InvalidRequest", "The request body exceeds %d bytes", maxBody)
	}
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		return nil, &model.APIError{Code: "InvalidAction", Message: "The HTTP method " + r.Method + " is not supported", Status: http.StatusMethodNotAllowed}
	}
	form, err := parseForm(string(body), "request body")
	if err != nil {
		return nil, err
	}
	query, err := parseForm(r.URL.RawQuery, "query string")
	if err != nil {
		return nil, err
	}
	for k, v := range query {
		if _, ok := form[k]; !ok {
			form[k] = v
		}
	}
	c.form = form
	c.action = form.Get("Action")
	key, err := s.checkAuth(r, body)
	if err != nil {
		return nil, err
	}
	c.who = s.identity(r, key)
	if c.action == "" {
		return nil, model.ErrMissing("Action")
	}
	h, ok := handlers[c.action]
	if !ok {
		return nil, model.Errorf("InvalidAction", "The action %s is not valid for this web service.", c.action)
	}
	if v := form.Get("Version"); v != "" && v != APIVersion {
		return nil, model.Errorf("NoSuchVersion", "An invalid or unsupported version was specified (%s).", v)
	}
	if err := checkParams(c.action, form); err != nil {
		return nil, err
	}
	c.q = decodeQuery(form)
	return h, nil
}

// admit applies throttling, scripted faults and lag, and DryRun to a decoded
// call; throttled says the refusal is a throttle.
func (s *Server) admit(r *http.Request, c *call) (throttled bool, err error) {
	unfiltered := c.q.child("Filter") == nil && !c.q.present("MaxResults") && !c.q.present("NextToken")
	resources := 0
	if c.action == "RunInstances" {
		resources, _ = strconv.Atoi(c.form.Get("MaxCount"))
		resources = max(resources, 1)
	} else if c.action == "TerminateInstances" {
		ids, _ := c.q.strings("InstanceId")
		resources = len(ids)
	}
	if !s.throttle.Allow(c.action, unfiltered, resources) {
		return true, model.Errorf("RequestLimitExceeded", "Request limit exceeded. Account %s has been throttled on ec2:%s because it exceeded its request rate limit.", s.region.AccountID(), c.action)
	}
	lat, fault := s.faults.Evaluate(faults.Call{Action: c.action, Params: c.form, Caller: c.who.Names()})
	if lat > 0 {
		select {
		case <-time.After(lat):
		case <-r.Context().Done():
		}
	}
	if fault != nil {
		return false, fault
	}
	if dry, _ := c.q.boolean("DryRun"); dry != nil && *dry {
		return false, model.Errorf("DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
	}
	return false, nil
}

// innerXML renders v's fields as XML children (without a root element).
func innerXML(v any) ([]byte, error) {
	var buf bytes.Buffer
	if err := xml.NewEncoder(&buf).EncodeElement(v, xml.StartElement{Name: xml.Name{Local: "x"}}); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	b = bytes.TrimPrefix(b, []byte("<x>"))
	b = bytes.TrimSuffix(b, []byte("</x>"))
	if bytes.Equal(b, []byte("<x/>")) || bytes.Equal(buf.Bytes(), []byte("<x></x>")) {
		return nil, nil
	}
	return b, nil
}

func (s *Server) writeResult(w http.ResponseWriter, c *call, r *http.Request, out any) {
	inner, err := innerXML(out)
	if err != nil {
		s.writeError(w, c, r, model.Errorf("InternalError", "encode response: %v", err), false)
		return
	}
	var buf bytes.Buffer
	buf.Grow(len(inner) + 256)
	buf.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n<" + c.action + `Response xmlns="` + xmlns + `"><requestId>` + c.rid + "</requestId>")
	buf.Write(inner)
	buf.WriteString("</" + c.action + "Response>")
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.Header().Set("x-amzn-requestid", c.rid)
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
	var resp any
	if !readOnly(c.action) {
		resp = xmlToJSON(buf.Bytes())
	}
	s.record(c, r, resp, nil, false)
}

type xError struct {
	XMLName   xml.Name `xml:"Response"`
	Errors    []xErr   `xml:"Errors>Error"`
	RequestID string   `xml:"RequestID"`
}

type xErr struct {
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

func (s *Server) writeError(w http.ResponseWriter, c *call, r *http.Request, err error, throttled bool) {
	ae, ok := model.AsAPIError(err)
	if !ok {
		ae = model.Errorf("InternalError", "%v", err)
	}
	status := ae.Status
	if status == 0 {
		status = StatusForCode(ae.Code)
	}
	b, _ := xml.Marshal(xError{Errors: []xErr{{ae.Code, ae.Message}}, RequestID: c.rid})
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.Header().Set("x-amzn-requestid", c.rid)
	w.WriteHeader(status)
	_, _ = w.Write(append([]byte(`<?xml version="1.0" encoding="UTF-8"?>`+"\n"), b...))
	s.record(c, r, nil, ae, throttled)
}

func readOnly(action string) bool {
	for _, p := range []string{"Describe", "Get", "List"} {
		if strings.HasPrefix(action, p) {
			return true
		}
	}
	return false
}

func (s *Server) record(c *call, r *http.Request, resp any, ae *model.APIError, throttled bool) {
	src, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		src = r.RemoteAddr
	}
	rec := Record{
		EventVersion: "1.08", EventTime: s.now().UTC(), EventSource: "ec2.amazonaws.com", EventName: c.action,
		EventType: "AwsApiCall", AWSRegion: s.region.Name(), SourceIPAddress: src, UserAgent: r.UserAgent(),
		RequestParameters: requestParameters(c.form), ResponseElements: resp, RequestID: c.rid, EventID: c.rid,
		RecipientAccountID: s.region.AccountID(), ReadOnly: readOnly(c.action), Throttled: throttled, UserIdentity: c.who,
		DurationMs: float64(time.Since(c.start).Microseconds()) / 1000,
	}
	if ae != nil {
		rec.ErrorCode, rec.ErrorMessage = ae.Code, ae.Message
	}
	s.tell(s.audit.add(rec))
	s.log.Debug("ec2 call", "action", c.action, "requestId", c.rid, "error", rec.ErrorCode)
}

// maxParams bounds the parameters of one request (url.ParseQuery's own
// limit); more is refused instead of silently dropped.
const maxParams = 10000

// parseForm decodes form encoding, refusing what cannot be read whole.
func parseForm(s, what string) (url.Values, error) {
	if n := strings.Count(s, "&") + 1; s != "" && n > maxParams {
		return nil, model.Errorf("InvalidParameterValue", "The %s has %d parameters; at most %d are accepted.", what, n, maxParams)
	}
	v, err := url.ParseQuery(s)
	if err != nil {
		return nil, model.Errorf("InvalidParameterValue", "The %s is not valid form encoding: %v", what, err)
	}
	return v, nil
}
