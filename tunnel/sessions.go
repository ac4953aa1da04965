package tunnel

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// sessionKey is who a session speaks for: a node, as one identity.
// Sessions of different identities for one node never share a key, so
// one never displaces the other; the routing rule picks the one allowed.
type sessionKey struct {
	node     string
	identity string // the Identity's Prefix
}

// session is one agent's yamux session on this server.
type session struct {
	key    sessionKey
	id     uint64 // registration order on this server: higher is newer
	mux    *yamux.Session
	remote string
	since  time.Time
	// probing: a liveness probe of this session is running (liveness.go).
	probing atomic.Bool
}

// registry holds the current session of each node and identity.
// Registration order decides which of two sessions with the same key
// serves: the later one, so a reconnecting agent is never shadowed by the
// half-dead session it left.
type registry struct {
	mu    sync.Mutex
	next  uint64
	byKey map[sessionKey]*session
}

func newRegistry() *registry { return &registry{byKey: map[sessionKey]*session{}} }

// add makes s the session of its key and returns the one it replaced, if
// any.
func (r *registry) add(s *session) (old *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	s.id = r.next
	old = r.byKey[s.key]
	r.byKey[s.key] = s
	return old
}

// remove drops s if it is still its key's session; a replaced session
// ending later must not unregister its successor.
func (r *registry) remove(s *session) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byKey[s.key] != s {
		return false
	}
	delete(r.byKey, s.key)
	return true
}

func (r *registry) get(k sessionKey) *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byKey[k]
}

// all returns every current session (shutdown, tests).
func (r *registry) all() []*session {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*session, 0, len(r.byKey))
	for _, s := range r.byKey {
		out = append(out, s)
	}
	return out
}
