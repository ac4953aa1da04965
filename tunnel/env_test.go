package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"

	"github.com/vnode-project/vnode/internal/certs"
)

// env is a server with its agent and proxy listeners on loopback, and the
// PKI its agents and requesters use.
type env struct {
	t         testing.TB
	ca        *testCA
	srv       *Server
	metrics   *Metrics
	agentAddr string
	proxyAddr string
	requester *tls.Config
	nodes     NodeResolver
	ports     *PortPolicy
	// serverOpts change the server's configuration from the next start.
	serverOpts []func(*ServerConfig)
}

func testLog(t testing.TB) *logrus.Entry {
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	l.SetOutput(testWriter{t})
	return logrus.NewEntry(l)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}

func newEnv(t testing.TB, nodes NodeResolver, ports Ports) *env {
	t.Helper()
	return newEnvWith(t, nodes, ports)
}

// newEnvWith is newEnv with changes to the server's configuration.
func newEnvWith(t testing.TB, nodes NodeResolver, ports Ports, serverOpts ...func(*ServerConfig)) *env {
	t.Helper()
	e := &env{t: t, ca: newTestCA(t, "tunnel"), nodes: nodes, ports: NewPortPolicy(ports), serverOpts: serverOpts}
	reqCert := e.ca.pair(t, "kube-apiserver-egress")
	pool, _ := e.ca.bundle(t).Pool()
	e.requester = &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "tunnel.test",
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return reqCert.Get() }}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.agentAddr, e.proxyAddr = al.Addr().String(), pl.Addr().String()
	e.start(al, pl)
	return e
}

// start runs a server replica on the listeners (again after a restart).
func (e *env) start(al, pl net.Listener) {
	t := e.t
	e.metrics = NewMetrics(prometheus.NewRegistry())
	cfg := ServerConfig{
		AgentCert: e.ca.pair(t, "edge-tunnel-server"), AgentCA: e.ca.bundle(t),
		ProxyCert: e.ca.pair(t, "edge-tunnel-server"), ProxyCA: e.ca.bundle(t),
		Nodes: e.nodes, Ports: e.ports, DialTimeout: 3 * time.Second, Log: testLog(t).WithField("side", "server"), Metrics: e.metrics,
	}
	for _, o := range e.serverOpts {
		o(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	go func() { _ = srv.ServeAgents(al) }()
	go func() { _ = srv.ServeProxy(pl) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// restart closes the server and starts a new one on the same addresses.
func (e *env) restart() {
	_ = e.srv.Close()
	al, err := net.Listen("tcp", e.agentAddr)
	if err != nil {
		e.t.Fatal(err)
	}
	pl, err := net.Listen("tcp", e.proxyAddr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.start(al, pl)
}

type agentOpt func(*AgentConfig)

// startAgent runs an agent with cert until the test ends.
func (e *env) startAgent(cert *certs.KeyPair, opts ...agentOpt) (*Agent, context.CancelFunc) {
	t := e.t
	cfg := AgentConfig{Server: e.agentAddr, ServerName: "tunnel.test", Cert: cert, CA: e.ca.bundle(t),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, DialTimeout: 2 * time.Second,
		DrainTimeout: time.Second, Log: testLog(t).WithField("side", "agent"), Metrics: NewMetrics(prometheus.NewRegistry())}
	for _, o := range opts {
		o(&cfg)
	}
	a, err := NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return a, sync.OnceFunc(stop)
}

// waitFor polls cond every 10ms until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) waitSession(node string) {
	e.t.Helper()
	waitFor(e.t, 10*time.Second, "a session for "+node, func() bool { return e.srv.HasSession(node) })
}

// connect sends CONNECT target through the server as the egress client and
// returns the status and, on 200, the tunnel.
func (e *env) connect(target string) (int, net.Conn) {
	e.t.Helper()
	return e.connectWith(e.requester, target)
}

func (e *env) connectWith(cfg *tls.Config, target string) (int, net.Conn) {
	e.t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.proxyAddr, cfg)
	if err != nil {
		e.t.Fatalf("dialing the proxy: %v", err)
	}
	status, err := connectOn(c, target)
	if err != nil {
		_ = c.Close()
		e.t.Fatalf("CONNECT %s: %v", target, err)
	}
	if status != http.StatusOK {
		_ = c.Close()
		return status, nil
	}
	e.t.Cleanup(func() { _ = c.Close() })
	return status, c
}

// connectOn writes CONNECT as kube-apiserver's egress dialer does and reads
// the answer byte by byte, so no tunneled byte is swallowed by a buffer.
func connectOn(c net.Conn, target string) (int, error) {
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", target); err != nil {
		return 0, err
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var hdr []byte
	b := make([]byte, 1)
	for !endsWith(hdr, "\r\n\r\n") {
		if _, err := c.Read(b); err != nil {
			return 0, fmt.Errorf("reading the CONNECT answer: %w", err)
		}
		hdr = append(hdr, b[0])
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(hdr)), nil)
	if err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

func endsWith(b []byte, s string) bool { return len(b) >= len(s) && string(b[len(b)-len(s):]) == s }

// echoServer echoes every connection on loopback and counts them.
type echoServer struct {
	l     net.Listener
	mu    sync.Mutex
	count int
}

func newEchoServer(t testing.TB) *echoServer { return newEchoServerOn(t, "127.0.0.1") }

func newEchoServerOn(t testing.TB, ip string) *echoServer {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.count++
			s.mu.Unlock()
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	t.Cleanup(func() { _ = l.Close() })
	return s
}

func (s *echoServer) port() int { return s.l.Addr().(*net.TCPAddr).Port }

func (s *echoServer) accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// roundTrip writes msg and expects it back.
func roundTrip(t testing.TB, c net.Conn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("writing through the tunnel: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading through the tunnel: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo: got %q, want %q", got, msg)
	}
}

func counterValue(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }
