package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/sirupsen/logrus"

	"github.com/vnode-project/vnode/internal/backoff"
	"github.com/vnode-project/vnode/internal/certs"
)

// DialFunc dials like net.Dialer.DialContext.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// AgentConfig configures an agent.
type AgentConfig struct {
	// Server is host:port of the tunnel servers: one address in front of
	// every replica (a load balancer), or a name resolving to one address
	// per replica (a headless Service). The host is resolved again before
	// every connection attempt; the agent holds a session to every
	// replica (Run).
	Server string
	// ServerName is the name the servers' certificate must carry
	// (default: Server's host).
	ServerName string
	Cert       *certs.KeyPair  // the agent's client certificate (names its node)
	CA         *certs.CABundle // verifies the servers

	// Addresses the agent may dial besides loopback: its node's own
	// addresses. Default: this host's interface addresses at dial time. An
	// agent never dials elsewhere, so a compromised server cannot use it
	// to reach the edge network.
	Addresses []string
	// Gateway, if set, makes the agent a gateway of its node's network
	// domain (domain.go): it also serves the domain's other nodes, checked
	// against this view of the Nodes (NewDomainNodeIndex). Unset, the
	// agent serves only its own node.
	Gateway NodeResolver

	Dial       DialFunc // to servers (default net.Dialer)
	DialTarget DialFunc // to targets on the node (default net.Dialer)
	// Resolve returns the addresses of a host (default net.DefaultResolver).
	Resolve func(ctx context.Context, host string) ([]string, error)

	MinBackoff, MaxBackoff time.Duration // default 1s, 30s
	ResolveInterval        time.Duration // resolve again for new replicas while holding all (default 30s)
	DialTimeout            time.Duration // to a server or a target (default 10s)
	DrainTimeout           time.Duration // on shutdown, for open streams (default 10s)

	Log     *logrus.Entry
	Metrics *Metrics
}

// Agent dials out to the tunnel servers and serves their dial requests.
type Agent struct {
	cfg      AgentConfig
	host     string
	port     string
	node     string
	muxLog   io.WriteCloser
	sessions atomic.Int32 // held now, for readiness
	held     *heldReplicas
}

// NewAgent checks cfg and fills defaults.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	host, port, err := net.SplitHostPort(cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("tunnel agent: server %q: %w", cfg.Server, err)
	}
	if cfg.Cert == nil || cfg.CA == nil {
		return nil, errors.New("tunnel agent: a client certificate and a CA are required")
	}
	cert, err := cfg.Cert.Get()
	if err != nil {
		return nil, err
	}
	node := "?"
	if cert.Leaf != nil {
		if n, _, err := NodeOf(cert.Leaf, DefaultIdentities()); err == nil {
			node = n
		}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	d := &net.Dialer{}
	if cfg.Dial == nil {
		cfg.Dial = d.DialContext
	}
	if cfg.DialTarget == nil {
		cfg.DialTarget = d.DialContext
	}
	if cfg.Resolve == nil {
		cfg.Resolve = net.DefaultResolver.LookupHost
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.MinBackoff, time.Second)
	def(&cfg.MaxBackoff, 30*time.Second)
	def(&cfg.ResolveInterval, 30*time.Second)
	def(&cfg.DialTimeout, 10*time.Second)
	def(&cfg.DrainTimeout, 10*time.Second)
	if cfg.Log == nil {
		cfg.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	cfg.Log = cfg.Log.WithField("node", node)
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	return &Agent{cfg: cfg, host: host, port: port, node: node, held: newHeldReplicas(),
		muxLog: cfg.Log.WithField("component", "yamux").WriterLevel(logrus.DebugLevel)}, nil
}

// Run holds a session to every server replica until ctx ends, then
// drains: servers are told to open no more streams (GoAway) and open
// streams get DrainTimeout to finish.
//
// The replicas may sit behind one address (a load balancer picks one for
// each connection) or resolve to one address each (a headless Service):
// Run dials, one attempt at a time, until it holds a session to as many
// distinct replicas as they announce (heldReplicas decides what to dial),
// drops a second session to a replica it holds, and dials again when a
// session ends or the announced count grows.
func (a *Agent) Run(ctx context.Context) error {
	defer a.muxLog.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	bo := backoff.Policy{Base: a.cfg.MinBackoff, Max: a.cfg.MaxBackoff}
	tick := time.NewTicker(a.cfg.ResolveInterval)
	defer tick.Stop()
	pause := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	for ctx.Err() == nil {
		addrs, err := a.resolve(ctx)
		if err != nil {
			a.held.failed()
			wait := bo.Delay(a.held.attempts())
			a.cfg.Log.WithError(err).WithField("retry_in", wait.Round(time.Millisecond)).Warn("resolving the tunnel servers")
			pause(wait)
			continue
		}
		if !a.held.need(len(addrs)) {
			select {
			case <-ctx.Done():
			case <-a.held.wake:
			case <-tick.C: // the name may resolve to more replicas now
			}
			continue
		}
		if n := a.held.attempts(); n > 0 && !pause(bo.Delay(n)) {
			break
		}
		addr := a.held.pick(addrs)
		log := a.cfg.Log.WithField("server", net.JoinHostPort(addr, a.port))
		s, err := a.connect(ctx, addr)
		switch {
		case errors.Is(err, errHeldReplica):
			log.WithError(err).Debug("landed on a replica already held: dialing again")
			continue
		case err != nil:
			if ctx.Err() != nil {
				continue
			}
			// A server busy with a reconnect storm defers the agent
			// (admission.go): wait as told, and it is no failure.
			if wait, deferred := deferredWait(err, a.cfg.MaxBackoff); deferred {
				log.WithField("retry_in", wait.Round(time.Millisecond)).Debug("the tunnel server deferred this agent")
				pause(wait)
				continue
			}
			a.held.failed()
			log.WithError(err).Warn("connecting to a tunnel server failed")
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			log := log.WithField("replica", s.replica)
			err := a.serve(ctx, s, log)
			a.held.remove(s, a.cfg.MaxBackoff)
			if ctx.Err() == nil {
				log.WithError(err).Warn("tunnel session ended")
			}
		}()
	}
	return nil
}

func (a *Agent) resolve(ctx context.Context) ([]string, error) {
	if net.ParseIP(a.host) != nil {
		return []string{a.host}, nil
	}
	rctx, cancel := context.WithTimeout(ctx, a.cfg.DialTimeout)
	defer cancel()
	addrs, err := a.cfg.Resolve(rctx, a.host)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", a.host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%s resolves to no address", a.host)
	}
	slices.Sort(addrs)
	return slices.Compact(addrs), nil
}

// errHeldReplica: the connection reached a replica the agent already holds.
var errHeldReplica = errors.New("already holding a session to this replica")

// connect dials addr and sets up a session. On a replica the agent does
// not hold yet, the session is registered in a.held and returned; on one
// it holds, it is closed before the server registers it (errHeldReplica).
func (a *Agent) connect(ctx context.Context, addr string) (*agentSession, error) {
	a.cfg.Metrics.AgentReconnect.Inc()
	tcfg, err := clientTLS(a.cfg.Cert, a.cfg.CA, a.cfg.ServerName)
	if err != nil {
		return nil, fmt.Errorf("preparing TLS: %w", err)
	}
	dctx, cancel := context.WithTimeout(ctx, a.cfg.DialTimeout)
	defer cancel()
	raw, err := a.cfg.Dial(dctx, "tcp", net.JoinHostPort(addr, a.port))
	if err != nil {
		return nil, fmt.Errorf("dialing the server: %w", err)
	}
	conn := tls.Client(&batchConn{Conn: raw}, tcfg)
	if err := conn.HandshakeContext(dctx); err != nil {
		_ = raw.Close()
		if d, ok := deferralOf(err); ok {
			return nil, d
		}
		return nil, fmt.Errorf("TLS handshake with the server: %w", err)
	}
	proto := conn.ConnectionState().NegotiatedProtocol
	if proto != alpnReplicas && proto != alpnProtocol {
		_ = conn.Close()
		return nil, fmt.Errorf("server speaks neither %s nor %s", alpnReplicas, alpnProtocol)
	}
	mux, err := yamux.Client(newCoalescer(conn, rawOf(conn)), muxConfig(a.muxLog))
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("starting the session: %w", err)
	}
	s := &agentSession{addr: addr, mux: mux, since: time.Now()}
	if proto == alpnProtocol {
		// An older server: it names no replica, and each address is one.
		s.replica = "address " + addr
		if !a.held.add(s, -1) {
			_ = mux.Close()
			return nil, errHeldReplica
		}
		return s, nil
	}
	if s.ctl, err = mux.AcceptStreamWithContext(dctx); err != nil {
		_ = mux.Close()
		return nil, fmt.Errorf("waiting for the server's control stream: %w", err)
	}
	_ = s.ctl.SetDeadline(time.Now().Add(a.cfg.DialTimeout))
	var hello replicaHello
	if err := readFrame(s.ctl, &hello); err != nil {
		_ = mux.Close()
		return nil, fmt.Errorf("reading which replica answered: %w", err)
	}
	if hello.Replica == "" {
		_ = mux.Close()
		return nil, errors.New("the server named no replica")
	}
	s.replica = hello.Replica
	keep := a.held.add(s, hello.Replicas)
	err = writeFrame(s.ctl, helloAnswer{Keep: keep})
	if !keep {
		_ = mux.Close()
		return nil, fmt.Errorf("replica %s: %w", s.replica, errHeldReplica)
	}
	if err != nil {
		a.held.remove(s, 0)
		_ = mux.Close()
		return nil, fmt.Errorf("answering replica %s: %w", s.replica, err)
	}
	_ = s.ctl.SetDeadline(time.Time{})
	return s, nil
}

// serve serves the dial requests of session s until it ends, and takes
// the replica counts its replica announces.
func (a *Agent) serve(ctx context.Context, s *agentSession, log *logrus.Entry) error {
	mux := s.mux
	a.cfg.Metrics.AgentSessions.Inc()
	a.sessions.Add(1)
	defer func() {
		a.cfg.Metrics.AgentSessions.Dec()
		a.sessions.Add(-1)
	}()
	log.WithField("replicas", a.held.replicas()).Info("tunnel session established")
	if s.ctl != nil {
		go func() {
			for {
				var h replicaHello
				if err := readFrame(s.ctl, &h); err != nil {
					return
				}
				log.WithField("replica_count", h.Replicas).Debug("replica count announced")
				a.held.setCount(h.Replicas)
			}
		}()
	}

	stop := context.AfterFunc(ctx, func() { a.drain(s, log) })
	defer stop()
	for {
		st, err := mux.AcceptStream()
		if err != nil {
			_ = mux.Close()
			if errors.Is(err, yamux.ErrSessionShutdown) || errors.Is(err, io.EOF) {
				return errors.New("session closed")
			}
			return fmt.Errorf("accepting streams: %w", err)
		}
		go a.serveStream(st, log)
	}
}

// drain stops new streams and closes the session once open ones end or
// DrainTimeout passes. The control stream, if any, stays open to the end
// and is not waited for.
func (a *Agent) drain(s *agentSession, log *logrus.Entry) {
	mux := s.mux
	_ = mux.GoAway()
	open := func() int {
		if s.ctl != nil {
			return mux.NumStreams() - 1
		}
		return mux.NumStreams()
	}
	deadline := time.Now().Add(a.cfg.DrainTimeout)
	for open() > 0 && time.Now().Before(deadline) {
		select {
		case <-mux.CloseChan():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	if n := open(); n > 0 {
		log.WithField("streams", n).Warn("drain timed out: closing open streams")
	}
	_ = mux.Close()
}

// serveStream answers one dial request and relays the stream.
func (a *Agent) serveStream(st *yamux.Stream, log *logrus.Entry) {
	stream := &streamConn{Conn: st}
	_ = st.SetDeadline(time.Now().Add(a.cfg.DialTimeout))
	var req dialRequest
	if err := readFrame(st, &req); err != nil {
		_ = stream.Close()
		return
	}
	addr := net.JoinHostPort(req.Host, strconv.Itoa(req.Port))
	log = log.WithField("target", addr)
	answer := func(code string, err error) {
		a.cfg.Metrics.DialFailures.WithLabelValues(code).Inc()
		log.WithError(err).Warn("dial request failed")
		_ = writeFrame(st, dialResponse{Error: err.Error(), Code: code})
		_ = stream.Close()
	}
	if err := a.allowedFor(req); err != nil {
		answer(codeRefused, err)
		return
	}
	timeout := a.cfg.DialTimeout
	if t := time.Duration(req.TimeoutMillis) * time.Millisecond * 9 / 10; t > 0 && t < timeout {
		timeout = t
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	start := time.Now()
	target, err := a.cfg.DialTarget(ctx, "tcp", addr)
	cancel()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			answer(codeTimeout, fmt.Errorf("dialing %s: timed out after %s", addr, timeout))
			return
		}
		answer(codeFailed, fmt.Errorf("dialing %s: %w", addr, err))
		return
	}
	a.cfg.Metrics.DialDuration.Observe(time.Since(start).Seconds())
	if err := writeFrame(st, dialResponse{}); err != nil {
		_ = target.Close()
		_ = stream.Close()
		return
	}
	_ = st.SetDeadline(time.Time{})
	a.cfg.Metrics.Streams.WithLabelValues("agent").Inc()
	defer a.cfg.Metrics.Streams.WithLabelValues("agent").Dec()
	relay(target, stream, a.cfg.Metrics.Bytes.WithLabelValues("from_node"), a.cfg.Metrics.Bytes.WithLabelValues("to_node"), a.cfg.Metrics.Stalls)
}

// allowed is the agent's own check: loopback, or one of its node's
// addresses. Ports are the server's policy; the agent only keeps a
// compromised server from using it as a pivot into the edge network.
func (a *Agent) allowed(host string, port int) error {
	ip := net.ParseIP(host)
	if ip == nil {
		return fmt.Errorf("%s is not an IP address", host)
	}
	if port < 1 || port > 65535 {
		return fmt.Errorf("port %d is invalid", port)
	}
	if ip.IsLoopback() {
		return nil
	}
	addrs := a.cfg.Addresses
	if addrs == nil {
		ifaddrs, err := net.InterfaceAddrs()
		if err != nil {
			return fmt.Errorf("listing this node's addresses: %w", err)
		}
		for _, ia := range ifaddrs {
			if n, ok := ia.(*net.IPNet); ok {
				addrs = append(addrs, n.IP.String())
			}
		}
	}
	for _, s := range addrs {
		if other := net.ParseIP(s); other != nil && other.Equal(ip) {
			return nil
		}
	}
	return fmt.Errorf("%s is not an address of this node", host)
}

// Node is the node this agent's certificate names ("?" if none).
func (a *Agent) Node() string { return a.node }

// Connected says whether the agent holds at least one server session.
func (a *Agent) Connected() bool { return a.sessions.Load() > 0 }

// Replicas lists the server replicas the agent holds a session to, sorted.
func (a *Agent) Replicas() []string { return a.held.replicas() }
