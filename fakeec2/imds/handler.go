package imds

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ConnContext records the connection in the request context so the
// token response can be sent with the instance's hop limit as IP TTL; use
// it as http.Server.ConnContext when serving a Handler.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

type connKey struct{}

// ConnContext is the package's ConnContext, for users that take the
// service as an interface (the fabric).
func (m *Service) ConnContext(ctx context.Context, c net.Conn) context.Context {
	return ConnContext(ctx, c)
}

// Handler returns the metadata service of one instance as an http.Handler.
// It serves 169.254.169.254's paths: /latest/api/token (PUT),
// /latest/meta-data/..., /latest/dynamic/instance-identity/document.
func (m *Service) Handler(instanceID string) http.Handler {
	return handler{m: m, id: instanceID}
}

type handler struct {
	m  *Service
	id string
}

// reply is a response computed under m.mu and written after.
type reply struct {
	status   int
	body     string
	header   map[string]string
	hopLimit int // > 0: send with this IP TTL (token responses)
}

func (h handler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	rep := h.m.serve(h.id, req)
	w.Header().Set("Server", "EC2ws")
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	if rep.status != http.StatusOK {
		rep.body = errorPage(rep.status)
		w.Header().Set("Content-Type", "text/html")
	} else if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "text/plain")
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(rep.body)))
	if rep.hopLimit > 0 {
		if c, ok := req.Context().Value(connKey{}).(net.Conn); ok {
			// Every packet of the token response, retransmissions included,
			// leaves with TTL = hop limit; the connection is closed after
			// it so no later response inherits the TTL.
			setConnTTL(c, rep.hopLimit)
			w.Header().Set("Connection", "close")
		}
	}
	w.WriteHeader(rep.status)
	if req.Method != http.MethodHead {
		_, _ = w.Write([]byte(rep.body))
	}
}

func errorPage(status int) string {
	title := fmt.Sprintf("%d - %s", status, http.StatusText(status))
	return `<?xml version="1.0" encoding="iso-8859-1"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
	"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title>` + title + `</title>
 </head>
 <body>
  <h1>` + title + `</h1>
 </body>
</html>
`
}

var versionRE = regexp.MustCompile(`^(latest|1\.0|\d{4}-\d{2}-\d{2})$`)

// versions is the listing of "/": a selection of real dated versions.
var versions = []string{"1.0", "2007-01-19", "2009-04-04", "2011-01-01", "2014-02-25", "2016-09-02", "2018-09-24", "2019-10-01", "2020-10-27", "2021-07-15", "2022-09-24", "latest"}

func (m *Service) serve(id string, req *http.Request) reply {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sync()
	v, ok := m.insts[id]
	if !ok || v.terminated {
		return reply{status: http.StatusNotFound}
	}
	now := m.region.Now()
	if v.inst.Metadata.HTTPEndpoint == "disabled" {
		return reply{status: http.StatusForbidden}
	}
	p := req.URL.Path
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	isToken := len(segs) == 3 && segs[1] == "api" && segs[2] == "token"
	if isToken && segs[0] == "latest" {
		if req.Method != http.MethodPut {
			return reply{status: http.StatusMethodNotAllowed, header: map[string]string{"Allow": "PUT"}}
		}
		return v.issueToken(req, now)
	}
	if req.Method == http.MethodPut {
		if isToken && versionRE.MatchString(segs[0]) {
			// Tokens are only handed out under /latest/, by design.
			return reply{status: http.StatusForbidden}
		}
		return reply{status: http.StatusMethodNotAllowed, header: map[string]string{"Allow": "GET, HEAD"}}
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return reply{status: http.StatusMethodNotAllowed, header: map[string]string{"Allow": "GET, HEAD, PUT"}}
	}
	hdr := map[string]string{}
	if tok := req.Header.Get(TokenHeader); tok != "" {
		exp, ok := v.tokens[tok]
		if !ok || !now.Before(exp) {
			delete(v.tokens, tok)
			return reply{status: http.StatusUnauthorized}
		}
		hdr[TokenTTLHeader] = strconv.Itoa(int(exp.Sub(now).Seconds()))
	} else if v.inst.Metadata.HTTPTokens == "required" {
		return reply{status: http.StatusUnauthorized}
	}
	v.catchUp(now)
	body, ok := m.lookup(v, segs, now)
	if !ok {
		return reply{status: http.StatusNotFound, header: hdr}
	}
	return reply{status: http.StatusOK, body: body, header: hdr}
}

func (v *replica) issueToken(req *http.Request, now time.Time) reply {
	if len(req.Header.Values("X-Forwarded-For")) > 0 {
		return reply{status: http.StatusForbidden}
	}
	raw := req.Header.Get(TokenTTLHeader)
	ttl, err := strconv.Atoi(strings.TrimSpace(raw))
	if raw == "" || err != nil || ttl < 1 || ttl > maxTokenTTL {
		return reply{status: http.StatusBadRequest}
	}
	for t, exp := range v.tokens {
		if !now.Before(exp) {
			delete(v.tokens, t)
		}
	}
	b := make([]byte, 42)
	_, _ = rand.Read(b)
	tok := base64.StdEncoding.EncodeToString(b)
	v.tokens[tok] = now.Add(time.Duration(ttl) * time.Second)
	return reply{status: http.StatusOK, body: tok, header: map[string]string{TokenTTLHeader: strconv.Itoa(ttl)}, hopLimit: v.inst.Metadata.HopLimit}
}
