package lab

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
)

// CNI kinds: which implementation a node runs.
const (
	// CNIVpclab is vpclab's own ipamd and aws-cni (the default).
	CNIVpclab = "vpclab"
	// CNIUpstream is the real AWS VPC CNI at a released version, built from
	// the Go module proxy.
	CNIUpstream = "upstream"
	// CNIPath is the real VPC CNI built from a local checkout.
	CNIPath = "path"
	// CNIBin is the real VPC CNI from prebuilt binaries laid out like the
	// aws-node image's /app.
	CNIBin = "bin"
)

// UpstreamVersion is the upstream VPC CNI release vpclab is tested against
// (the upstream suite and the CI scenario diff use it).
const UpstreamVersion = "v1.23.2"

// CNI names a node's CNI implementation: "vpclab", "upstream@v1.23.2",
// "path:DIR" or "bin:DIR". The zero value ("") means the default: the
// lab's for a node, vpclab's for a lab.
type CNI struct {
	Kind    string
	Version string // upstream: the module version
	Dir     string // path, bin: an absolute directory
}

var semver = regexp.MustCompile(`^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$`)

// ParseCNI reads a CNI name; relative directories are made absolute.
func ParseCNI(s string) (CNI, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return CNI{}, nil
	case s == CNIVpclab:
		return CNI{Kind: CNIVpclab}, nil
	case strings.HasPrefix(s, CNIUpstream+"@"):
		v := strings.TrimPrefix(s, CNIUpstream+"@")
		if !strings.HasPrefix(v, "v") {
			v = "v" + v
		}
		if !semver.MatchString(v) {
			return CNI{}, fmt.Errorf("cni %q: want upstream@vX.Y.Z (a released VPC CNI version)", s)
		}
		return CNI{Kind: CNIUpstream, Version: v}, nil
	case strings.HasPrefix(s, CNIPath+":"), strings.HasPrefix(s, CNIBin+":"):
		kind, dir, _ := strings.Cut(s, ":")
		if dir == "" {
			return CNI{}, fmt.Errorf("cni %q: want %s:DIR", s, kind)
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			return CNI{}, fmt.Errorf("cni %q: %w", s, err)
		}
		return CNI{Kind: kind, Dir: abs}, nil
	}
	return CNI{}, fmt.Errorf("cni %q: want vpclab, upstream@VERSION, path:DIR or bin:DIR", s)
}

// String is the CNI's name as ParseCNI reads it.
func (c CNI) String() string {
	switch c.Kind {
	case "":
		return ""
	case CNIVpclab:
		return CNIVpclab
	case CNIUpstream:
		return CNIUpstream + "@" + c.Version
	default:
		return c.Kind + ":" + c.Dir
	}
}

// IsUpstream says whether the node runs the real VPC CNI.
func (c CNI) IsUpstream() bool { return c.Kind != "" && c.Kind != CNIVpclab }

// MarshalText implements encoding.TextMarshaler (YAML and JSON use it).
func (c CNI) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (c *CNI) UnmarshalText(b []byte) error {
	v, err := ParseCNI(string(b))
	if err != nil {
		return err
	}
	*c = v
	return nil
}

// Set implements flag.Value (--cni).
func (c *CNI) Set(s string) error { return c.UnmarshalText([]byte(s)) }

// ErrNoCNI marks a CNI that cannot be had (bad directory, unknown
// version, build failure): a usage problem, said in one line.
var ErrNoCNI = errors.New("VPC CNI")
