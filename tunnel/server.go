package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/sirupsen/logrus"

	"github.com/vnode-project/vnode/internal/certs"
)

// ServerConfig configures a tunnel server replica.
type ServerConfig struct {
	// AgentCert is the certificate agents see; AgentCA verifies theirs.
	AgentCert *certs.KeyPair
	AgentCA   *certs.CABundle
	// Identities an agent certificate may have (default DefaultIdentities).
	Identities []Identity

	// ProxyCert serves CONNECT requesters over TLS; ProxyCA verifies their
	// client certificates (kube-apiserver's egress client certificate).
	// Without ProxyCert only a unix socket may serve CONNECT.
	ProxyCert *certs.KeyPair
	ProxyCA   *certs.CABundle
	// ProxyClientNames, if set, are the only certificate CNs allowed.
	ProxyClientNames []string
	// Tokens, if set, also admits requesters with a bearer token in
	// Proxy-Authorization (then a client certificate is optional).
	Tokens TokenAuthenticator

	Nodes NodeResolver
	Ports *PortPolicy // default DefaultPorts
	// DirectPrefixes are addresses no node serves that the server dials
	// itself (direct.go): the cloud side's pod and Service networks.
	DirectPrefixes []netip.Prefix
	// Replicas names this replica to agents and counts the replicas
	// (default: a fresh name, count unknown).
	Replicas *Replicas

	DialTimeout      time.Duration // whole dial through the agent (default 10s)
	HandshakeTimeout time.Duration // agent TLS handshake (default 10s)
	MaxPendingDials  int           // dials waiting for an agent's answer (default 256)

	// Agent admission in a reconnect storm (admission.go): TLS handshakes
	// at once (default 64), connections waiting for one (default 1024;
	// negative: none), and the delay deferred agents and busy requesters
	// are told to retry after (default 2s).
	MaxHandshakes     int
	MaxHandshakeQueue int
	RetryAfter        time.Duration

	Log     *logrus.Entry
	Metrics *Metrics
}

// Server accepts agent sessions and routes CONNECT requests to them.
type Server struct {
	cfg     ServerConfig
	reg     *registry
	adm     *admission
	keeper  *keeper
	pending chan struct{}
	muxLog  io.WriteCloser
	ctls    controlStreams
	stop    context.CancelFunc // ends announceReplicas

	mu        sync.Mutex
	closed    bool
	listeners []net.Listener
	https     []*http.Server
	conns     map[net.Conn]struct{} // agent connections still in handshake
	serving   int
	wg        sync.WaitGroup
}

// NewServer checks cfg and fills defaults.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.AgentCert == nil || cfg.AgentCA == nil {
		return nil, errors.New("tunnel server: agent certificate and CA are required")
	}
	if cfg.ProxyCert != nil && cfg.ProxyCA == nil && cfg.Tokens == nil {
		return nil, errors.New("tunnel server: a TLS proxy listener needs a requester CA or token authentication")
	}
	if cfg.Nodes == nil {
		return nil, errors.New("tunnel server: a node resolver is required")
	}
	if len(cfg.Identities) == 0 {
		cfg.Identities = DefaultIdentities()
	}
	if cfg.Ports == nil {
		cfg.Ports = NewPortPolicy(DefaultPorts())
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.MaxPendingDials <= 0 {
		cfg.MaxPendingDials = 256
	}
	admissionDefaults(&cfg)
	if cfg.Log == nil {
		cfg.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.Replicas == nil {
		cfg.Replicas = NewReplicas("")
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, reg: newRegistry(), adm: newAdmission(cfg.MaxHandshakes, cfg.MaxHandshakeQueue), keeper: newKeeper(),
		pending: make(chan struct{}, cfg.MaxPendingDials), stop: stop,
		muxLog: cfg.Log.WithField("component", "yamux").WriterLevel(logrus.DebugLevel), conns: map[net.Conn]struct{}{}}
	go s.announceReplicas(ctx)
	return s, nil
}

// track registers a listener; false if the server is already closed.
func (s *Server) track(l net.Listener, hs *http.Server) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.listeners = append(s.listeners, l)
	if hs != nil {
		s.https = append(s.https, hs)
	}
	s.serving++
	return true
}

// ServeAgents accepts agent sessions on l (TLS is added here) until Close.
func (s *Server) ServeAgents(l net.Listener) error {
	tl := tls.NewListener(batchListener{l}, serverTLS(s.cfg.AgentCert, s.cfg.AgentCA, []string{alpnReplicas, alpnProtocol}, tls.RequireAndVerifyClientCert))
	if !s.track(tl, nil) {
		return net.ErrClosed
	}
	s.keepSessionsAlive()
	for {
		c, err := tl.Accept()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond) // out of descriptors: back off rather than spin
				continue
			}
			return fmt.Errorf("accepting agent connections: %w", err)
		}
		if !s.adm.enter() {
			s.deferConn(c.(*tls.Conn).NetConn(), "deferred")
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handleAgent(c.(*tls.Conn))
		}()
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// handleAgent authenticates one agent connection and holds its session
// until it ends.
func (s *Server) handleAgent(c *tls.Conn) {
	log := s.cfg.Log.WithField("remote", c.RemoteAddr().String())
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.adm.leave()
		_ = c.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	reject := func(reason string, err error) {
		s.cfg.Metrics.AgentRejected.WithLabelValues(reason).Inc()
		log.WithError(err).WithField("reason", reason).Warn("agent connection refused")
		_ = c.Close()
	}
	if deferred, err := s.handshake(c); deferred {
		log.WithError(err).Debug("agent connection deferred: no handshake slot in time")
		return
	} else if err != nil {
		reject("handshake", fmt.Errorf("agent TLS handshake: %w", err))
		return
	}
	st := c.ConnectionState()
	if st.NegotiatedProtocol != alpnReplicas && st.NegotiatedProtocol != alpnProtocol {
		reject("protocol", fmt.Errorf("agent offered neither %s nor %s", alpnReplicas, alpnProtocol))
		return
	}
	// The handshake verified the chain; the node comes from the
	// certificate alone.
	node, id, err := NodeOf(st.PeerCertificates[0], s.cfg.Identities)
	if err != nil {
		reject("identity", err)
		return
	}
	co := newCoalescer(c, rawOf(c))
	mux, err := yamux.Server(co, agentSessionConfig(s.muxLog))
	if err != nil {
		reject("session", fmt.Errorf("starting the agent session: %w", err))
		return
	}
	var ctl *yamux.Stream
	told := 0
	if st.NegotiatedProtocol == alpnReplicas {
		var keep bool
		if ctl, told, keep, err = s.greet(mux); err != nil || !keep {
			_ = mux.Close()
			if err != nil {
				reject("session", err)
			} else {
				// Not an error: the agent dialed through a load balancer
				// and landed on a replica it already holds.
				s.cfg.Metrics.AgentRejected.WithLabelValues("duplicate").Inc()
				log.WithField("node", node).Debug("agent already holds a session to this replica")
			}
			return
		}
	}
	// A session of another identity for the same node has its own key:
	// it never displaces this one, nor this one it (the routing rule picks
	// the one allowed to serve the node). The same identity reconnecting
	// replaces its older session.
	sess := &session{key: sessionKey{node: node, identity: id.Prefix}, mux: mux, remote: c.RemoteAddr().String(), since: time.Now()}
	old := s.reg.add(sess)
	log = log.WithFields(logrus.Fields{"node": node, "identity": id.Prefix, "session": sess.id})
	s.cfg.Metrics.Sessions.WithLabelValues(node, id.Prefix).Set(1)
	unfollow := func() {}
	if ctl != nil {
		unfollow = s.followReplicas(sess, ctl, told)
	}
	if old != nil {
		s.cfg.Metrics.Replacements.Inc()
		log.WithFields(logrus.Fields{"replaced": old.id, "replaced_remote": old.remote}).Info("newer agent session replaces the older one of the same identity")
		_ = old.mux.Close()
	} else {
		log.Info("agent session registered")
	}
	// No goroutine of ours waits for the session: its end unregisters it
	// (sessionmem.go).
	co.afterClose(func() { unfollow(); s.endSession(sess) })
	if s.isClosed() { // Close ran between the check above and add
		_ = mux.Close()
	}
}

// HasSession says whether node has an agent session here, of any
// identity (whether it may serve the node is the routing rule's call).
func (s *Server) HasSession(node string) bool {
	for _, id := range s.cfg.Identities {
		if s.reg.get(sessionKey{node: node, identity: id.Prefix}) != nil {
			return true
		}
	}
	return false
}

// Ready says whether the server is serving on at least one listener.
func (s *Server) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed && s.serving > 0
}

// Close stops listening, ends every agent session (their agents reconnect
// to another replica) and interrupts the tunneled connections.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.stop()
	s.adm.close()
	s.keeper.close()
	ls, hs := s.listeners, s.https
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	for _, l := range ls {
		_ = l.Close()
	}
	for _, h := range hs {
		_ = h.Close()
	}
	for _, sess := range s.reg.all() {
		_ = sess.mux.Close()
	}
	s.wg.Wait()
	return s.muxLog.Close()
}

// Metrics are the server's metrics (tests, embedding).
func (s *Server) Metrics() *Metrics { return s.cfg.Metrics }
