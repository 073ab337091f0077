package model

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration that reads and writes as "1.5s" in JSON and YAML.
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "1.5s" or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return fmt.Errorf("duration must be a string like \"1.5s\": %w", err)
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// UnmarshalText reads "1.5s" (used by YAML).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes "1.5s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Timing is the region's time knobs (and the IMDS default lag) as
// configs and the control API write them.
type Timing struct {
	AttachLatency  Duration `json:"attachLatency" yaml:"attachLatency"`
	DetachLatency  Duration `json:"detachLatency" yaml:"detachLatency"`
	ConsistencyLag Duration `json:"consistencyLag" yaml:"consistencyLag"`
	// ENILag and AddressLag replace ConsistencyLag (Describe hiding what
	// is new) for new ENIs and for new addresses and prefixes; RemovalLag
	// keeps what was removed (addresses, prefixes, deleted ENIs) in
	// Describe answers that long.
	ENILag     Duration `json:"eniLag,omitempty" yaml:"eniLag,omitempty"`
	AddressLag Duration `json:"addressLag,omitempty" yaml:"addressLag,omitempty"`
	RemovalLag Duration `json:"removalLag,omitempty" yaml:"removalLag,omitempty"`
	// IMDSLag is the default delay before a change shows in IMDS.
	IMDSLag Duration `json:"imdsLag" yaml:"imdsLag"`
}

// String is "1.5s" (Duration is a flag.Value).
func (d Duration) String() string { return time.Duration(d).String() }

// Set reads "1.5s" (Duration is a flag.Value).
func (d *Duration) Set(s string) error { return d.UnmarshalText([]byte(s)) }
