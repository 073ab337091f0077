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
	"github.com/vpclab/vpclab/fakeec2/control"
	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/model"
	"github.com/vpclab/vpclab/fakeec2/world"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vpclab/vpclab/fakeec2"
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

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "serve" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			usage(stdout)
			return 0
		}
		usage(stderr)
		return 2
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8787", "address for the EC2 API and control API")
	cfgPath := fs.String("config", "", "YAML file declaring the world, throttling, faults and timing")
	noThrottle := fs.Bool("no-throttle", false, "disable EC2 request throttling")
	seed := fs.Uint64("seed", 0, "seed for ids, request ids and fault dice (overrides the config)")
	strict := fs.Bool("strict", false, "verify SigV4 signatures against the config's credentials")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	imdsHost := fs.String("imds-host", "127.0.0.1", "host of the one IMDS listener (a free port) serving every instance the config gives no listener of its own")
	regionName := fs.String("region", "", "the region served (default the config's, else us-west-2)")
	token := fs.String("control-token", "", "require Authorization: Bearer TOKEN on the control API")
	maxInstances := fs.Int("max-instances", 0, "cap on non-terminated instances (default the config's, else 1000)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fakeec2: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "fakeec2: --log-level %q: %v\n", *level, err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lv}))

	cfg := &world.Config{}
	if *cfgPath != "" {
		var err error
		if cfg, err = world.LoadConfig(*cfgPath); err != nil {
			fmt.Fprintf(stderr, "fakeec2: --config %s: %v\n", *cfgPath, err)
			return 2
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "seed":
			cfg.Seed = *seed
		case "region":
			cfg.Region = *regionName
		case "max-instances":
			cfg.MaxInstances = *maxInstances
		}
	})
	if cfg.MaxInstances < 0 {
		fmt.Fprintf(stderr, "fakeec2: --max-instances %d: want a positive number\n", cfg.MaxInstances)
		return 2
	}
	if cfg.Throttling == nil {
		cfg.Throttling = &ec2query.ThrottleConfig{Enabled: true}
	}
	if *noThrottle {
		cfg.Throttling.Enabled = false
	}
	if *strict {
		if len(cfg.Credentials) == 0 {
			fmt.Fprintln(stderr, "fakeec2: --strict needs credentials in the config file")
			return 2
		}
		cfg.Strict = true
	}
	region := model.NewRegion(cfg.RegionOptions())
	opts := cfg.ServerOptions()
	opts.Logger = log
	opts.ControlToken = *token
	srv := fakeec2.NewServer(region, opts)
	defer srv.Close()
	world, err := cfg.Apply(region, srv)
	if err != nil {
		fmt.Fprintf(stderr, "fakeec2: --config %s: %v\n", *cfgPath, err)
		return 2
	}
	for _, i := range region.Instances() {
		if addr, ok := world.IMDS[i.ID]; ok && i.State == "running" {
			if _, err := srv.IMDS().Listen(i.ID, addr); err != nil {
				fmt.Fprintf(stderr, "fakeec2: %v\n", err)
				return 1
			}
		}
	}
	if _, err := srv.IMDS().SetAutoListen(net.JoinHostPort(*imdsHost, "0")); err != nil {
		fmt.Fprintf(stderr, "fakeec2: --imds-host %s: %v\n", *imdsHost, err)
		return 1
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "fakeec2: --listen %s: %v\n", *listen, err)
		return 1
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "fakeec2: EC2 API http://%s (region %s, throttling %v)\n", ln.Addr(), region.Name(), cfg.Throttling.Enabled)
	fmt.Fprintf(stdout, "fakeec2: control API http://%s%s\n", ln.Addr(), control.Prefix)
	for _, i := range srv.Instances() {
		fmt.Fprintf(stdout, "fakeec2: instance %s %s %s imds %s\n", i.InstanceID, i.InstanceType, i.PrivateIP, i.IMDSEndpoint)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		return 0
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return 0
		}
		log.Error("serve", "err", err)
		return 1
	}
}
