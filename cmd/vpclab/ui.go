package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/vpclab/vpclab/lab"
	"github.com/vpclab/vpclab/lab/ui"
)

// cmdUI serves a running lab's live page on a loopback port until Ctrl-C.
func cmdUI(e env, args []string) error {
	fs := flags("ui [--listen 127.0.0.1:PORT]")
	listen := fs.String("listen", "127.0.0.1:0", "address to serve the page on (loopback by default; the page needs the printed URL's token)")
	if _, err := fs.Parse(args, 0); err != nil {
		return err
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	if _, err := c.Status(e.ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", *listen, err)
	}
	srv := &ui.Server{Title: "vpclab lab " + e.name, Token: ui.NewToken(),
		Snapshot: func(ctx context.Context) (lab.Snapshot, error) { return c.Snapshot(ctx) }}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	if host, _, _ := net.SplitHostPort(ln.Addr().String()); !net.ParseIP(host).IsLoopback() {
		fmt.Fprintf(e.stderr, "vpclab ui: serving on %s, not loopback: anyone with the URL below can see the lab\n", ln.Addr())
	}
	fmt.Fprintf(e.stdout, "vpclab ui: http://%s/?token=%s  (Ctrl-C stops it)\n", ln.Addr(), srv.Token)
	go func() {
		<-e.ctx.Done()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
	}()
	if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
