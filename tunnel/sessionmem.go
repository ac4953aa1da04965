package tunnel

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/sirupsen/logrus"
)

// What an idle agent session costs the server is what 10,000 of them cost
// a replica (BENCHMARKS.md, issue 18). The server's side of a session is
// trimmed where it does not serve: agents never open streams.

// serverAcceptBacklog is how many agent-opened streams may wait, refused
// one by one, on the server: yamux allocates the backlog per session (an
// 8 KiB channel at muxConfig's 1,024), and only the agent accepts streams
// in bulk.
const serverAcceptBacklog = 8

// agentSessionConfig is muxConfig for the server's end of an agent
// session: a small accept backlog, and no keepalive goroutine of its own
// (the server's keeper pings every session, see keepSessionsAlive).
func agentSessionConfig(logOut io.Writer) *yamux.Config {
	c := muxConfig(logOut)
	c.AcceptBacklog = serverAcceptBacklog
	c.EnableKeepAlive = false
	return c
}

// keepaliveTimeout is how long a keepalive ping may go unanswered, as
// yamux's own keepalive allows (ConnectionWriteTimeout).
var keepaliveTimeout = muxConfig(nil).ConnectionWriteTimeout

// keepaliveWorkers bounds the pings in flight at once: a dead session's
// ping waits ConnectionWriteTimeout, and 10,000 live ones are a round trip
// each.
const keepaliveWorkers = 256

// keeper runs the server's one keepalive loop for all agent sessions,
// in place of yamux's goroutine per session: every KeepAliveInterval it
// pings each session and closes those that do not answer within
// ConnectionWriteTimeout, as yamux's keepalive would. The agents ping
// too (their keepalives find dead NAT paths and reconnect); this finds
// the server's half of a session whose agent is gone, so that routing
// does not wait on it.
type keeper struct {
	once     sync.Once
	stop     chan struct{}
	stopOnce sync.Once
}

func newKeeper() *keeper { return &keeper{stop: make(chan struct{})} }

// keepSessionsAlive starts the keeper, once per server.
func (s *Server) keepSessionsAlive() {
	s.keeper.once.Do(func() {
		interval := muxConfig(nil).KeepAliveInterval
		go func() {
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-s.keeper.stop:
					return
				case <-t.C:
				}
				s.pingAll()
			}
		}()
	})
}

// pingAll pings every current session, keepaliveWorkers at a time, and
// closes the ones that fail.
func (s *Server) pingAll() {
	sem := make(chan struct{}, keepaliveWorkers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, sess := range s.reg.all() {
		select {
		case sem <- struct{}{}:
		case <-s.keeper.stop:
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			refuseStreams(sess.mux)
			s.pingOrClose(sess, keepaliveTimeout, "it did not answer its keepalive")
		}()
	}
}

// close ends the loop (Server.Close).
func (k *keeper) close() { k.stopOnce.Do(func() { close(k.stop) }) }

// endSession unregisters sess once it has ended, unless a newer session
// of its key replaced it. Its log fields are made here, not kept for the
// session's life.
func (s *Server) endSession(sess *session) {
	if s.reg.remove(sess) {
		s.cfg.Metrics.Sessions.DeleteLabelValues(sess.key.node, sess.key.identity)
		s.cfg.Log.WithFields(logrus.Fields{"remote": sess.remote, "node": sess.key.node, "identity": sess.key.identity, "session": sess.id}).
			Info("agent session ended")
	}
}

// refuseStreams closes the streams an agent opened: agents never open
// streams. The keeper sweeps every session so (no goroutine waits in
// Accept per session); until then at most serverAcceptBacklog wait, and
// yamux resets any beyond. With an expired context, a waiting stream and
// the context race (select): the rest go at the next sweep.
func refuseStreams(mux *yamux.Session) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range serverAcceptBacklog {
		st, err := mux.AcceptStreamWithContext(ctx)
		if err != nil {
			return
		}
		_ = st.Close()
	}
}
