package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// localConnKey marks requests that came over a unix socket.
type localConnKey struct{}

// ServeProxy serves CONNECT requests on l until Close. With a ProxyCert
// the listener is wrapped in TLS and requesters authenticate; without
// one, l must be a unix socket, whose file mode is its access control: a
// plain TCP listener would let anyone who can reach it into every node.
func (s *Server) ServeProxy(l net.Listener) error {
	local := false
	if s.cfg.ProxyCert != nil {
		auth := tls.RequireAndVerifyClientCert
		if s.cfg.Tokens != nil {
			auth = tls.VerifyClientCertIfGiven
		}
		if s.cfg.ProxyCA == nil {
			auth = tls.NoClientCert
		}
		l = tls.NewListener(batchListener{l}, serverTLS(s.cfg.ProxyCert, s.cfg.ProxyCA, []string{"http/1.1"}, auth))
	} else if l.Addr().Network() == "unix" { // net.Listen("unix") or ListenUnix
		local = true
	} else {
		return errors.New("refusing to serve CONNECT on a plain TCP listener: configure a proxy certificate")
	}
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){}, // HTTP/1.1 only: CONNECT hijacks
		ErrorLog:          nil,
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, localConnKey{}, local)
		},
	}
	if !s.track(l, hs) {
		return net.ErrClosed
	}
	if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) && !s.isClosed() {
		return fmt.Errorf("serving CONNECT: %w", err)
	}
	return nil
}

// refuse answers before any dial and counts why.
func (s *Server) refuse(w http.ResponseWriter, log *logrus.Entry, code int, reason, msg string) {
	s.cfg.Metrics.Refused.WithLabelValues(reason).Inc()
	log.WithFields(logrus.Fields{"status": code, "reason": reason}).Info("CONNECT refused: " + msg)
	if code == http.StatusProxyAuthRequired {
		w.Header().Set("Proxy-Authenticate", `Bearer realm="edge-tunnel"`)
	}
	if code == http.StatusServiceUnavailable { // busy, or the node's agent not (yet) connected
		w.Header().Set("Retry-After", s.retryAfterSeconds())
	}
	http.Error(w, msg, code)
}

// ServeHTTP handles one CONNECT host:port.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := s.cfg.Log.WithFields(logrus.Fields{"requester_addr": r.RemoteAddr, "target": r.RequestURI})
	if r.Method != http.MethodConnect {
		s.refuse(w, log, http.StatusMethodNotAllowed, "method", "only CONNECT is served")
		return
	}
	who, code, err := s.authenticate(r)
	if err != nil {
		s.refuse(w, log, code, "unauthenticated", err.Error())
		return
	}
	log = log.WithField("requester", who)
	target := r.RequestURI
	if r.URL != nil && r.URL.Host != "" {
		target = r.URL.Host
	}
	host, portStr, err := net.SplitHostPort(target)
	port, perr := strconv.Atoi(portStr)
	if err != nil || perr != nil || port < 1 || port > 65535 {
		s.refuse(w, log, http.StatusBadRequest, "bad_target", fmt.Sprintf("%q is not host:port", target))
		return
	}
	t, sess, via, ref := s.route(host)
	if ref != nil {
		if t.Node != "" {
			log = log.WithField("node", t.Node)
		}
		s.refuse(w, log, ref.code, ref.reason, ref.msg)
		return
	}
	if via == routeDirect {
		s.serveDirect(w, r, log, host, port)
		return
	}
	log = log.WithFields(logrus.Fields{"node": t.Node, "session": sess.id, "route": via, "carrier": sess.key.node})
	class := s.cfg.Ports.Get().Class(port, t.KubeletPort)
	if class == PortLocalhost && via == routeGateway {
		s.refuse(w, log, http.StatusForbidden, "localhost_via_gateway", fmt.Sprintf(
			"port %d is served on node %s's loopback, which only its own agent reaches, not its domain's gateway %s", port, t.Node, sess.key.node))
		return
	}
	dialHost := host
	switch class {
	case PortRefused:
		s.refuse(w, log, http.StatusForbidden, "port", fmt.Sprintf("port %d is not proxied", port))
		return
	case PortLocalhost:
		dialHost = "127.0.0.1"
	default:
		if net.ParseIP(host) == nil { // a name: the agent dials the node's address
			dialHost = t.IP
		}
		if dialHost == "" {
			s.refuse(w, log, http.StatusBadGateway, "no_address", fmt.Sprintf("node %s has no address", t.Node))
			return
		}
	}
	select {
	case s.pending <- struct{}{}:
	default:
		s.refuse(w, log, http.StatusServiceUnavailable, "busy", "too many dials in progress")
		return
	}
	s.cfg.Metrics.Routed.WithLabelValues(string(via)).Inc()
	stream, code, err := s.dialVia(r.Context(), sess, dialRequest{Node: t.Node, Host: dialHost, Port: port})
	<-s.pending
	if err != nil {
		log.WithError(err).WithField("status", code).Warn("dial through the tunnel failed")
		if code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", s.retryAfterSeconds())
		}
		http.Error(w, err.Error(), code)
		return
	}
	cls := className(class)
	log = log.WithField("dial", net.JoinHostPort(dialHost, strconv.Itoa(port)))
	s.splice(w, log, stream, cls, "to_node", "from_node")
}

// serveDirect carries a CONNECT to an address in DirectPrefixes.
func (s *Server) serveDirect(w http.ResponseWriter, r *http.Request, log *logrus.Entry, host string, port int) {
	log = log.WithField("route", routeDirect)
	select {
	case s.pending <- struct{}{}:
	default:
		s.refuse(w, log, http.StatusServiceUnavailable, "busy", "too many dials in progress")
		return
	}
	s.cfg.Metrics.Routed.WithLabelValues(string(routeDirect)).Inc()
	conn, code, err := s.dialDirect(r.Context(), host, port)
	<-s.pending
	if err != nil {
		log.WithError(err).WithField("status", code).Warn("direct dial failed")
		http.Error(w, err.Error(), code)
		return
	}
	s.splice(w, log, conn, "direct", "to_direct", "from_direct")
}

// splice answers the CONNECT and relays between the requester and stream,
// counting the stream under class and its bytes under the directions
// named (a node's bytes are never mixed with direct ones).
func (s *Server) splice(w http.ResponseWriter, log *logrus.Entry, stream net.Conn, class, to, from string) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		_ = stream.Close()
		http.Error(w, "connection cannot be hijacked", http.StatusInternalServerError)
		return
	}
	conn, rw, err := hj.Hijack()
	if err != nil {
		_ = stream.Close()
		log.WithError(err).Warn("hijacking the CONNECT connection")
		return
	}
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		_ = stream.Close()
		_ = conn.Close()
		return
	}
	var client net.Conn = conn
	if tc, ok := conn.(*tls.Conn); ok {
		if raw := rawOf(tc); raw != nil {
			client = &heldWrites{Conn: tc, raw: raw}
		}
	}
	if n := rw.Reader.Buffered(); n > 0 {
		client = &prefixConn{Conn: client, r: io.MultiReader(io.LimitReader(rw.Reader, int64(n)), conn)}
	}
	s.cfg.Metrics.Streams.WithLabelValues(class).Inc()
	defer s.cfg.Metrics.Streams.WithLabelValues(class).Dec()
	log.Debug("tunnel open")
	relay(client, stream, s.cfg.Metrics.Bytes.WithLabelValues(to), s.cfg.Metrics.Bytes.WithLabelValues(from), s.cfg.Metrics.Stalls)
}

func className(c PortClass) string {
	switch c {
	case PortLocalhost:
		return "localhost"
	case PortHTTP:
		return "http"
	}
	return "node"
}

// dialVia opens a stream on sess and has the agent dial req's address for
// req's node. On failure it returns the HTTP status to answer with.
func (s *Server) dialVia(ctx context.Context, sess *session, req dialRequest) (net.Conn, int, error) {
	m := s.cfg.Metrics
	m.PendingDials.Inc()
	defer m.PendingDials.Dec()
	start := time.Now()
	fail := func(reason string, code int, err error) (net.Conn, int, error) {
		m.DialFailures.WithLabelValues(reason).Inc()
		return nil, code, err
	}
	st, err := sess.mux.OpenStream()
	if err != nil {
		return fail("session", http.StatusServiceUnavailable, fmt.Errorf("opening a stream to node %s: %w", sess.key.node, err))
	}
	// A requester that gives up ends the dial too.
	stop := context.AfterFunc(ctx, func() { _ = st.Close() })
	defer stop()
	// A dial long unanswered may mean the agent went quiet (liveness.go).
	probe := time.AfterFunc(silentAfter, func() { s.probe(sess) })
	defer probe.Stop()
	_ = st.SetDeadline(start.Add(s.cfg.DialTimeout))
	req.TimeoutMillis = s.cfg.DialTimeout.Milliseconds()
	var resp dialResponse
	if err := writeFrame(st, req); err != nil {
		_ = st.Close()
		return fail("session", http.StatusBadGateway, fmt.Errorf("asking node %s to dial: %w", sess.key.node, err))
	}
	if err := readFrame(st, &resp); err != nil {
		_ = st.Close()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fail("timeout", http.StatusGatewayTimeout, fmt.Errorf("node %s did not answer the dial in %s", sess.key.node, s.cfg.DialTimeout))
		}
		return fail("session", http.StatusBadGateway, fmt.Errorf("reading node %s's dial answer: %w", sess.key.node, err))
	}
	if resp.Error != "" {
		_ = st.Close()
		switch resp.Code {
		case codeRefused:
			return fail("agent_refused", http.StatusForbidden, fmt.Errorf("node %s refused: %s", sess.key.node, resp.Error))
		case codeTimeout:
			return fail("timeout", http.StatusGatewayTimeout, fmt.Errorf("node %s: %s", sess.key.node, resp.Error))
		}
		return fail("dial", http.StatusBadGateway, fmt.Errorf("node %s: %s", sess.key.node, resp.Error))
	}
	_ = st.SetDeadline(time.Time{})
	m.DialDuration.Observe(time.Since(start).Seconds())
	return &streamConn{Conn: st}, 0, nil
}

// authenticate returns who made r, or the status to refuse it with.
func (s *Server) authenticate(r *http.Request) (string, int, error) {
	if r.TLS == nil {
		if local, _ := r.Context().Value(localConnKey{}).(bool); local {
			return "unix-socket", 0, nil
		}
		return "", http.StatusUnauthorized, errors.New("no TLS and not a local socket")
	}
	if len(r.TLS.VerifiedChains) > 0 {
		cn := r.TLS.PeerCertificates[0].Subject.CommonName
		if len(s.cfg.ProxyClientNames) > 0 && !slices.Contains(s.cfg.ProxyClientNames, cn) {
			return "", http.StatusForbidden, fmt.Errorf("client certificate %q may not use the tunnel", cn)
		}
		return cn, 0, nil
	}
	if s.cfg.Tokens != nil {
		tok, ok := strings.CutPrefix(r.Header.Get("Proxy-Authorization"), "Bearer ")
		if !ok || tok == "" {
			return "", http.StatusProxyAuthRequired, errors.New("a client certificate or a bearer token is required")
		}
		user, err := s.cfg.Tokens.AuthenticateToken(r.Context(), strings.TrimSpace(tok))
		if err != nil {
			return "", http.StatusForbidden, fmt.Errorf("token refused: %w", err)
		}
		return user, 0, nil
	}
	return "", http.StatusProxyAuthRequired, errors.New("a client certificate is required")
}
