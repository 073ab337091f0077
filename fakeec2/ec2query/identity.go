package ec2query

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
)

// Identity is CloudTrail's userIdentity of a call. A call from an
// instance's private address is the instance's role session (what an
// instance profile's credentials are on EC2): type AssumedRole, the
// session named after the instance. Any other call is an IAM user named
// by its access key id (fakeec2 does not model IAM; in a lab the access
// key id is the user's name).
type Identity struct {
	Type        string `json:"type"`
	PrincipalID string `json:"principalId,omitempty"`
	ARN         string `json:"arn,omitempty"`
	AccountID   string `json:"accountId,omitempty"`
	AccessKeyID string `json:"accessKeyId,omitempty"`
	UserName    string `json:"userName,omitempty"`
	// InstanceID is vpclab's: the instance whose address made the call.
	InstanceID string `json:"instanceId,omitempty"`
}

// NodeRole is the role name an instance's calls are sessions of.
const NodeRole = "vpclab-node"

// identity names the caller of r, signed with access key key.
func (s *Server) identity(r *http.Request, key string) Identity {
	acct := s.region.AccountID()
	id := Identity{AccountID: acct, AccessKeyID: key}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if inst, ok := s.region.InstanceAt(a); ok {
			id.Type, id.InstanceID = "AssumedRole", inst
			id.PrincipalID = "AROAVPCLABNODEROLE:" + inst
			id.ARN = "arn:aws:sts::" + acct + ":assumed-role/" + NodeRole + "/" + inst
			return id
		}
	}
	name := key
	if name == "" {
		name = "anonymous"
	}
	id.Type, id.UserName, id.PrincipalID = "IAMUser", name, name
	id.ARN = "arn:aws:iam::" + acct + ":user/" + name
	return id
}

// Names are the caller's names a fault rule's caller glob, or a scenario
// matching a caller, is matched against: instance id, ARN, user name.
func (i Identity) Names() []string {
	var out []string
	for _, n := range []string{i.InstanceID, i.ARN, i.UserName} {
		if n != "" {
			out = append(out, n)
		}
	}
	return out
}

// callHooks are the functions told of every answered call.
type callHooks struct {
	mu    sync.Mutex
	next  int
	hooks map[int]func(Record)
}

// OnCall registers f to hear of every answered call, synchronously, after
// the call's answer is written and before the handler returns — so before
// the caller has read it. f must be quick and must not call the server.
// The returned function unregisters it.
func (s *Server) OnCall(f func(Record)) (cancel func()) {
	h := &s.hooks
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hooks == nil {
		h.hooks = map[int]func(Record){}
	}
	h.next++
	id := h.next
	h.hooks[id] = f
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.hooks, id)
	}
}

// tell runs the call hooks on rec.
func (s *Server) tell(rec Record) {
	h := &s.hooks
	h.mu.Lock()
	fs := make([]func(Record), 0, len(h.hooks))
	for _, f := range h.hooks {
		fs = append(fs, f)
	}
	h.mu.Unlock()
	for _, f := range fs {
		f(rec)
	}
}
