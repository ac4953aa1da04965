package tunnel

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vnode-project/vnode/internal/certs"
)

func loopNode(name string) StaticNodes {
	return StaticNodes{name: {Node: name, IP: "127.0.0.1", Virtual: true}}
}

// allow makes the echo port a node port.
func allow(ports ...int) Ports { return Ports{HTTPS: ports} }

func TestConnectRoutesByIPAndName(t *testing.T) {
	echo := newEchoServer(t)
	e := newEnv(t, loopNode("n1"), allow(echo.port()))
	e.startAgent(e.ca.pair(t, "system:vnode:n1", "system:vnodes"))
	e.waitSession("n1")
	for _, host := range []string{"127.0.0.1", "n1"} {
		status, c := e.connect(net.JoinHostPort(host, strconv.Itoa(echo.port())))
		if status != http.StatusOK {
			t.Fatalf("CONNECT %s: status %d", host, status)
		}
		roundTrip(t, c, "hello via "+host)
	}
	if got := counterValue(e.metrics.Bytes.WithLabelValues("to_node")); got < float64(len("hello via n1")) {
		t.Fatalf("bytes to node counted: %v", got)
	}
}

func TestAgentIdentityComesFromCertificate(t *testing.T) {
	echo := newEchoServer(t)
	nodes := StaticNodes{"n1": {Node: "n1", IP: "127.0.0.1", Virtual: true}, "n2": {Node: "n2", IP: "127.0.0.2"}}
	e := newEnv(t, nodes, allow(echo.port()))
	port := strconv.Itoa(echo.port())

	// A certificate from another CA is refused at the handshake.
	other := newTestCA(t, "other")
	e.startAgent(other.pair(t, "system:vnode:n1", "system:vnodes"))
	waitFor(t, 10*time.Second, "the foreign agent refused", func() bool {
		return counterValue(e.metrics.AgentRejected.WithLabelValues("handshake")) > 0
	})
	// The right CN without its group is no identity.
	e.startAgent(e.ca.pair(t, "system:vnode:n1", "system:authenticated"))
	waitFor(t, 10*time.Second, "the groupless agent refused", func() bool {
		return counterValue(e.metrics.AgentRejected.WithLabelValues("identity")) > 0
	})
	if e.srv.HasSession("n1") {
		t.Fatal("an unauthenticated agent got a session for n1")
	}
	// A valid agent for n2 serves n2 only, whatever it might claim.
	e.startAgent(e.ca.pair(t, "system:node:n2", "system:nodes"))
	e.waitSession("n2")
	if status, _ := e.connect("n1:" + port); status != http.StatusServiceUnavailable {
		t.Fatalf("n1 through n2's agent: status %d, want 503", status)
	}
	if e.srv.HasSession("n1") {
		t.Fatal("n2's agent serves n1")
	}
	if echo.accepted() != 0 {
		t.Fatalf("the target was dialed %d times for a node with no session", echo.accepted())
	}
}

func TestPortNotAllowListedIsRefused(t *testing.T) {
	echo := newEchoServer(t)
	e := newEnv(t, loopNode("n1"), Ports{})
	e.startAgent(e.ca.pair(t, "system:vnode:n1", "system:vnodes"))
	e.waitSession("n1")
	if status, _ := e.connect("127.0.0.1:" + strconv.Itoa(echo.port())); status != http.StatusForbidden {
		t.Fatalf("status %d, want 403", status)
	}
	if echo.accepted() != 0 {
		t.Fatal("a refused port was dialed")
	}
	// Allowing it live takes effect at once.
	e.ports.Set(allow(echo.port()))
	status, c := e.connect("127.0.0.1:" + strconv.Itoa(echo.port()))
	if status != http.StatusOK {
		t.Fatalf("after allowing: status %d", status)
	}
	roundTrip(t, c, "now allowed")
}

func TestLocalhostPortsDialLoopbackOnly(t *testing.T) {
	echo := newEchoServer(t)
	// The node's address is not loopback and is never dialed: a localhost
	// port goes to 127.0.0.1 on the node, whatever host was asked for.
	nodes := StaticNodes{"n1": {Node: "n1", IP: "10.231.69.10", Virtual: true}}
	e := newEnv(t, nodes, Ports{Localhost: []int{echo.port()}})
	var mu sync.Mutex
	var dialed []string
	e.startAgent(e.ca.pair(t, "system:vnode:n1", "system:vnodes"), func(c *AgentConfig) {
		c.Addresses = []string{"10.231.69.10"}
		c.DialTarget = func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			dialed = append(dialed, addr)
			mu.Unlock()
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}
	})
	e.waitSession("n1")
	for _, host := range []string{"n1", "10.231.69.10"} {
		status, c := e.connect(net.JoinHostPort(host, strconv.Itoa(echo.port())))
		if status != http.StatusOK {
			t.Fatalf("%s: status %d", host, status)
		}
		roundTrip(t, c, "local")
	}
	mu.Lock()
	defer mu.Unlock()
	want := "127.0.0.1:" + strconv.Itoa(echo.port())
	if len(dialed) != 2 || dialed[0] != want || dialed[1] != want {
		t.Fatalf("agent dialed %v, want %s twice", dialed, want)
	}
}

func TestAgentRefusesAddressesNotItsOwn(t *testing.T) {
	echo := newEchoServer(t)
	nodes := StaticNodes{"n1": {Node: "n1", IP: "10.231.69.10", Virtual: true}}
	e := newEnv(t, nodes, allow(echo.port()))
	e.startAgent(e.ca.pair(t, "system:vnode:n1", "system:vnodes"), func(c *AgentConfig) { c.Addresses = []string{"10.231.69.11"} })
	e.waitSession("n1")
	if status, _ := e.connect("n1:" + strconv.Itoa(echo.port())); status != http.StatusForbidden {
		t.Fatalf("status %d, want 403 from the agent", status)
	}
	if counterValue(e.metrics.DialFailures.WithLabelValues("agent_refused")) != 1 {
		t.Fatal("the refusal was not counted as the agent's")
	}
}

func TestNoSessionIs503AtOnce(t *testing.T) {
	e := newEnv(t, loopNode("n1"), allow(10250))
	start := time.Now()
	status, _ := e.connect("n1:10250")
	if status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", status)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("503 took %s", d)
	}
	if status, _ := e.connect("unknown:10250"); status != http.StatusNotFound {
		t.Fatalf("unknown node: status %d, want 404", status)
	}
}

func TestRequesterMustAuthenticate(t *testing.T) {
	e := newEnv(t, loopNode("n1"), allow(10250))
	pool, _ := e.ca.bundle(t).Pool()
	for name, cfg := range map[string]*tls.Config{
		"no certificate": {MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "tunnel.test"},
		"foreign CA": {MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "tunnel.test",
			Certificates: []tls.Certificate{mustCert(t, newTestCA(t, "other").pair(t, "kube-apiserver-egress"))}},
	} {
		c, err := tls.Dial("tcp", e.proxyAddr, cfg)
		if err == nil {
			// TLS 1.3 reports the client certificate's rejection on the
			// first read.
			_, err = connectOn(c, "n1:10250")
			_ = c.Close()
		}
		if err == nil {
			t.Fatalf("%s: CONNECT accepted", name)
		}
	}
}

func mustCert(t testing.TB, p *certs.KeyPair) tls.Certificate {
	c, err := p.Get()
	if err != nil {
		t.Fatal(err)
	}
	return *c
}

func TestTokenAuthentication(t *testing.T) {
	ca := newTestCA(t, "tunnel")
	srv, err := NewServer(ServerConfig{AgentCert: ca.pair(t, "s"), AgentCA: ca.bundle(t), ProxyCert: ca.pair(t, "s"),
		Tokens: fakeTokens{"good": "prometheus"}, Nodes: loopNode("n1"), Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := http.NewRequest(http.MethodConnect, "", nil)
	r.TLS = &tls.ConnectionState{}
	r.Header.Set("Proxy-Authorization", "Bearer good")
	if who, _, err := srv.authenticate(r); err != nil || who != "prometheus" {
		t.Fatalf("good token: %q %v", who, err)
	}
	r.Header.Set("Proxy-Authorization", "Bearer bad")
	if _, code, err := srv.authenticate(r); err == nil || code != http.StatusForbidden {
		t.Fatalf("bad token: %d %v", code, err)
	}
	r.Header.Del("Proxy-Authorization")
	if _, code, err := srv.authenticate(r); err == nil || code != http.StatusProxyAuthRequired {
		t.Fatalf("no token: %d %v", code, err)
	}
}

type fakeTokens map[string]string

func (f fakeTokens) AuthenticateToken(_ context.Context, tok string) (string, error) {
	if u, ok := f[tok]; ok {
		return u, nil
	}
	return "", errBadToken
}

var errBadToken = &net.AddrError{Err: "bad token"}
