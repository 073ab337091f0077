package ec2query

import (
	"errors"
	"flag"
	"strings"
	"sync"
	"time"
)

// Bucket is a token bucket: Capacity tokens at most, Refill tokens added
// per second.
type Bucket struct {
	Capacity float64 `json:"capacity" yaml:"capacity"`
	Refill   float64 `json:"refill" yaml:"refill"`
}

// Throttle categories of the EC2 API ("Request throttling for the Amazon
// EC2 API"). Each action gets its own bucket sized by its category.
var categoryBuckets = map[string]Bucket{
	"non-mutating":            {100, 20},
	"unfiltered-non-mutating": {50, 10},
	"mutating":                {50, 5},
	"resource-intensive":      {50, 5},
}

// actionBuckets are the actions with published numbers of their own
// ("uncategorised"), plus resource buckets as "<Action>#resource".
var actionBuckets = map[string]Bucket{
	"CreateNetworkInterface":          {100, 5},
	"DeleteNetworkInterface":          {100, 5},
	"ModifyNetworkInterfaceAttribute": {100, 5},
	"AssignPrivateIpAddresses":        {100, 5},
	"UnassignPrivateIpAddresses":      {100, 5},
	"AssignIpv6Addresses":             {100, 5},
	"CreateTags":                      {100, 10},
	"DeleteTags":                      {100, 10},
	"RunInstances":                    {5, 2},
	"RunInstances#resource":           {1000, 2},
	"TerminateInstances":              {100, 5},
	"TerminateInstances#resource":     {1000, 20},
}

// unfilteredSplit lists the Describe actions with a smaller bucket when
// called with neither a filter nor pagination.
var unfilteredSplit = map[string]bool{
	"DescribeInstances": true, "DescribeInstanceStatus": true, "DescribeNetworkInterfaces": true,
	"DescribeSecurityGroups": true, "DescribeSnapshots": true, "DescribeSpotInstanceRequests": true, "DescribeVolumes": true,
}

// BucketKey is the name of the bucket a call draws from.
func BucketKey(action string, unfiltered bool) string {
	if unfiltered && unfilteredSplit[action] {
		return action + "#unfiltered"
	}
	return action
}

// DefaultBucket returns EC2's published bucket for a bucket key.
func DefaultBucket(key string) Bucket {
	if b, ok := actionBuckets[key]; ok {
		return b
	}
	action, variant, _ := strings.Cut(key, "#")
	if variant == "unfiltered" {
		return categoryBuckets["unfiltered-non-mutating"]
	}
	for _, p := range []string{"Describe", "List", "Search", "Get"} {
		if strings.HasPrefix(action, p) {
			return categoryBuckets["non-mutating"]
		}
	}
	return categoryBuckets["mutating"]
}

// ThrottleConfig configures request throttling.
type ThrottleConfig struct {
	// Enabled turns throttling on.
	Enabled bool `json:"enabled" yaml:"enabled"`
	// TimeScale speeds up refill (2 = twice as fast); 0 means 1.
	TimeScale float64 `json:"timeScale,omitempty" yaml:"timeScale,omitempty"`
	// Overrides replace buckets by key: an action name, "<Action>#unfiltered"
	// or "<Action>#resource".
	Overrides map[string]Bucket `json:"overrides,omitempty" yaml:"overrides,omitempty"`
}

// Throttler applies EC2's per-action token buckets.
type Throttler struct {
	mu      sync.Mutex
	cfg     ThrottleConfig
	now     func() time.Time
	buckets map[string]*bucketState
	stats   map[string]*ThrottleStats
}

type bucketState struct {
	Bucket
	tokens float64
	last   time.Time
}

// ThrottleStats counts calls per bucket.
type ThrottleStats struct {
	Allowed   int64   `json:"allowed"`
	Throttled int64   `json:"throttled"`
	Tokens    float64 `json:"tokens"`
	Capacity  float64 `json:"capacity"`
	Refill    float64 `json:"refill"`
}

// NewThrottler returns a throttler; now is the clock (time.Now when nil).
func NewThrottler(cfg ThrottleConfig, now func() time.Time) *Throttler {
	if now == nil {
		now = time.Now
	}
	return &Throttler{cfg: cfg, now: now, buckets: map[string]*bucketState{}, stats: map[string]*ThrottleStats{}}
}

// Config returns the current configuration.
func (t *Throttler) Config() ThrottleConfig {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cfg
}

// SetConfig replaces the configuration; every bucket starts full again.
func (t *Throttler) SetConfig(cfg ThrottleConfig) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cfg = cfg
	t.buckets = map[string]*bucketState{}
}

func (t *Throttler) bucket(key string, now time.Time) *bucketState {
	b, ok := t.buckets[key]
	if !ok {
		spec, ok := t.cfg.Overrides[key]
		if !ok {
			spec = DefaultBucket(key)
		}
		b = &bucketState{Bucket: spec, tokens: spec.Capacity, last: now}
		t.buckets[key] = b
	}
	scale := t.cfg.TimeScale
	if scale <= 0 {
		scale = 1
	}
	b.tokens = min(b.Capacity, b.tokens+now.Sub(b.last).Seconds()*b.Refill*scale)
	b.last = now
	return b
}

// Allow takes one token from the call's bucket and, for actions with a
// resource bucket, one per resource. It reports whether the call may go on.
func (t *Throttler) Allow(action string, unfiltered bool, resources int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	key := BucketKey(action, unfiltered)
	st := t.stats[key]
	if st == nil {
		st = &ThrottleStats{}
		t.stats[key] = st
	}
	if !t.cfg.Enabled {
		st.Allowed++
		return true
	}
	now := t.now()
	b := t.bucket(key, now)
	var rb *bucketState
	if _, ok := actionBuckets[action+"#resource"]; ok && resources > 0 {
		rb = t.bucket(action+"#resource", now)
	}
	if b.tokens < 1 || (rb != nil && rb.tokens < float64(resources)) {
		st.Throttled++
		return false
	}
	b.tokens--
	if rb != nil {
		rb.tokens -= float64(resources)
	}
	st.Allowed++
	return true
}

// Stats returns per-bucket counters and current token levels.
func (t *Throttler) Stats() map[string]ThrottleStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	out := map[string]ThrottleStats{}
	for k, s := range t.stats {
		c := *s
		if t.cfg.Enabled {
			b := t.bucket(k, now)
			c.Tokens, c.Capacity, c.Refill = b.tokens, b.Capacity, b.Refill
		}
		out[k] = c
	}
	return out
}

// ThrottleFlags are `vpclab throttle set`'s flags: the refill time scale
// and, optionally, one action's bucket.
type ThrottleFlags struct {
	scale  float64
	action string
	bucket Bucket
}

// Bind declares the flags.
func (t *ThrottleFlags) Bind(fs *flag.FlagSet) {
	fs.Float64Var(&t.scale, "scale", 1, "refill time scale")
	fs.StringVar(&t.action, "action", "", "override one action's bucket")
	fs.Float64Var(&t.bucket.Capacity, "capacity", 0, "bucket capacity for --action")
	fs.Float64Var(&t.bucket.Refill, "refill", 0, "tokens per second for --action")
}

// Config is the throttling the flags describe (enabled or not), or an
// error naming the flag that is out of range.
func (t *ThrottleFlags) Config(enabled bool) (ThrottleConfig, error) {
	cfg := ThrottleConfig{Enabled: enabled, TimeScale: t.scale}
	if t.action == "" {
		return cfg, nil
	}
	if t.bucket.Capacity < 1 || t.bucket.Refill < 0 {
		return cfg, errors.New("--capacity must be ≥ 1 and --refill ≥ 0")
	}
	cfg.Overrides = map[string]Bucket{t.action: t.bucket}
	return cfg, nil
}
