package fakeec2

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ControlPrefix is where the control API lives.
const ControlPrefix = "/_fake/v1/"

// Timing is the region's time knobs as the control API shows them.
type Timing struct {
	AttachLatency  Duration `json:"attachLatency" yaml:"attachLatency"`
	DetachLatency  Duration `json:"detachLatency" yaml:"detachLatency"`
	ConsistencyLag Duration `json:"consistencyLag" yaml:"consistencyLag"`
	// IMDSLag is the default delay before a change shows in IMDS.
	IMDSLag Duration `json:"imdsLag" yaml:"imdsLag"`
}

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

type controlError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func controlErr(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, controlError{fmt.Sprintf(format, args...)})
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode request body: %w", err)
	}
	return nil
}

// serveControl implements the JSON control API: state, instances, faults,
// throttling, timing, events and invariants.
func (s *Server) serveControl(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, ControlPrefix)
	if path == r.URL.Path {
		controlErr(w, http.StatusNotFound, "unknown control path %s (want %s…)", r.URL.Path, ControlPrefix)
		return
	}
	seg := strings.Split(strings.Trim(path, "/"), "/")
	switch seg[0] {
	case "healthz":
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	case "state":
		if !allow(w, r, http.MethodGet) {
			return
		}
		snap, sub := s.region.SubscribeWithSnapshot()
		sub.Close()
		writeJSON(w, http.StatusOK, snap)
	case "instances":
		if !allow(w, r, http.MethodGet) {
			return
		}
		writeJSON(w, http.StatusOK, s.InstanceSummaries())
	case "faults":
		s.controlFaults(w, r, seg[1:])
	case "throttling":
		s.controlThrottling(w, r)
	case "timing":
		s.controlTiming(w, r)
	case "events":
		s.controlEvents(w, r)
	case "imds":
		s.controlIMDS(w, r, seg[1:])
	case "invariants":
		if !allow(w, r, http.MethodGet) {
			return
		}
		if err := s.region.CheckInvariants(); err != nil {
			writeJSON(w, http.StatusConflict, map[string]any{"ok": false, "violations": strings.Split(err.Error(), "\n")})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "violations": []string{}})
	default:
		controlErr(w, http.StatusNotFound, "unknown control resource %q", seg[0])
	}
}

func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	controlErr(w, http.StatusMethodNotAllowed, "method %s not allowed on %s", r.Method, r.URL.Path)
	return false
}

// InstanceSummaries lists instances as GET /_fake/v1/instances does.
func (s *Server) InstanceSummaries() []InstanceSummary {
	insts := s.region.Instances()
	out := make([]InstanceSummary, 0, len(insts))
	for _, i := range insts {
		sum := InstanceSummary{InstanceID: i.ID, InstanceType: i.Type, State: i.State, PrivateIP: i.PrivateIP.String(),
			SubnetID: i.SubnetID, VPCID: i.VPCID, AZ: i.AZ, PrimaryENI: i.PrimaryENI, IMDSEndpoint: s.imds.Endpoint(i.ID)}
		out = append(out, sum)
	}
	return out
}

func (s *Server) controlFaults(w http.ResponseWriter, r *http.Request, rest []string) {
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, s.faults.List())
	case http.MethodPost:
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
		if err != nil {
			controlErr(w, http.StatusBadRequest, "read body: %v", err)
			return
		}
		var rules []FaultRule
		if err := json.Unmarshal(body, &rules); err != nil {
			var one FaultRule
			if err2 := json.Unmarshal(body, &one); err2 != nil {
				controlErr(w, http.StatusBadRequest, "body must be a fault rule or a list of them: %v", err2)
				return
			}
			rules = []FaultRule{one}
		}
		added, err := s.faults.Add(rules...)
		if err != nil {
			controlErr(w, http.StatusBadRequest, "%v", err)
			return
		}
		writeJSON(w, http.StatusCreated, added)
	case http.MethodDelete:
		if len(rest) > 0 && rest[0] != "" {
			if !s.faults.Remove(rest[0]) {
				controlErr(w, http.StatusNotFound, "no fault rule %q", rest[0])
				return
			}
		} else {
			s.faults.Clear()
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		allow(w, r, http.MethodGet, http.MethodPost, http.MethodDelete)
	}
}

func (s *Server) controlThrottling(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{"config": s.throttle.Config(), "buckets": s.throttle.Stats()})
	case http.MethodPut:
		var cfg ThrottleConfig
		if err := decodeBody(r, &cfg); err != nil {
			controlErr(w, http.StatusBadRequest, "%v", err)
			return
		}
		if cfg.TimeScale < 0 {
			controlErr(w, http.StatusBadRequest, "timeScale %v must not be negative", cfg.TimeScale)
			return
		}
		for k, b := range cfg.Overrides {
			if b.Capacity < 1 || b.Refill < 0 {
				controlErr(w, http.StatusBadRequest, "override %q: capacity must be ≥ 1 and refill ≥ 0", k)
				return
			}
		}
		s.throttle.SetConfig(cfg)
		writeJSON(w, http.StatusOK, map[string]any{"config": cfg})
	default:
		allow(w, r, http.MethodGet, http.MethodPut)
	}
}

func (s *Server) controlTiming(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		a, d, l := s.region.Timing()
		writeJSON(w, http.StatusOK, Timing{Duration(a), Duration(d), Duration(l), Duration(s.imds.DefaultLag())})
	case http.MethodPut:
		var t Timing
		if err := decodeBody(r, &t); err != nil {
			controlErr(w, http.StatusBadRequest, "%v", err)
			return
		}
		if t.AttachLatency < 0 || t.DetachLatency < 0 || t.ConsistencyLag < 0 || t.IMDSLag < 0 {
			controlErr(w, http.StatusBadRequest, "durations must not be negative")
			return
		}
		s.region.SetTiming(time.Duration(t.AttachLatency), time.Duration(t.DetachLatency), time.Duration(t.ConsistencyLag))
		s.imds.SetDefaultLag(time.Duration(t.IMDSLag))
		writeJSON(w, http.StatusOK, t)
	default:
		allow(w, r, http.MethodGet, http.MethodPut)
	}
}

// controlEvents serves the audit log. Query: action, errors=true, code,
// since (sequence), limit, wait (duration: long-poll for newer records).
func (s *Server) controlEvents(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	q := r.URL.Query()
	f := EventFilter{Action: q.Get("action"), ErrorCode: q.Get("code"), ErrorsOnly: q.Get("errors") == "true"}
	var err error
	if v := q.Get("since"); v != "" {
		if f.SinceSeq, err = strconv.ParseUint(v, 10, 64); err != nil {
			controlErr(w, http.StatusBadRequest, "since=%q is not a sequence number", v)
			return
		}
	}
	if v := q.Get("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 0 {
			controlErr(w, http.StatusBadRequest, "limit=%q is not a non-negative integer", v)
			return
		}
	}
	var recs []Record
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > time.Minute {
			controlErr(w, http.StatusBadRequest, "wait=%q must be a duration up to 1m", v)
			return
		}
		recs = s.audit.Wait(f, d)
	} else {
		recs = s.audit.Events(f)
	}
	if recs == nil {
		recs = []Record{}
	}
	writeJSON(w, http.StatusOK, recs)
}

// controlIMDS lists the instances' metadata services (GET /_fake/v1/imds)
// and sets one instance's propagation lag (PUT /_fake/v1/imds/{id} with
// {"lag":"2s"}; a negative lag returns the instance to the default).
func (s *Server) controlIMDS(w http.ResponseWriter, r *http.Request, rest []string) {
	id := ""
	if len(rest) > 0 {
		id = rest[0]
	}
	switch {
	case r.Method == http.MethodGet && id == "":
		writeJSON(w, http.StatusOK, s.imds.Status())
	case r.Method == http.MethodGet:
		for _, st := range s.imds.Status() {
			if st.InstanceID == id {
				writeJSON(w, http.StatusOK, st)
				return
			}
		}
		controlErr(w, http.StatusNotFound, "no running instance %q", id)
	case r.Method == http.MethodPut && id != "":
		var body struct {
			Lag *Duration `json:"lag"`
		}
		if err := decodeBody(r, &body); err != nil {
			controlErr(w, http.StatusBadRequest, "%v", err)
			return
		}
		if body.Lag == nil {
			controlErr(w, http.StatusBadRequest, "body needs a \"lag\" duration")
			return
		}
		if err := s.imds.SetLag(id, time.Duration(*body.Lag)); err != nil {
			controlErr(w, http.StatusNotFound, "%v", err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"instanceId": id, "lag": *body.Lag})
	case id == "":
		allow(w, r, http.MethodGet)
	default:
		allow(w, r, http.MethodGet, http.MethodPut)
	}
}
