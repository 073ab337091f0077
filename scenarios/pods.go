package scenarios

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/vpclab/vpclab/lab"
)

// addPods adds a step's pods the way a kubelet does and returns how many
// never got an address.
func (x *run) addPods(ctx context.Context, name string, n *lab.Node, st Step) (failed int) {
	timeout := time.Duration(st.PodTimeout)
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	var mu sync.Mutex // guards failed, x.pods and x.res from the workers
	sem := make(chan struct{}, max(st.Parallel, 1))
	var wg sync.WaitGroup
	for k := 0; k < st.AddPods; k++ {
		x.seq++
		podName := fmt.Sprintf("p%d", x.seq)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			p, err := n.AddPodRetry(ctx, "scenario", podName, timeout)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				return
			}
			if t, ok := x.released[p.IP.String()]; ok && x.s.Cooldown > 0 && time.Since(t) < time.Duration(x.s.Cooldown) {
				x.fail("%s: pod %s got %s, released only %s ago (cooldown %s)", name, p.Name, p.IP, time.Since(t).Round(time.Millisecond), time.Duration(x.s.Cooldown))
			}
			x.pods = append(x.pods, podRef{n, p})
		}()
	}
	wg.Wait()
	return failed
}

// delPods deletes the count oldest pods on n.
func (x *run) delPods(ctx context.Context, name string, n *lab.Node, count int) {
	for k := 0; k < count; k++ {
		idx := slices.IndexFunc(x.pods, func(p podRef) bool { return p.node == n })
		if idx < 0 {
			x.fail("%s: no pod left to delete on %s", name, n.Name)
			return
		}
		if err := n.DelPod(ctx, x.pods[idx].pod); err != nil {
			x.fail("%s: %v", name, err)
		}
		x.released[x.pods[idx].pod.IP.String()] = time.Now()
		x.pods = slices.Delete(x.pods, idx, idx+1)
	}
}

func countOn(pods []podRef, n *lab.Node) int {
	c := 0
	for _, p := range pods {
		if p.node == n {
			c++
		}
	}
	return c
}
