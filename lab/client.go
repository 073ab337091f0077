package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/vpclab/vpclab/fakeec2/control"
	"github.com/vpclab/vpclab/fakeec2/ec2query"
	"github.com/vpclab/vpclab/fakeec2/faults"
	"github.com/vpclab/vpclab/lab/k8s"
)

// Client talks to a running lab over its control socket: the CLI and
// tests use it; it is the only way to reach a lab's fake EC2 control API
// (faults, throttling, timing, events).
type Client struct {
	paths Paths
	hc    *http.Client
}

// NotRunningError says why a lab cannot be reached. Down says its owner
// is gone and leftovers remain (vpclab gc cleans them up).
type NotRunningError struct {
	Name  string
	Msg   string
	Stale bool
}

func (e *NotRunningError) Error() string { return e.Msg }

// RequestError is an error the lab answered (bad input is 4xx).
type RequestError struct {
	Status int
	Msg    string
}

func (e *RequestError) Error() string { return e.Msg }

// BadRequest says whether the lab refused the request's input.
func (e *RequestError) BadRequest() bool {
	return e.Status == http.StatusBadRequest || e.Status == http.StatusNotFound
}

// Dial returns a client for lab name under stateDir ("" is the default).
// It fails with a *NotRunningError that says what is going on when the lab
// is not serving: still coming up, run by a process without a socket, or
// dead with leftovers.
func Dial(name, stateDir string) (*Client, error) {
	p := PathsFor(name, stateDir)
	c := &Client{paths: p, hc: &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", p.Socket())
		}}}}
	if _, err := os.Stat(p.Socket()); err != nil {
		return nil, c.notRunning()
	}
	return c, nil
}

// notRunning explains why the lab does not answer.
func (c *Client) notRunning() error {
	p := c.paths
	o, alive, _ := ReadOwner(p)
	switch {
	case alive:
		return &NotRunningError{Name: p.Name, Msg: fmt.Sprintf("lab %s is still coming up (owned by %s); try again when its bring-up has finished", p.Name, o)}
	case hasLeftovers(p):
		return &NotRunningError{Name: p.Name, Stale: true, Msg: fmt.Sprintf("lab %s's supervisor is gone (it left namespaces or state behind); `vpclab gc --name %s` cleans up", p.Name, p.Name)}
	default:
		return &NotRunningError{Name: p.Name, Msg: fmt.Sprintf("no running lab %q (vpclab up --name %s starts one)", p.Name, p.Name)}
	}
}

// do sends one request; out may be *string for a text body.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://lab"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" {
			return c.notRunning()
		}
		return fmt.Errorf("lab %s: %w", c.paths.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("lab %s: %w", c.paths.Name, err)
	}
	if resp.StatusCode >= 300 {
		var e apiError
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return &RequestError{Status: resp.StatusCode, Msg: e.Error}
		}
		return &RequestError{Status: resp.StatusCode, Msg: fmt.Sprintf("%s %s: %s", method, path, resp.Status)}
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *string:
		*o = string(b)
		return nil
	default:
		if len(b) == 0 {
			return nil
		}
		return json.Unmarshal(b, out)
	}
}

// Status returns the lab's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, "/status", nil, &s)
	return s, err
}

// Snapshot returns the lab's status, timeline and audit records now
// (what vpclab ui shows).
func (c *Client) Snapshot(ctx context.Context) (Snapshot, error) {
	var s Snapshot
	return s, c.do(ctx, http.MethodGet, "/snapshot", nil, &s)
}

// SecurityGroups reports the lab VPC's groups, members and drops.
func (c *Client) SecurityGroups(ctx context.Context) (SGReport, error) {
	var r SGReport
	err := c.do(ctx, http.MethodGet, "/security-groups", nil, &r)
	return r, err
}

// AddPod adds a pod on node ("" is the first node).
func (c *Client) AddPod(ctx context.Context, node, namespace, name string) (PodStatus, error) {
	var p PodStatus
	err := c.do(ctx, http.MethodPost, "/pods", AddPodRequest{Node: node, Namespace: namespace, Name: name}, &p)
	return p, err
}

// AddPodRetry adds a pod like a kubelet: a failed ADD (the lab runs its
// DEL) is retried with Retry's back-off until timeout; onFail hears of
// each failed attempt. Refusals that a retry cannot change (a bad name, a
// pod that exists, a Kubernetes lab, no such node) are not retried.
func (c *Client) AddPodRetry(ctx context.Context, node, namespace, name string, timeout time.Duration, onFail func(n int, err error, wait time.Duration)) (PodStatus, error) {
	var p PodStatus
	err := Retry(ctx, timeout, func() (bool, error) {
		var err error
		p, err = c.AddPod(ctx, node, namespace, name)
		var re *RequestError
		return errors.As(err, &re) && re.Status == http.StatusServiceUnavailable, err
	}, onFail)
	return p, err
}

// IMDS fetches path (below /latest/, e.g. meta-data/local-ipv4) from the
// node's metadata service, from inside the node with an IMDSv2 token, as
// its ipamd does.
func (c *Client) IMDS(ctx context.Context, node, path string) (string, error) {
	var out string
	err := c.do(ctx, http.MethodGet, "/nodes/"+url.PathEscape(node)+"/imds?path="+url.QueryEscape(path), nil, &out)
	return out, err
}

// Kubectl runs the lab's kubectl (the pinned build) with its admin
// kubeconfig and args; an error for a lab that is not a Kubernetes lab.
func (c *Client) Kubectl(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, args ...string) error {
	s, err := c.Status(ctx)
	if err != nil {
		return err
	}
	if s.Kubeconfig == "" {
		return &RequestError{Status: http.StatusBadRequest, Msg: fmt.Sprintf("lab %s is not a Kubernetes lab (vpclab up --kubernetes)", s.Name)}
	}
	cmd := exec.CommandContext(ctx, k8s.Bin("kube"), append([]string{"kubectl", "--kubeconfig", s.Kubeconfig}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	return cmd.Run()
}

// ImportImage loads an image tarball (a host path) into every node's
// containerd.
func (c *Client) ImportImage(ctx context.Context, tar string) error {
	return c.do(ctx, http.MethodPost, "/images", ImportImageRequest{Path: tar}, nil)
}

// ImportImageRequest is POST /images's body.
type ImportImageRequest struct {
	Path string `json:"path"`
}

// DelPod deletes a pod.
func (c *Client) DelPod(ctx context.Context, namespace, name string) error {
	return c.do(ctx, http.MethodDelete, "/pods/"+url.PathEscape(namespace)+"/"+url.PathEscape(name), nil, nil)
}

// Metrics returns a node's ipamd metrics text.
func (c *Client) Metrics(ctx context.Context, node string) (string, error) {
	var m string
	err := c.do(ctx, http.MethodGet, "/nodes/"+url.PathEscape(node)+"/metrics", nil, &m)
	return m, err
}

// RestartIpamd kills a node's ipamd and starts it again, waiting until it
// serves.
func (c *Client) RestartIpamd(ctx context.Context, node string) (IpamdState, error) {
	var s IpamdState
	err := c.do(ctx, http.MethodPost, "/nodes/"+url.PathEscape(node)+"/ipamd/restart", nil, &s)
	return s, err
}

// SignalIpamd sends a signal (KILL when empty) to a node's ipamd.
func (c *Client) SignalIpamd(ctx context.Context, node, signal string) (IpamdState, error) {
	var s IpamdState
	err := c.do(ctx, http.MethodPost, "/nodes/"+url.PathEscape(node)+"/ipamd/signal", SignalRequest{Signal: signal}, &s)
	return s, err
}

// Down asks a lab run by `vpclab up` to tear itself down and waits until
// its owner has let go of it.
func (c *Client) Down(ctx context.Context) error {
	if err := c.do(ctx, http.MethodPost, "/down", nil, nil); err != nil {
		return err
	}
	for {
		if _, alive, _ := ReadOwner(c.paths); !alive && !hasLeftovers(c.paths) {
			_ = os.Remove(c.paths.Log())
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab %s is still shutting down: %w", c.paths.Name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Faults lists the fake EC2's fault rules.
func (c *Client) Faults(ctx context.Context) ([]faults.Rule, error) {
	var rules []faults.Rule
	err := c.do(ctx, http.MethodGet, control.Prefix+"faults", nil, &rules)
	return rules, err
}

// AddFaults adds fault rules and returns them with their ids.
func (c *Client) AddFaults(ctx context.Context, rules ...faults.Rule) ([]faults.Rule, error) {
	var added []faults.Rule
	err := c.do(ctx, http.MethodPost, control.Prefix+"faults", rules, &added)
	return added, err
}

// ClearFaults removes every fault rule.
func (c *Client) ClearFaults(ctx context.Context) error {
	return c.do(ctx, http.MethodDelete, control.Prefix+"faults", nil, nil)
}

// SetThrottling replaces the EC2 API's throttling configuration.
func (c *Client) SetThrottling(ctx context.Context, cfg ec2query.ThrottleConfig) error {
	return c.do(ctx, http.MethodPut, control.Prefix+"throttling", cfg, nil)
}

// EventQuery selects audit records.
type EventQuery struct {
	Action     string
	ErrorsOnly bool
	Since      uint64
	// Wait long-polls for records newer than Since.
	Wait time.Duration
}

// Events returns CloudTrail-shaped records of the lab's EC2 calls.
func (c *Client) Events(ctx context.Context, q EventQuery) ([]ec2query.Record, error) {
	v := url.Values{}
	if q.Action != "" {
		v.Set("action", q.Action)
	}
	if q.ErrorsOnly {
		v.Set("errors", "true")
	}
	v.Set("since", strconv.FormatUint(q.Since, 10))
	if q.Wait > 0 {
		v.Set("wait", q.Wait.String())
	}
	var recs []ec2query.Record
	err := c.do(ctx, http.MethodGet, control.Prefix+"events?"+v.Encode(), nil, &recs)
	return recs, err
}

// FollowEvents calls fn for every record matching q, then, when follow is
// set, for every newer one until ctx is done (which ends it without error).
func (c *Client) FollowEvents(ctx context.Context, q EventQuery, follow bool, fn func(ec2query.Record)) error {
	if follow {
		q.Wait = 10 * time.Second
	}
	for {
		recs, err := c.Events(ctx, q)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for _, r := range recs {
			q.Since = max(q.Since, r.Seq)
			fn(r)
		}
		if !follow {
			return nil
		}
	}
}
