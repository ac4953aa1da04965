package tunnel

import (
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// session is one agent's yamux session on this server.
type session struct {
	node   string
	id     uint64 // registration order on this server: higher is newer
	mux    *yamux.Session
	remote string
	since  time.Time
}

// registry holds the current session of each node. Registration order
// decides which of two sessions for a node serves it: the later one, so a
// reconnecting agent is never shadowed by the half-dead session it left.
type registry struct {
	mu     sync.Mutex
	next   uint64
	byNode map[string]*session
}

func newRegistry() *registry { return &registry{byNode: map[string]*session{}} }

// add makes s the node's session and returns the one it replaced, if any.
func (r *registry) add(s *session) (old *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	s.id = r.next
	old = r.byNode[s.node]
	r.byNode[s.node] = s
	return old
}

// remove drops s if it is still its node's session; a replaced session
// ending later must not unregister its successor.
func (r *registry) remove(s *session) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byNode[s.node] != s {
		return false
	}
	delete(r.byNode, s.node)
	return true
}

func (r *registry) get(node string) *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byNode[node]
}

// all returns every current session (shutdown, tests).
func (r *registry) all() []*session {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*session, 0, len(r.byNode))
	for _, s := range r.byNode {
		out = append(out, s)
	}
	return out
}
