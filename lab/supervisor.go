package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/vpclab/vpclab/internal/cli"
)

// Serve brings a lab up and keeps it until ctx is done (a signal) or a
// client asks it to go down (Client.Down); ready is called once it is up.
// Everything is removed before Serve returns, whatever ends it.
func Serve(ctx context.Context, cfg Config, progress Progress, ready func(*Lab)) error {
	if cfg.Owner == "" {
		cfg.Owner = "up"
	}
	l, err := New(ctx, cfg, progress)
	if err != nil {
		return err
	}
	defer l.Close()
	down := make(chan struct{})
	l.setOnDown(func() { close(down) })
	if ready != nil {
		ready(l)
	}
	select {
	case <-ctx.Done():
	case <-down:
	}
	return nil
}

// The background supervisor (`vpclab up` without --foreground) is this
// program started again as `<exe> serve-lab CONFIG` in its own session. It
// prints progress lines, then "ready" or "error: …", on its stdout.
const (
	readyLine   = "ready"
	errorPrefix = "error: "
)

// Up is `vpclab up`: it refuses a name a live lab holds, builds the CNIs
// (progress and failures show before anything starts), then runs the lab
// in this process until ctx is done (foreground) or in a background
// supervisor (exe serve-lab), and prints the lab's summary; nameHint is
// " --name N" for the printed follow-ups.
func Up(ctx context.Context, cfg Config, exe string, foreground bool, out io.Writer, nameHint string) error {
	if o, alive, _ := ReadOwner(PathsFor(cfg.Name, "")); alive {
		return cli.Usagef("lab %q already exists, owned by %s (vpclab down%s)", cfg.Name, o, nameHint)
	}
	progress := func(f string, a ...any) { fmt.Fprintf(out, "  ✓ "+f+"\n", a...) }
	if err := PrepareCNIs(ctx, cfg, progress); err != nil {
		return err // ErrNoCNI: exit 2
	}
	if foreground {
		return Serve(ctx, cfg, progress, func(l *Lab) {
			WriteSummary(out, l.Status(), nameHint)
			fmt.Fprintln(out, "running in the foreground; Ctrl-C tears it down")
		})
	}
	if err := StartBackground(ctx, cfg, exe, func(line string) { fmt.Fprintln(out, line) }); err != nil {
		var ae *AliveError
		if errors.As(err, &ae) {
			return cli.Usagef("%v", err)
		}
		return err
	}
	c, err := Dial(cfg.Name, "")
	if err != nil {
		return err
	}
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	WriteSummary(out, st, nameHint)
	return nil
}

// StartBackground starts a background supervisor for cfg (exe is the
// program that runs RunSupervisor for "serve-lab"), relays its progress
// lines and returns once the lab is up, or with its error. If ctx is
// cancelled (Ctrl-C) during bring-up, the supervisor is interrupted and
// StartBackground returns after it has removed everything.
func StartBackground(ctx context.Context, cfg Config, exe string, progress func(line string)) error {
	p := PathsFor(cfg.Name, cfg.StateDir)
	if o, alive, _ := ReadOwner(p); alive {
		return &AliveError{Name: cfg.Name, Owner: o}
	}
	if err := os.MkdirAll(p.StateDir, 0o755); err != nil {
		return err
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	if err := os.WriteFile(p.ConfigFile(), b, 0o600); err != nil {
		return err
	}
	logf, err := os.OpenFile(p.Log(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(exe, "serve-lab", p.ConfigFile())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		os.Remove(p.ConfigFile())
		return fmt.Errorf("start the supervisor: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = cmd.Process.Signal(os.Interrupt) })
	defer stop()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == readyLine:
			go func() { _, _ = io.Copy(io.Discard, out); _ = cmd.Wait() }()
			return nil
		case strings.HasPrefix(line, errorPrefix):
			_ = cmd.Wait()
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted; lab %s removed", cfg.Name)
			}
			return errors.New(strings.TrimPrefix(line, errorPrefix))
		default:
			progress(line)
		}
	}
	_ = cmd.Wait()
	log, _ := os.ReadFile(p.Log())
	_ = os.Remove(p.Log())
	return fmt.Errorf("the supervisor exited (%v): %s", cmd.ProcessState, lastLine(string(log)))
}

// RunSupervisor is the background supervisor's side: it reads the config
// StartBackground wrote, serves the lab until down or SIGINT/SIGTERM, and
// speaks the line protocol on out. Its log goes to stderr.
func RunSupervisor(cfgFile string, out io.Writer) error {
	// Writes to a closed stdout (the `up` that started us is gone) must
	// fail quietly, not kill the supervisor with SIGPIPE.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := os.ReadFile(cfgFile)
	if err != nil {
		fmt.Fprintf(out, "%s%v\n", errorPrefix, err)
		return err
	}
	os.Remove(cfgFile)
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		fmt.Fprintf(out, "%s%v\n", errorPrefix, err)
		return err
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	err = Serve(ctx, cfg, func(f string, a ...any) { fmt.Fprintf(out, "  ✓ "+f+"\n", a...) }, func(*Lab) { fmt.Fprintln(out, readyLine) })
	if err != nil {
		fmt.Fprintf(out, "%s%s\n", errorPrefix, cli.OneLine(err.Error()))
	}
	// The lab is gone (down, SIGINT, SIGTERM, or a bring-up that failed and
	// said why on the line above): it leaves nothing, not even this log,
	// which is our stderr.
	_ = os.Remove(PathsFor(cfg.Name, cfg.StateDir).Log())
	return err
}
