package lab

import (
	"log/slog"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestLivenessKillsAHungAwsNode: an aws-node whose ipamd never answers its
// health check is killed (its process group) after three failed probes,
// as a kubelet kills the container, so the lab's restart policy can start
// it again.
func TestLivenessKillsAHungAwsNode(t *testing.T) {
	cmd := exec.Command("sleep", "60") // an entrypoint waiting forever for ipamd
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &ipamdProc{cmd: cmd, started: time.Now(), done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	n := &Node{Name: "node", root: t.TempDir(), lab: &Lab{log: slog.New(slog.DiscardHandler)}}
	probed := make(chan struct{})
	go func() {
		livenessProbe{delay: 50 * time.Millisecond, period: 50 * time.Millisecond, failures: 3}.run(n, p)
		close(probed)
	}()
	defer func() { <-probed }()
	select {
	case <-p.done:
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("aws-node ended with %v, want SIGKILL", p.err)
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("a hung aws-node was not killed by the liveness probe")
	}
}
