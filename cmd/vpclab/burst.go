package main

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vpclab/vpclab/internal/cli"
	"github.com/vpclab/vpclab/lab"
)

// burst is pods add's flags: which pods, how many at once, and how long
// each is retried the way a kubelet retries a sandbox.
type burst struct {
	count    int
	prefix   string
	parallel int
	retry    time.Duration
}

func (b *burst) bind(fs *cli.Flags) {
	fs.IntVar(&b.count, "count", 0, "add N pods named PREFIX-1 … PREFIX-N (with --prefix)")
	fs.StringVar(&b.prefix, "prefix", "", "[NAMESPACE/]NAME prefix of --count's pods (namespace default)")
	fs.IntVar(&b.parallel, "parallel", 1, "add up to N pods at once")
	fs.DurationVar(&b.retry, "retry", 0, "retry a failed ADD like a kubelet (DEL after each failure, back-off 100ms doubling to 2s) for up to this long; 0: one attempt")
}

// refs lists the pods to add: the arguments, or --count of --prefix.
func (b *burst) refs(pos []string) ([][2]string, error) {
	switch {
	case b.parallel < 1 || b.parallel > 64:
		return nil, fmt.Errorf("--parallel %d: want 1..64", b.parallel)
	case b.retry < 0:
		return nil, fmt.Errorf("--retry %s: must not be negative", b.retry)
	case b.count < 0 || b.count > 1000:
		return nil, fmt.Errorf("--count %d: want 1..1000", b.count)
	case (b.count > 0) != (b.prefix != ""):
		return nil, errors.New("--count and --prefix go together")
	case b.count > 0 && len(pos) > 0:
		return nil, errors.New("pods add takes NAMESPACE/NAME arguments or --count with --prefix, not both")
	case b.count == 0 && len(pos) == 0:
		return nil, errors.New("pods add needs NAMESPACE/NAME (or --count N --prefix P)")
	}
	if b.count > 0 {
		pos = make([]string, b.count)
		for i := range pos {
			pos[i] = fmt.Sprintf("%s-%d", b.prefix, i+1)
		}
	}
	refs := make([][2]string, 0, len(pos))
	for _, ref := range pos {
		ns, name, err := lab.ParsePodRef(ref)
		if err != nil {
			return nil, err
		}
		refs = append(refs, [2]string{ns, name})
	}
	return refs, nil
}

// run adds the pods, b.parallel at a time, printing each failed attempt
// (its DEL has run) and each outcome as a line; it fails if any pod did.
func (b *burst) run(e env, c *lab.Client, node string, refs [][2]string) error {
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(e.stdout, format+"\n", args...)
	}
	sem := make(chan struct{}, b.parallel)
	var wg sync.WaitGroup
	failed := make([]error, len(refs))
	for i, r := range refs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ref := r[0] + "/" + r[1]
			onFail := func(n int, err error, wait time.Duration) {
				if wait > 0 {
					say("%s: attempt %d failed (DEL done), retrying in %s: %v", ref, n, wait, err)
				}
			}
			var p lab.PodStatus
			var err error
			if b.retry > 0 {
				p, err = c.AddPodRetry(e.ctx, node, r[0], r[1], b.retry, onFail)
			} else {
				p, err = c.AddPod(e.ctx, node, r[0], r[1])
			}
			if err != nil {
				failed[i] = fmt.Errorf("%s: %w", ref, err)
				say("%s: FAILED: %v", ref, err)
				return
			}
			say("%s on %s: %s", ref, p.Node, p.IP)
		}()
	}
	wg.Wait()
	n := 0
	for _, f := range failed {
		if f != nil {
			n++
		}
	}
	switch {
	case n == 0:
		return nil
	case len(refs) == 1:
		return failed[0]
	}
	return fmt.Errorf("%d of %d pods not added", n, len(refs))
}
