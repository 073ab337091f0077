// Package fakeec2 is an EC2 region that runs in a process: the AWS CLI, the
// SDKs, the real VPC CNI and the real VPC Resource Controller work against
// it unmodified. It is cut by what each part is:
//
//   - model: the region's state, limits and invariants, and the change feed
//     others follow (no HTTP, no XML);
//   - catalog: instance types as data;
//   - faults: scripted failures as data;
//   - ec2query: the EC2 Query API (decoding, signatures, throttling, XML);
//   - imds: the instance metadata service, following the change feed;
//   - control: the JSON control API under /_fake/v1/;
//   - world: a whole world declared in YAML, applied through the model.
//
// This package composes them into one Server.
package fakeec2

import (
	"net/http"
	"strings"

	"github.com/vpclab/vpclab/fakeec2/control"
	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/fakeec2/imds"
	"github.com/vpclab/vpclab/fakeec2/model"
)

// ServerOptions configure a Server.
type ServerOptions struct {
	// API configures the Query API: throttling, credentials, audit, logger
	// and clock (the IMDS and the fault rules share its Seed, Logger and
	// Now). Its Faults are ignored: the server's rules serve every part.
	API ec2query.Options
	// IMDS configures the instance metadata service (its Faults are the
	// server's own).
	IMDS imds.Options
	// ControlToken, when set, must accompany every control API request
	// (Authorization: Bearer TOKEN).
	ControlToken string
}

// Server is a fake region's EC2 Query API, IMDS and control API, sharing
// one set of fault rules.
type Server struct {
	region  *model.Region
	faults  *faults.Rules
	api     *ec2query.Server
	imds    *imds.Service
	control *control.Handler
}

// NewServer returns the services of region.
func NewServer(region *model.Region, opts ServerOptions) *Server {
	// Each part defaults a nil clock and logger itself.
	f := faults.New(opts.API.Seed, opts.API.Now)
	s := &Server{region: region, faults: f}
	api := opts.API
	api.Faults = f
	s.api = ec2query.New(region, api)
	io := opts.IMDS
	io.Faults = f
	if io.Logger == nil {
		io.Logger = opts.API.Logger
	}
	s.imds = imds.New(region, io)
	s.control = control.New(region, s.api, s.imds, opts.ControlToken)
	return s
}

// Close releases the IMDS listeners and stops following the region.
func (s *Server) Close() error { return s.imds.Close() }

// ServeHTTP serves the control API under control.Prefix and the EC2 Query
// API everywhere else (the standalone server's mode; a lab serves them
// apart, see APIHandler and ControlHandler).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_fake/") {
		s.control.ServeHTTP(w, r)
		return
	}
	s.api.ServeHTTP(w, r)
}

// APIHandler serves the EC2 Query API only: what instances inside a VPC and
// a lab's host endpoint get.
func (s *Server) APIHandler() http.Handler { return s.api }

// ControlHandler serves the control API only.
func (s *Server) ControlHandler() http.Handler { return s.control }

// Region returns the model behind the server.
func (s *Server) Region() *model.Region { return s.region }

// API returns the Query API.
func (s *Server) API() *ec2query.Server { return s.api }

// IMDS returns the instance metadata service.
func (s *Server) IMDS() *imds.Service { return s.imds }

// Faults returns the fault rules.
func (s *Server) Faults() *faults.Rules { return s.faults }

// Throttler returns the Query API's throttling state.
func (s *Server) Throttler() *ec2query.Throttler { return s.api.Throttler() }

// Audit returns the Query API's audit log.
func (s *Server) Audit() *ec2query.Audit { return s.api.Audit() }

// Instances lists the region's instances with their IMDS endpoints.
func (s *Server) Instances() []control.InstanceSummary { return control.Instances(s.region, s.imds) }
