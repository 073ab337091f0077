// Command ipamd is vpclab's IPAM daemon (aws-k8s-agent's counterpart): it
// reads aws-node's environment variables, talks to EC2 and IMDS through
// aws-sdk-go-v2, and serves the CNI plugin on /var/run/aws-node/ipamd.sock.
// Run it inside the node's network namespace.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/vpclab/vpclab/ipamd"
)

func main() { os.Exit(run(os.Stderr)) }

func run(stderr io.Writer) int {
	c, err := ipamd.ConfigFromEnv()
	var bad *ipamd.BadValuesError
	if err != nil && !errors.As(err, &bad) {
		fmt.Fprintf(stderr, "ipamd: %v\n", err)
		return 2
	}
	log, closeLog, err := logger(c, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "ipamd: AWS_VPC_K8S_CNI_LOG_FILE: %v\n", err)
		return 2
	}
	defer closeLog()
	log.Info("Starting L-IPAMD", "version", ipamd.Version)
	if bad != nil {
		// As the VPC CNI: the default instead of a value it cannot use,
		// but said loudly (on stderr too, for kubectl logs).
		for _, p := range bad.Problems {
			log.Error("bad value ignored; using the default, as the VPC CNI does", "problem", p)
			fmt.Fprintf(stderr, "ipamd: %s: ignored, using the default\n", p)
		}
	}
	for _, v := range ipamd.UnsupportedSet(os.LookupEnv) {
		log.Warn("not supported by vpclab's ipamd; ignored (run the real VPC CNI: --cni upstream@VERSION)", "env", v)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	d, err := ipamd.New(ctx, c, log)
	if err != nil {
		log.Error("init failed", "err", err)
		fmt.Fprintf(stderr, "ipamd: %v\n", err)
		return 1
	}
	// SIGTERM: stop changing ENIs and addresses, keep serving (aws-node).
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go func() {
		<-term
		log.Info("SIGTERM: no more ENI or address changes")
		d.Terminate()
	}()
	if err := d.Run(ctx); err != nil {
		log.Error("run", "err", err)
		return 1
	}
	return 0
}

func logger(c *ipamd.Config, stderr io.Writer) (*slog.Logger, func(), error) {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(map[string]string{"warning": "warn"}[c.LogLevel] + c.LogLevel))
	if c.LogLevel == "warning" {
		lv = slog.LevelWarn
	}
	var w io.Writer
	closeFn := func() {}
	switch c.LogFile {
	case "stderr", "":
		w = stderr
	case "stdout":
		w = os.Stdout
	default:
		if err := os.MkdirAll(filepath.Dir(c.LogFile), 0o755); err != nil {
			return nil, nil, err
		}
		f, err := os.OpenFile(c.LogFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, nil, err
		}
		w, closeFn = f, func() { f.Close() }
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})), closeFn, nil
}
