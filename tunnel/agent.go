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
	// Server is host:port of the tunnel servers. The host is resolved
	// again before every connection attempt, and the agent holds a
	// session to every address it resolves to (one per replica).
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

	Dial       DialFunc // to servers (default net.Dialer)
	DialTarget DialFunc // to targets on the node (default net.Dialer)
	// Resolve returns the addresses of a host (default net.DefaultResolver).
	Resolve func(ctx context.Context, host string) ([]string, error)

	MinBackoff, MaxBackoff time.Duration // default 1s, 30s
	ResolveInterval        time.Duration // look for new replicas (default 30s)
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
	return &Agent{cfg: cfg, host: host, port: port, node: node,
		muxLog: cfg.Log.WithField("component", "yamux").WriterLevel(logrus.DebugLevel)}, nil
}

// Run holds sessions to every server replica until ctx ends, then drains:
// servers are told to open no more streams (GoAway) and open streams get
// DrainTimeout to finish.
func (a *Agent) Run(ctx context.Context) error {
	defer a.muxLog.Close()
	var wg sync.WaitGroup
	running := map[string]bool{}
	done := make(chan string)
	spawn := func() {
		addrs, err := a.resolve(ctx)
		if err != nil {
			a.cfg.Log.WithError(err).Warn("resolving the tunnel servers")
			return
		}
		for _, ip := range addrs {
			if running[ip] {
				continue
			}
			running[ip] = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				a.maintain(ctx, ip)
				select {
				case done <- ip:
				case <-ctx.Done():
				}
			}()
		}
	}
	spawn()
	t := time.NewTicker(a.cfg.ResolveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case ip := <-done:
			delete(running, ip)
		case <-t.C:
			spawn()
		}
	}
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
	slices.Sort(addrs)
	return slices.Compact(addrs), nil
}

// maintain keeps a session to the replica at ip until ctx ends or ip is
// no longer among the server's addresses.
func (a *Agent) maintain(ctx context.Context, ip string) {
	log := a.cfg.Log.WithField("server", net.JoinHostPort(ip, a.port))
	bo := backoff.Policy{Base: a.cfg.MinBackoff, Max: a.cfg.MaxBackoff}
	failures := 0
	for ctx.Err() == nil {
		start := time.Now()
		err := a.session(ctx, ip, log)
		if ctx.Err() != nil {
			return
		}
		// A session that lasted a while was a success: start over at the
		// shortest wait.
		if time.Since(start) > a.cfg.MaxBackoff {
			failures = 0
		}
		wait, deferred := deferredWait(err, a.cfg.MaxBackoff)
		if !deferred {
			failures++
			wait = bo.Delay(failures)
		}
		log.WithError(err).WithField("retry_in", wait.Round(time.Millisecond)).Warn("tunnel session ended")
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		// Re-resolve on every retry: a replica that went away is dropped
		// (its replacement is picked up by Run), a DNS change is followed.
		addrs, err := a.resolve(ctx)
		if err == nil && !slices.Contains(addrs, ip) {
			log.Info("server address no longer resolves: dropping it")
			return
		}
	}
}

// session dials ip once and serves the session until it ends.
func (a *Agent) session(ctx context.Context, ip string, log *logrus.Entry) error {
	a.cfg.Metrics.AgentReconnect.Inc()
	tcfg, err := clientTLS(a.cfg.Cert, a.cfg.CA, a.cfg.ServerName)
	if err != nil {
		return fmt.Errorf("preparing TLS: %w", err)
	}
	dctx, cancel := context.WithTimeout(ctx, a.cfg.DialTimeout)
	defer cancel()
	raw, err := a.cfg.Dial(dctx, "tcp", net.JoinHostPort(ip, a.port))
	if err != nil {
		return fmt.Errorf("dialing the server: %w", err)
	}
	conn := tls.Client(&batchConn{Conn: raw}, tcfg)
	if err := conn.HandshakeContext(dctx); err != nil {
		_ = raw.Close()
		if d, ok := deferralOf(err); ok {
			return d
		}
		return fmt.Errorf("TLS handshake with the server: %w", err)
	}
	if conn.ConnectionState().NegotiatedProtocol != alpnProtocol {
		_ = conn.Close()
		return fmt.Errorf("server does not speak %s", alpnProtocol)
	}
	mux, err := yamux.Client(newCoalescer(conn, rawOf(conn)), muxConfig(a.muxLog))
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("starting the session: %w", err)
	}
	a.cfg.Metrics.AgentSessions.Inc()
	a.sessions.Add(1)
	defer func() {
		a.cfg.Metrics.AgentSessions.Dec()
		a.sessions.Add(-1)
	}()
	log.Info("tunnel session established")

	stop := context.AfterFunc(ctx, func() { a.drain(mux, log) })
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
// DrainTimeout passes.
func (a *Agent) drain(mux *yamux.Session, log *logrus.Entry) {
	_ = mux.GoAway()
	deadline := time.Now().Add(a.cfg.DrainTimeout)
	for mux.NumStreams() > 0 && time.Now().Before(deadline) {
		select {
		case <-mux.CloseChan():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	if n := mux.NumStreams(); n > 0 {
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
	if err := a.allowed(req.Host, req.Port); err != nil {
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
