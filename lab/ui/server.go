package ui

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"time"

	"github.com/vpclab/vpclab/lab"
)

// Server serves a running lab's live page: GET / is the whole page, GET
// /fragment what its script swaps in every 2 s. The lab's control
// surfaces are root-only; the page is on a TCP port, so every request must
// carry the token of the URL the server printed (?token=…, or the cookie
// the first answer sets): only whoever started it can look.
type Server struct {
	Title string
	Token string
	// Snapshot reads the lab now.
	Snapshot func(ctx context.Context) (lab.Snapshot, error)
}

// NewToken returns a random token for a Server.
func NewToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

const cookieName = "vpclab-ui"

func (s *Server) authorised(w http.ResponseWriter, r *http.Request) bool {
	got := r.URL.Query().Get("token")
	if got == "" {
		if c, err := r.Cookie(cookieName); err == nil {
			got = c.Value
		}
	}
	if s.Token == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.Token)) != 1 {
		http.Error(w, "vpclab ui: this page needs the token of the URL `vpclab ui` printed", http.StatusForbidden)
		return false
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: s.Token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
	return true
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path != "/" && r.URL.Path != "/fragment" {
		http.NotFound(w, r)
		return
	}
	if !s.authorised(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	snap, err := s.Snapshot(ctx)
	if err != nil {
		http.Error(w, "vpclab ui: "+err.Error(), http.StatusBadGateway)
		return
	}
	p := Page{Title: s.Title, Subtitle: "live — refreshed every 2 s", Runs: []Run{{Snap: snap}}, Live: true}
	var b bytes.Buffer
	write := Write
	if r.URL.Path == "/fragment" {
		write = WriteFragment
	}
	if err := write(&b, p); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:")
	_, _ = b.WriteTo(w)
}
