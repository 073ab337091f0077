// Package imds is fakeec2's instance metadata service: one view per
// instance, following the region's change feed with a configurable lag,
// IMDSv2 tokens with EC2's rules, and the meta-data tree a real instance
// serves (every networking key per MAC, the identity document, role
// credentials), on listeners of their own or one shared listener.
package imds

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/model"
)

// IMDS header names and limits, as AWS documents them.
const (
	TokenHeader    = "X-Aws-Ec2-Metadata-Token"
	TokenTTLHeader = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
	maxTokenTTL    = 21600
	// RoleName is the IAM role every instance reports under
	// meta-data/iam/security-credentials/.
	RoleName = "vpclab-node"
)

// Options configure the instance metadata service.
type Options struct {
	// Lag is the default propagation delay between a change in the region
	// and its appearance in the affected instance's metadata.
	Lag time.Duration
	// Faults supplies extra per-change lag from rules with IMDSLag set; the
	// Server wires its own fault rules here.
	Faults *faults.Rules
	// RoleAccessKeyID and RoleSecretKey are the instance-role credentials
	// served under iam/security-credentials/ (fake defaults when empty).
	RoleAccessKeyID string
	RoleSecretKey   string
	// Logger receives listener and token events; slog.Default when nil.
	Logger *slog.Logger
}

// Service is the instance metadata service of every instance in a region.
// It follows the region's change feed: each instance's view is a replica
// in which a change becomes visible only after the instance's propagation
// lag (plus any fault-rule lag), changes becoming visible in the order they
// happened, like a lagging but consistent IMDS.
type Service struct {
	region *model.Region
	opts   Options
	log    *slog.Logger
	sub    *model.Subscription

	mu          sync.Mutex
	cond        *sync.Cond
	processed   uint64 // the newest change applied
	lag         time.Duration
	insts       map[string]*replica
	world       world
	shared      *http.Server // the one listener serving every instance without its own
	base        string       // the shared listener's host:port
	closed      bool
	delays      []Delay // changes shown late, for audit records and fault rules
	overlays    []*Overlay
	nextOverlay int
}

// New starts the metadata service of region. Close releases it.
func New(region *model.Region, opts Options) *Service {
	m := &Service{region: region, opts: opts, log: opts.Logger, lag: opts.Lag, insts: map[string]*replica{},
		world: world{vpcs: map[string]model.VPC{}, subnets: map[string]model.Subnet{}, groups: map[string]model.SecurityGroup{}}}
	m.cond = sync.NewCond(&m.mu)
	if m.log == nil {
		m.log = slog.Default()
	}
	snap, sub := region.SubscribeWithSnapshot()
	m.sub = sub
	m.start(snap)
	go m.follow(sub)
	return m
}

// Close stops following the region and closes every listener.
func (m *Service) Close() error {
	m.sub.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.cond.Broadcast()
	var errs []error
	for _, v := range m.insts {
		if v.srv != nil {
			errs = append(errs, v.srv.Close())
			v.srv = nil
		}
		v.url = ""
	}
	if m.shared != nil {
		errs = append(errs, m.shared.Close())
		m.shared = nil
	}
	return errors.Join(errs...)
}

// DefaultLag returns the propagation lag of instances without their own.
func (m *Service) DefaultLag() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lag
}

// SetDefaultLag sets the propagation lag of instances without their own.
// It applies to changes made from now on.
func (m *Service) SetDefaultLag(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lag = max(d, 0)
}

// SetLag gives one instance its own propagation lag; a negative d returns
// it to the default. It applies to changes made from now on.
func (m *Service) SetLag(instanceID string, d time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sync()
	v, ok := m.insts[instanceID]
	if !ok {
		return model.ErrInstanceNotFound(instanceID)
	}
	if d < 0 {
		v.lag = nil
	} else {
		v.lag = &d
	}
	return nil
}

// Status describes one instance's metadata service.
type Status struct {
	InstanceID string         `json:"instanceId"`
	Endpoint   string         `json:"endpoint,omitempty"`
	Lag        model.Duration `json:"lag"`
	OwnLag     bool           `json:"ownLag"`
	// Pending counts changes made in the region that the instance's
	// metadata does not show yet.
	Pending int `json:"pending"`
}

// Status lists every instance's metadata service, by instance id.
func (m *Service) Status() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sync()
	now := m.region.Now()
	out := make([]Status, 0, len(m.insts))
	for id, v := range m.insts {
		if v.terminated {
			continue
		}
		v.catchUp(now)
		out = append(out, Status{InstanceID: id, Endpoint: v.url, Lag: model.Duration(v.lagOr(m.lag)), OwnLag: v.lag != nil, Pending: len(v.queue)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].InstanceID < out[j].InstanceID })
	return out
}

// Pending reports how many changes instance id's metadata does not show yet.
func (m *Service) Pending(instanceID string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sync()
	v, ok := m.insts[instanceID]
	if !ok {
		return 0
	}
	v.catchUp(m.region.Now())
	return len(v.queue)
}

// Endpoint returns the base URL of instance id's listener ("" if none).
func (m *Service) Endpoint(instanceID string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sync()
	if v, ok := m.insts[instanceID]; ok {
		return v.url
	}
	return ""
}

// SetAutoListen serves every instance that has no listener of its own,
// now and launched later, from one listener on addr (host:port;
// "127.0.0.1:0" picks a free port). An instance is chosen by the user name
// of the URL (http://i-0abc@127.0.0.1:PORT: the SDKs and curl send it as
// basic auth) or by a path prefix (/i-0abc/latest/meta-data/). One port
// serves any number of instances: no file descriptor per instance.
func (m *Service) SetAutoListen(addr string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return "", errors.New("imds: service closed")
	}
	if m.shared != nil {
		return "http://" + m.base, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("imds listen on %s: %w", addr, err)
	}
	m.shared = &http.Server{Handler: m.SharedHandler(), ConnContext: ConnContext, ReadHeaderTimeout: 10 * time.Second}
	m.base = ln.Addr().String()
	go func(srv *http.Server) {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("imds serve", "err", err)
		}
	}(m.shared)
	for id, v := range m.insts {
		if v.srv == nil && !v.terminated {
			v.url = m.sharedURL(id)
		}
	}
	m.log.Debug("imds listening for every instance", "addr", m.base)
	return "http://" + m.base, nil
}

func (m *Service) sharedURL(id string) string { return "http://" + id + "@" + m.base }

// SharedHandler serves every instance's metadata, choosing the instance
// by the request's basic-auth user name or its /INSTANCE-ID/ path prefix.
func (m *Service) SharedHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _, ok := r.BasicAuth()
		if !ok || id == "" {
			seg, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
			if strings.HasPrefix(seg, "i-") {
				id = seg
				r = r.Clone(r.Context())
				r.URL.Path, r.URL.RawPath = "/"+rest, ""
			}
		}
		if id == "" {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, "this metadata listener serves every instance: use http://INSTANCE-ID@"+r.Host+" (for AWS_EC2_METADATA_SERVICE_ENDPOINT) or the path /INSTANCE-ID/latest/...\n")
			return
		}
		m.Handler(id).ServeHTTP(w, r)
	})
}

// Listen serves instance id's metadata on a listener of its own at addr
// ("127.0.0.1:0" picks a free port) and returns its base URL, e.g.
// "http://127.0.0.1:41234".
func (m *Service) Listen(instanceID, addr string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sync()
	v, ok := m.insts[instanceID]
	if !ok || v.terminated {
		return "", fmt.Errorf("imds listen for %s: %w", instanceID, model.ErrInstanceNotFound(instanceID))
	}
	return m.listenLocked(instanceID, v, addr)
}

func (m *Service) listenLocked(id string, v *replica, addr string) (string, error) {
	if m.closed {
		return "", fmt.Errorf("imds listen for %s: service closed", id)
	}
	if v.srv != nil {
		return "", fmt.Errorf("imds listen for %s on %s: already listening at %s", id, addr, v.url)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("imds listen for %s: %w", id, err)
	}
	v.srv = &http.Server{Handler: m.Handler(id), ConnContext: ConnContext, ReadHeaderTimeout: 10 * time.Second}
	v.url = "http://" + ln.Addr().String()
	go func(srv *http.Server) {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("imds serve", "instance", id, "err", err)
		}
	}(v.srv)
	m.log.Debug("imds listening", "instance", id, "endpoint", v.url)
	return v.url, nil
}
