package netx

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/testutils"
)

// TestDialOutlivesTheHandle pins that a dial made through DialContextIn
// does not use the caller's namespace handle: an http.Transport may finish
// a dial in the background after its request gave up, while its owner
// closes the handle (a lab closing a node). Under -race, a dial through
// the shared handle is reported here.
func TestDialOutlivesTheHandle(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (network namespaces)")
	}
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = testutils.UnmountNS(n) })
	dial := DialContextIn(n)
	done := make(chan error, 1)
	go func() {
		_, err := dial(context.Background(), "tcp", "127.0.0.1:1") // loopback is down: refused at once
		done <- err
	}()
	time.Sleep(200 * time.Millisecond) // no synchronisation with the dial, as with a transport's background dial
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Error("a dial to a closed port in an empty namespace succeeded")
	}
}
