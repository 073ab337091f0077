package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vpclab/vpclab/fakeec2/control"
)

// The control socket: HTTP over a unix socket that only root can open
// (mode 0600, and the peer's uid is checked), served by every lab for its
// whole life. Client is its typed client.

// serveControl starts the lab's control socket.
func (l *Lab) serveControl() error {
	ln, err := listenRootOnly(l.paths.Socket())
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	l.ctl = &http.Server{Handler: l.controlMux()}
	go func() { _ = l.ctl.Serve(ln) }()
	return nil
}

// listenRootOnly listens on a unix socket that is never, not even for a
// moment, connectable by anyone but root: it is bound in a private
// directory, made 0600, then renamed into place.
func listenRootOnly(path string) (net.Listener, error) {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".sock")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, err
	}
	return &rootOnly{ln}, nil
}

// rootOnly refuses connections from any uid but 0 (defence in depth: the
// socket's mode already says so).
type rootOnly struct{ *net.UnixListener }

func (r *rootOnly) Accept() (net.Conn, error) {
	for {
		c, err := r.UnixListener.AcceptUnix()
		if err != nil {
			return nil, err
		}
		raw, err := c.SyscallConn()
		if err != nil {
			c.Close()
			continue
		}
		var cred *unix.Ucred
		_ = raw.Control(func(fd uintptr) { cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
		if cred == nil || cred.Uid != 0 {
			c.Close()
			continue
		}
		return c, nil
	}
}

// apiError is the control socket's error body.
type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, code int, err error) { writeJSON(w, code, apiError{err.Error()}) }

// errNotReady answers requests that need a lab that is up.
func (l *Lab) errNotReady() error {
	return fmt.Errorf("lab %s is still coming up; try again when its bring-up has finished", l.cfg.Name)
}

// controlMux is the control socket's API.
func (l *Lab) controlMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, l.Status()) })
	mux.HandleFunc("GET /security-groups", l.whenReady(l.handleSecurityGroups))
	mux.HandleFunc("GET /snapshot", l.whenReady(func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, l.Snapshot()) }))
	mux.HandleFunc("POST /pods", l.whenReady(l.handleAddPod))
	mux.HandleFunc("DELETE /pods/{ns}/{name}", l.whenReady(l.handleDelPod))
	mux.HandleFunc("GET /nodes/{node}/metrics", l.whenReady(l.onNode(l.handleMetrics)))
	mux.HandleFunc("GET /nodes/{node}/imds", l.whenReady(l.onNode(l.handleIMDS)))
	mux.HandleFunc("POST /nodes/{node}/ipamd/restart", l.whenReady(l.onNode(l.handleRestartIpamd)))
	mux.HandleFunc("POST /nodes/{node}/ipamd/signal", l.whenReady(l.onNode(l.handleSignalIpamd)))
	mux.HandleFunc("POST /images", l.whenReady(l.handleImportImage))
	mux.HandleFunc("POST /down", l.handleDown)
	mux.Handle(control.Prefix, l.whenReady(func(w http.ResponseWriter, r *http.Request) { l.srv.ControlHandler().ServeHTTP(w, r) }))
	return mux
}

// whenReady refuses requests that need the lab's nodes until bring-up is done.
func (l *Lab) whenReady(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !l.Ready() {
			fail(w, http.StatusServiceUnavailable, l.errNotReady())
			return
		}
		h(w, r)
	}
}

// onNode resolves the {node} path segment for h, or answers 404.
func (l *Lab) onNode(h func(http.ResponseWriter, *http.Request, *Node)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		n := l.Node(r.PathValue("node"))
		if n == nil {
			fail(w, http.StatusNotFound, fmt.Errorf("no node %q in lab %s", r.PathValue("node"), l.cfg.Name))
			return
		}
		h(w, r, n)
	}
}

func (l *Lab) handleAddPod(w http.ResponseWriter, r *http.Request) {
	var req AddPodRequest
	if err := decode(r, &req); err != nil {
		fail(w, http.StatusBadRequest, err)
		return
	}
	if err := ValidatePodName(req.Namespace, req.Name); err != nil {
		fail(w, http.StatusBadRequest, err)
		return
	}
	n := l.Node(req.Node)
	if req.Node == "" {
		n = l.Nodes()[0]
	}
	if n == nil {
		fail(w, http.StatusNotFound, fmt.Errorf("no node %q in lab %s", req.Node, l.cfg.Name))
		return
	}
	p, err := n.AddPod(r.Context(), req.Namespace, req.Name)
	switch {
	case errors.Is(err, ErrPodExists):
		fail(w, http.StatusConflict, err)
		return
	case errors.Is(err, ErrKubernetesPods):
		fail(w, http.StatusBadRequest, err)
		return
	case err != nil:
		// The CNI ADD failed (its DEL has run): a kubelet would retry.
		fail(w, http.StatusServiceUnavailable, err)
		return
	}
	writeJSON(w, http.StatusCreated, p.status())
}

func (l *Lab) handleSecurityGroups(w http.ResponseWriter, _ *http.Request) {
	rep, err := l.SecurityGroups()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (l *Lab) handleDelPod(w http.ResponseWriter, r *http.Request) {
	for _, n := range l.Nodes() {
		for _, p := range n.Pods() {
			if p.Namespace == r.PathValue("ns") && p.Name == r.PathValue("name") {
				if err := n.DelPod(r.Context(), p); err != nil {
					fail(w, http.StatusInternalServerError, err)
					return
				}
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
	}
	fail(w, http.StatusNotFound, fmt.Errorf("no pod %s/%s", r.PathValue("ns"), r.PathValue("name")))
}

func (l *Lab) handleMetrics(w http.ResponseWriter, _ *http.Request, n *Node) {
	m, err := n.Metrics()
	if err != nil {
		fail(w, http.StatusBadGateway, fmt.Errorf("node %s: ipamd metrics: %w", n.Name, err))
		return
	}
	_, _ = io.WriteString(w, m)
}

func (l *Lab) handleIMDS(w http.ResponseWriter, r *http.Request, n *Node) {
	path := r.URL.Query().Get("path")
	if _, err := imdsPath(path); err != nil {
		fail(w, http.StatusBadRequest, err)
		return
	}
	body, err := n.IMDS(r.Context(), path)
	if err != nil {
		fail(w, http.StatusBadGateway, err)
		return
	}
	_, _ = io.WriteString(w, body)
}

func (l *Lab) handleRestartIpamd(w http.ResponseWriter, r *http.Request, n *Node) {
	if err := n.RestartIpamd(r.Context()); err != nil {
		fail(w, http.StatusBadGateway, err)
		return
	}
	writeJSON(w, 200, n.IpamdState())
}

func (l *Lab) handleSignalIpamd(w http.ResponseWriter, r *http.Request, n *Node) {
	var req SignalRequest
	if err := decode(r, &req); err != nil {
		fail(w, http.StatusBadRequest, err)
		return
	}
	sig, err := ParseSignal(req.Signal)
	if err != nil {
		fail(w, http.StatusBadRequest, err)
		return
	}
	if err := n.SignalIpamd(sig); err != nil {
		fail(w, http.StatusConflict, err)
		return
	}
	writeJSON(w, 200, n.IpamdState())
}

func (l *Lab) handleImportImage(w http.ResponseWriter, r *http.Request) {
	var req ImportImageRequest
	if err := decode(r, &req); err != nil {
		fail(w, http.StatusBadRequest, err)
		return
	}
	if st, err := os.Stat(req.Path); err != nil || st.IsDir() {
		fail(w, http.StatusBadRequest, fmt.Errorf("image tarball %q: not a file", req.Path))
		return
	}
	if err := l.ImportImage(r.Context(), req.Path); err != nil {
		code := http.StatusInternalServerError
		if l.kube == nil {
			code = http.StatusBadRequest
		}
		fail(w, code, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (l *Lab) handleDown(w http.ResponseWriter, _ *http.Request) {
	l.mu.Lock()
	down := l.onDown
	l.mu.Unlock()
	if down == nil {
		o, _, _ := ReadOwner(l.paths)
		fail(w, http.StatusConflict, fmt.Errorf("lab %s is run by %s, not by vpclab up: stop that process (Ctrl-C) to tear it down", l.cfg.Name, o))
		return
	}
	w.WriteHeader(http.StatusNoContent)
	if f, ok := w.(http.Flusher); ok {
		f.Flush() // the answer is on its way before teardown closes the socket
	}
	go down()
}

// AddPodRequest is POST /pods.
type AddPodRequest struct {
	Node      string `json:"node"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// SignalRequest is POST /nodes/{node}/ipamd/signal.
type SignalRequest struct {
	Signal string `json:"signal"`
}

// ParseSignal reads a signal name (KILL, SIGTERM, term) or number.
func ParseSignal(s string) (syscall.Signal, error) {
	name := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	if name == "" {
		return syscall.SIGKILL, nil
	}
	for i := syscall.Signal(1); i < 32; i++ {
		if strings.TrimPrefix(strings.ToUpper(unix.SignalName(i)), "SIG") == name {
			return i, nil
		}
	}
	var n int
	if _, err := fmt.Sscan(s, &n); err == nil && n > 0 && n < 32 {
		return syscall.Signal(n), nil
	}
	return 0, fmt.Errorf("signal %q: want a name such as KILL, TERM, INT or a number", s)
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	return nil
}

// setOnDown makes POST /down call f (once).
func (l *Lab) setOnDown(f func()) {
	var once sync.Once
	l.mu.Lock()
	l.onDown = func() { once.Do(f) }
	l.mu.Unlock()
}
