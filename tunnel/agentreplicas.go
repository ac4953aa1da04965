package tunnel

import (
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// agentSession is one session an agent holds, to one replica.
type agentSession struct {
	replica string // the replica's ID (or "address <addr>" for a server without a control stream)
	addr    string // the address it was dialed through
	mux     *yamux.Session
	ctl     *yamux.Stream // nil for a server without a control stream
	since   time.Time
}

// heldReplicas is the agent's dial plan: the sessions it holds, at most
// one per replica, and how many it wants. It decides; Agent.Run dials.
//
// The agent wants as many sessions as the replicas say there are
// replicas; when they do not know (0), one per address the server name
// resolves to (a headless Service: one address per replica).
type heldReplicas struct {
	mu       sync.Mutex
	held     map[string]*agentSession // by replica
	count    int                      // the replica count last announced (0: unknown)
	lastAt   map[string]string        // address -> the replica last reached through it
	next     int                      // round robin over addresses
	failures int                      // attempts in a row that brought no new replica
	wake     chan struct{}            // something changed: look again
}

func newHeldReplicas() *heldReplicas {
	return &heldReplicas{held: map[string]*agentSession{}, lastAt: map[string]string{}, wake: make(chan struct{}, 1)}
}

func (h *heldReplicas) signal() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// want is how many sessions the agent should hold with addrs addresses.
func (h *heldReplicas) wantLocked(addrs int) int {
	if h.count > 0 {
		return h.count
	}
	return max(addrs, 1)
}

// need says whether to dial again.
func (h *heldReplicas) need(addrs int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.held) < h.wantLocked(addrs)
}

// pick chooses the address to dial: in turn among those not known to
// lead to a replica held (a headless Service's other pods; a dead one
// must not hold up the rest), else in turn among all (a load balancer:
// only another try can land elsewhere).
func (h *heldReplicas) pick(addrs []string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var fresh []string
	for _, a := range addrs {
		if r, ok := h.lastAt[a]; !ok || h.held[r] == nil {
			fresh = append(fresh, a)
		}
	}
	if len(fresh) == 0 {
		fresh = addrs
	}
	h.next++
	return fresh[h.next%len(fresh)]
}

// add records a session to s.replica unless one is held already (false:
// a duplicate, to be dropped). count is what the replica announced, or
// -1 for a server that announces nothing.
func (h *heldReplicas) add(s *agentSession, count int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastAt[s.addr] = s.replica
	if count >= 0 {
		h.count = count
	}
	if h.held[s.replica] != nil {
		h.failures++
		return false
	}
	h.held[s.replica] = s
	h.failures = 0
	return true
}

// remove forgets s when it ends. A session that ended before minLife had
// passed counts as a failure (a replica that takes agents and drops them
// must not be redialed in a tight loop); any end waits at least one
// jittered backoff step, so agents of a replica that went away do not all
// come back at the same instant.
func (h *heldReplicas) remove(s *agentSession, minLife time.Duration) {
	h.mu.Lock()
	if h.held[s.replica] == s {
		delete(h.held, s.replica)
	}
	if time.Since(s.since) < minLife {
		h.failures++
	} else {
		h.failures = max(h.failures, 1)
	}
	h.mu.Unlock()
	h.signal()
}

// failed counts an attempt that brought no session.
func (h *heldReplicas) failed() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failures++
}

// attempts is the number of failed attempts in a row (0: dial at once).
func (h *heldReplicas) attempts() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failures
}

// setCount takes a newly announced replica count.
func (h *heldReplicas) setCount(n int) {
	h.mu.Lock()
	changed := n != h.count
	h.count = n
	h.mu.Unlock()
	if changed {
		h.signal()
	}
}

// replicas lists the replicas held, sorted.
func (h *heldReplicas) replicas() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.held))
	for r := range h.held {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}
