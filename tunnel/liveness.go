package tunnel

import (
	"time"

	"github.com/sirupsen/logrus"
)

// An agent whose connection goes quiet without closing (a power cut, a NAT
// that forgets the flow) leaves its session registered until the keeper's
// round gives up on it, up to 30s (a ping every 15s, then 15s to answer).
// Until then every request for its node, or for its network domain if it
// is the active gateway, times out. A stream that is never acknowledged
// would end it sooner (StreamOpenTimeout), but the dial's own deadline
// closes the stream first, which cancels that timer. So a dial unanswered
// for silentAfter has the server ping the session; no answer within
// probeTimeout ends it, and the next request goes to the node's next
// session or its domain's standby gateway. A live agent answers a ping at
// once, even while its target is slow to dial: only the connection's own
// queue delays it, which probeTimeout leaves room for on slow links.
const (
	silentAfter  = time.Second
	probeTimeout = 5 * time.Second
)

// probe pings sess, once at a time however many dials wait on it, and
// closes it if the ping goes unanswered.
func (s *Server) probe(sess *session) {
	if !sess.probing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer sess.probing.Store(false)
		s.pingOrClose(sess, probeTimeout, "a dial and a ping went unanswered, the agent's connection is silent")
	}()
}

// pingOrClose is the one liveness check of a session, for the keeper's
// round and a dial's probe alike: a ping unanswered within timeout ends
// the session (counted in sessions_silent_closed_total).
func (s *Server) pingOrClose(sess *session, timeout time.Duration, why string) {
	answered := make(chan error, 1)
	go func() { _, err := sess.mux.Ping(); answered <- err }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-answered:
		if err == nil || sess.mux.IsClosed() {
			return // alive, or already gone
		}
	case <-timer.C:
		if sess.mux.IsClosed() {
			return // the other check got there first
		}
	}
	s.cfg.Metrics.SilentClosed.Inc()
	s.cfg.Log.WithFields(logrus.Fields{"node": sess.key.node, "identity": sess.key.identity, "session": sess.id, "remote": sess.remote}).
		Warn("tunnel session closed: " + why)
	_ = sess.mux.Close()
}
