// Package control is fakeec2's JSON control API under /_fake/v1/: the
// region's state and invariants, instances with their IMDS endpoints, fault
// rules, throttling, timing, per-instance IMDS lag, and the audit log of
// API calls (with long-polling).
package control

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/imds"
	"github.com/vpclab/vpclab/fakeec2/model"
)

// Prefix is where the control API lives.
const Prefix = "/_fake/v1/"

// maxBody bounds a request body.
const maxBody = 1 << 20

// InstanceSummary is one entry of GET /_fake/v1/instances.
type InstanceSummary struct {
	InstanceID   string `json:"instanceId"`
	InstanceType string `json:"instanceType"`
	State        string `json:"state"`
	PrivateIP    string `json:"privateIp"`
	SubnetID     string `json:"subnetId"`
	VPCID        string `json:"vpcId"`
	AZ           string `json:"availabilityZone"`
	PrimaryENI   string `json:"primaryNetworkInterfaceId"`
	IMDSEndpoint string `json:"imdsEndpoint,omitempty"`
}

// Handler serves the control API of one fake region.
type Handler struct {
	region *model.Region
	api    *ec2query.Server
	imds   *imds.Service
	token  string
	mux    *http.ServeMux
	allow  map[string][]string // resource -> methods it serves
}

// New returns the control API of a region served by api and m; a non-empty
// token must accompany every request (Authorization: Bearer TOKEN).
func New(region *model.Region, api *ec2query.Server, m *imds.Service, token string) *Handler {
	h := &Handler{region: region, api: api, imds: m, token: token, mux: http.NewServeMux(), allow: map[string][]string{}}
	routes := map[string]http.HandlerFunc{
		"GET healthz":         func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) },
		"GET state":           h.state,
		"GET instances":       func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, Instances(h.region, h.imds)) },
		"GET invariants":      h.invariants,
		"GET faults":          func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, h.api.Faults().List()) },
		"POST faults":         h.addFaults,
		"DELETE faults":       h.clearFaults,
		"DELETE faults/{id}":  h.removeFault,
		"GET throttling":      h.getThrottling,
		"PUT throttling":      h.putThrottling,
		"GET allocation":      func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, h.region.Allocation()) },
		"PUT allocation":      h.putAllocation,
		"GET timing":          h.getTiming,
		"PUT timing":          h.putTiming,
		"GET events":          h.events,
		"GET imds":            func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, h.imds.Status()) },
		"GET imds/{instance}": h.imdsStatus,
		"PUT imds/{instance}": h.setIMDSLag,
	}
	for pattern, fn := range routes {
		method, path, ok := strings.Cut(pattern, " ")
		if !ok {
			method, path = "", pattern
		}
		h.mux.HandleFunc(strings.TrimSpace(method+" "+Prefix+path), fn)
		resource, _, _ := strings.Cut(path, "/")
		h.allow[resource] = append(h.allow[resource], method)
	}
	for r, methods := range h.allow {
		slices.Sort(methods)
		h.allow[r] = slices.Compact(methods)
	}
	h.mux.HandleFunc("/", h.unknown)
	return h
}

// ServeHTTP refuses foreign origins and requests without the token, then
// routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !ec2query.SameOrigin(r) {
		fail(w, http.StatusForbidden, "cross-origin requests are refused (Origin %s)", r.Header.Get("Origin"))
		return
	}
	if h.token != "" {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(h.token)) != 1 {
			fail(w, http.StatusUnauthorized, "the control API needs the server's token (Authorization: Bearer TOKEN)")
			return
		}
	}
	h.mux.ServeHTTP(w, r)
}

// Instances lists a region's instances with their IMDS endpoints, as GET
// /_fake/v1/instances does.
func Instances(region *model.Region, m *imds.Service) []InstanceSummary {
	insts := region.Instances()
	out := make([]InstanceSummary, 0, len(insts))
	for _, i := range insts {
		out = append(out, InstanceSummary{InstanceID: i.ID, InstanceType: i.Type, State: i.State, PrivateIP: i.PrivateIP.String(),
			SubnetID: i.SubnetID, VPCID: i.VPCID, AZ: i.AZ, PrimaryENI: i.PrimaryENI, IMDSEndpoint: m.Endpoint(i.ID)})
	}
	return out
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func fail(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, struct {
		Error string `json:"error"`
	}{fmt.Sprintf(format, args...)})
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode request body: %w", err)
	}
	return nil
}

func (h *Handler) unknown(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		fail(w, http.StatusNotFound, "unknown control path %s (want %s…)", r.URL.Path, Prefix)
		return
	}
	resource, _, _ := strings.Cut(rest, "/")
	if methods, ok := h.allow[resource]; ok {
		w.Header().Set("Allow", strings.Join(methods, ", "))
		fail(w, http.StatusMethodNotAllowed, "method %s not allowed on %s", r.Method, r.URL.Path)
		return
	}
	fail(w, http.StatusNotFound, "unknown control resource %q", resource)
}

func (h *Handler) state(w http.ResponseWriter, _ *http.Request) {
	snap, sub := h.region.SubscribeWithSnapshot()
	sub.Close()
	writeJSON(w, http.StatusOK, snap)
}

func (h *Handler) invariants(w http.ResponseWriter, _ *http.Request) {
	if err := h.region.CheckInvariants(); err != nil {
		writeJSON(w, http.StatusConflict, map[string]any{"ok": false, "violations": strings.Split(err.Error(), "\n")})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "violations": []string{}})
}

// addFaults takes one rule or a list of them.
func (h *Handler) addFaults(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		fail(w, http.StatusBadRequest, "read body: %v", err)
		return
	}
	var rules []faults.Rule
	if err := json.Unmarshal(body, &rules); err != nil {
		var one faults.Rule
		if err2 := json.Unmarshal(body, &one); err2 != nil {
			fail(w, http.StatusBadRequest, "body must be a fault rule or a list of them: %v", err2)
			return
		}
		rules = []faults.Rule{one}
	}
	added, err := h.api.Faults().Add(rules...)
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	writeJSON(w, http.StatusCreated, added)
}

func (h *Handler) clearFaults(w http.ResponseWriter, _ *http.Request) {
	h.api.Faults().Clear()
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) removeFault(w http.ResponseWriter, r *http.Request) {
	if !h.api.Faults().Remove(r.PathValue("id")) {
		fail(w, http.StatusNotFound, "no fault rule %q", r.PathValue("id"))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) getThrottling(w http.ResponseWriter, _ *http.Request) {
	t := h.api.Throttler()
	writeJSON(w, http.StatusOK, map[string]any{"config": t.Config(), "buckets": t.Stats()})
}

func (h *Handler) putThrottling(w http.ResponseWriter, r *http.Request) {
	var cfg ec2query.ThrottleConfig
	if err := decodeBody(r, &cfg); err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	if cfg.TimeScale < 0 {
		fail(w, http.StatusBadRequest, "timeScale %v must not be negative", cfg.TimeScale)
		return
	}
	for k, b := range cfg.Overrides {
		if b.Capacity < 1 || b.Refill < 0 {
			fail(w, http.StatusBadRequest, "override %q: capacity must be ≥ 1 and refill ≥ 0", k)
			return
		}
	}
	h.api.Throttler().SetConfig(cfg)
	writeJSON(w, http.StatusOK, map[string]any{"config": cfg})
}

func (h *Handler) getTiming(w http.ResponseWriter, _ *http.Request) {
	a, d, l := h.region.Timing()
	e, ad, rm := h.region.Consistency()
	writeJSON(w, http.StatusOK, model.Timing{AttachLatency: model.Duration(a), DetachLatency: model.Duration(d), ConsistencyLag: model.Duration(l),
		ENILag: model.Duration(e), AddressLag: model.Duration(ad), RemovalLag: model.Duration(rm), IMDSLag: model.Duration(h.imds.DefaultLag())})
}

func (h *Handler) putTiming(w http.ResponseWriter, r *http.Request) {
	var t model.Timing
	if err := decodeBody(r, &t); err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	if t.AttachLatency < 0 || t.DetachLatency < 0 || t.ConsistencyLag < 0 || t.IMDSLag < 0 || t.ENILag < 0 || t.AddressLag < 0 || t.RemovalLag < 0 {
		fail(w, http.StatusBadRequest, "durations must not be negative")
		return
	}
	h.region.SetTiming(time.Duration(t.AttachLatency), time.Duration(t.DetachLatency), time.Duration(t.ConsistencyLag))
	h.region.SetConsistency(time.Duration(t.ENILag), time.Duration(t.AddressLag), time.Duration(t.RemovalLag))
	h.imds.SetDefaultLag(time.Duration(t.IMDSLag))
	writeJSON(w, http.StatusOK, t)
}

// events serves the audit log. Query: action, errors=true, code, since
// (sequence), limit, wait (duration: long-poll for newer records).
func (h *Handler) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := ec2query.EventFilter{Action: q.Get("action"), ErrorCode: q.Get("code"), ErrorsOnly: q.Get("errors") == "true"}
	var err error
	if v := q.Get("since"); v != "" {
		if f.SinceSeq, err = strconv.ParseUint(v, 10, 64); err != nil {
			fail(w, http.StatusBadRequest, "since=%q is not a sequence number", v)
			return
		}
	}
	if v := q.Get("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 0 {
			fail(w, http.StatusBadRequest, "limit=%q is not a non-negative integer", v)
			return
		}
	}
	var recs []ec2query.Record
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > time.Minute {
			fail(w, http.StatusBadRequest, "wait=%q must be a duration up to 1m", v)
			return
		}
		recs = h.api.Audit().Wait(f, d)
	} else {
		recs = h.api.Audit().Events(f)
	}
	if recs == nil {
		recs = []ec2query.Record{}
	}
	Annotate(recs, h.api.Audit(), h.imds)
	writeJSON(w, http.StatusOK, recs)
}

func (h *Handler) imdsStatus(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("instance")
	for _, st := range h.imds.Status() {
		if st.InstanceID == id {
			writeJSON(w, http.StatusOK, st)
			return
		}
	}
	fail(w, http.StatusNotFound, "no running instance %q", id)
}

// setIMDSLag sets one instance's propagation lag ({"lag":"2s"}; a negative
// lag returns the instance to the default).
func (h *Handler) setIMDSLag(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("instance")
	var body struct {
		Lag *model.Duration `json:"lag"`
	}
	if err := decodeBody(r, &body); err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	if body.Lag == nil {
		fail(w, http.StatusBadRequest, "body needs a \"lag\" duration")
		return
	}
	if err := h.imds.SetLag(id, time.Duration(*body.Lag)); err != nil {
		fail(w, http.StatusNotFound, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"instanceId": id, "lag": *body.Lag})
}

// putAllocation changes the region's address allocation policy; the body
// is a model.Allocation ({"policy":"lowest"} or {"policy":"random",
// "avoidRecent":"30s"}).
func (h *Handler) putAllocation(w http.ResponseWriter, r *http.Request) {
	var a model.Allocation
	if err := decodeBody(r, &a); err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	if err := h.region.SetAllocation(a); err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, h.region.Allocation())
}
