// Command fakeec2 serves a fake EC2 region over the EC2 Query API, with a
// control API under /_fake/v1/, so the AWS CLI, the SDKs and the VPC CNI can
// run against it unmodified.
//
//	fakeec2 serve --listen 127.0.0.1:8787 [--config world.yaml] [--no-throttle] [--seed N]
//
// Every instance's IMDS is served too, from one listener (point
// AWS_EC2_METADATA_SERVICE_ENDPOINT at the instance's imdsEndpoint).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vpclab/vpclab/fakeec2"
	"github.com/vpclab/vpclab/fakeec2/control"
	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/fakeec2/world"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprintln(w, `usage: fakeec2 serve [--listen ADDR] [--config FILE] [--region R] [--no-throttle] [--seed N] [--strict]
                     [--control-token T] [--max-instances N] [--imds-host HOST] [--log-level LEVEL]

Serves a fake EC2 region: the EC2 Query API at /, the control API at /_fake/v1/
(open unless --control-token is given), and every instance's metadata service
(IMDS) on one listener: http://INSTANCE-ID@HOST:PORT, listed by
GET /_fake/v1/instances (imdsEndpoint) and printed at start-up. Requests signed
for another region than the server's are refused.`)
}

// exitError is a failure with the exit code it earns: 2 for bad usage, 1
// for a failure to serve.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func usageErr(format string, a ...any) error {
	return &exitError{2, fmt.Sprintf(format, a...)}
}

// serveFlags are serve's flags once parsed.
type serveFlags struct {
	fs                               *flag.FlagSet
	listen, cfgPath, level, imdsHost string
	regionName, token                string
	noThrottle, strict               bool
	seed                             uint64
	maxInstances                     int
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "serve" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			usage(stdout)
			return 0
		}
		usage(stderr)
		return 2
	}
	err := serveMain(args[1:], stdout, stderr)
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintf(stderr, "fakeec2: %s\n", ee.msg)
		}
		return ee.code
	default:
		fmt.Fprintf(stderr, "fakeec2: %v\n", err)
		return 1
	}
}

func parseServeFlags(args []string, stderr io.Writer) (*serveFlags, error) {
	f := &serveFlags{fs: flag.NewFlagSet("serve", flag.ContinueOnError)}
	fs := f.fs
	fs.SetOutput(stderr)
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8787", "address for the EC2 API and control API")
	fs.StringVar(&f.cfgPath, "config", "", "YAML file declaring the world, throttling, faults and timing")
	fs.BoolVar(&f.noThrottle, "no-throttle", false, "disable EC2 request throttling")
	fs.Uint64Var(&f.seed, "seed", 0, "seed for ids, request ids and fault dice (overrides the config)")
	fs.BoolVar(&f.strict, "strict", false, "verify SigV4 signatures against the config's credentials")
	fs.StringVar(&f.level, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.imdsHost, "imds-host", "127.0.0.1", "host of the one IMDS listener (a free port) serving every instance the config gives no listener of its own")
	fs.StringVar(&f.regionName, "region", "", "the region served (default the config's, else us-west-2)")
	fs.StringVar(&f.token, "control-token", "", "require Authorization: Bearer TOKEN on the control API")
	fs.IntVar(&f.maxInstances, "max-instances", 0, "cap on non-terminated instances (default the config's, else 1000)")
	if err := fs.Parse(args); err != nil {
		return nil, &exitError{code: 2} // the flag package has said why
	}
	if fs.NArg() > 0 {
		return nil, usageErr("unexpected argument %q", fs.Arg(0))
	}
	return f, nil
}

// config is the world the flags describe: the config file with the flags
// given on the command line laid over it.
func (f *serveFlags) config() (*world.Config, error) {
	cfg := &world.Config{}
	if f.cfgPath != "" {
		var err error
		if cfg, err = world.LoadConfig(f.cfgPath); err != nil {
			return nil, usageErr("--config %s: %v", f.cfgPath, err)
		}
	}
	f.fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "seed":
			cfg.Seed = f.seed
		case "region":
			cfg.Region = f.regionName
		case "max-instances":
			cfg.MaxInstances = f.maxInstances
		}
	})
	if cfg.MaxInstances < 0 {
		return nil, usageErr("--max-instances %d: want a positive number", cfg.MaxInstances)
	}
	if cfg.Throttling == nil {
		cfg.Throttling = &ec2query.ThrottleConfig{Enabled: true}
	}
	if f.noThrottle {
		cfg.Throttling.Enabled = false
	}
	if f.strict {
		if len(cfg.Credentials) == 0 {
			return nil, usageErr("--strict needs credentials in the config file")
		}
		cfg.Strict = true
	}
	return cfg, nil
}

func serveMain(args []string, stdout, stderr io.Writer) error {
	f, err := parseServeFlags(args, stderr)
	if err != nil {
		return err
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(f.level)); err != nil {
		return usageErr("--log-level %q: %v", f.level, err)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lv}))
	cfg, err := f.config()
	if err != nil {
		return err
	}
	region := model.NewRegion(cfg.RegionOptions())
	opts := cfg.ServerOptions()
	opts.API.Logger = log
	opts.ControlToken = f.token
	srv := fakeec2.NewServer(region, opts)
	defer srv.Close()
	if err := f.applyWorld(cfg, region, srv); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", f.listen, err)
	}
	fmt.Fprintf(stdout, "fakeec2: EC2 API http://%s (region %s, throttling %v)\n", ln.Addr(), region.Name(), cfg.Throttling.Enabled)
	fmt.Fprintf(stdout, "fakeec2: control API http://%s%s\n", ln.Addr(), control.Prefix)
	for _, i := range srv.Instances() {
		fmt.Fprintf(stdout, "fakeec2: instance %s %s %s imds %s\n", i.InstanceID, i.InstanceType, i.PrivateIP, i.IMDSEndpoint)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		log.Error("serve", "err", err)
		return &exitError{code: 1}
	}
}

// applyWorld builds the config's world and opens its IMDS listeners: the
// config's own per-instance ones and the shared one on --imds-host.
func (f *serveFlags) applyWorld(cfg *world.Config, region *model.Region, srv *fakeec2.Server) error {
	w, err := cfg.Apply(region, srv)
	if err != nil {
		return usageErr("--config %s: %v", f.cfgPath, err)
	}
	for _, i := range region.Instances() {
		if addr, ok := w.IMDS[i.ID]; ok && i.State == "running" {
			if _, err := srv.IMDS().Listen(i.ID, addr); err != nil {
				return err
			}
		}
	}
	if _, err := srv.IMDS().SetAutoListen(net.JoinHostPort(f.imdsHost, "0")); err != nil {
		return fmt.Errorf("--imds-host %s: %w", f.imdsHost, err)
	}
	return nil
}
