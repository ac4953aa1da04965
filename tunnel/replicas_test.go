package tunnel

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	discoveryv1 "k8s.io/api/discovery/v1"
)

func TestHeldReplicasDialPlan(t *testing.T) {
	h := newHeldReplicas()
	// Nothing known: one session per address the name resolves to.
	if !h.need(2) {
		t.Fatal("an agent holding nothing needs no session")
	}
	// A headless name: the addresses are tried in turn (a dead replica's
	// address must not hold up the others)...
	addrs := []string{"10.0.0.1", "10.0.0.2"}
	if first, second := h.pick(addrs), h.pick(addrs); first == second {
		t.Fatalf("picked %s twice in a row with nothing held", first)
	}
	a := &agentSession{replica: "a", addr: "10.0.0.1", since: time.Now()}
	if !h.add(a, 0) {
		t.Fatal("first session to replica a refused")
	}
	// ...and once one leads to a replica held, only the others.
	for range 3 {
		if got := h.pick(addrs); got != "10.0.0.2" {
			t.Fatalf("picked %s, want the address not yet leading to a held replica", got)
		}
	}
	if !h.need(2) || h.need(1) {
		t.Fatal("with the count unknown, want one session per address")
	}

	// A replica announces 3 replicas: the count wins over the addresses.
	dup := &agentSession{replica: "a", addr: "10.0.0.2", since: time.Now()}
	if h.add(dup, 3) {
		t.Fatal("a second session to replica a was kept")
	}
	if h.attempts() != 1 {
		t.Fatalf("a duplicate counts as a failed attempt: %d", h.attempts())
	}
	if !h.need(2) {
		t.Fatal("holding 1 of 3 replicas, the agent needs more")
	}
	b := &agentSession{replica: "b", addr: "10.0.0.2", since: time.Now()}
	c := &agentSession{replica: "c", addr: "10.0.0.2", since: time.Now()}
	if !h.add(b, 3) || !h.add(c, 3) {
		t.Fatal("new replicas refused")
	}
	if h.attempts() != 0 {
		t.Fatal("a new replica resets the failures")
	}
	if h.need(2) {
		t.Fatal("holding 3 of 3 replicas, the agent still wants more")
	}
	if got := h.replicas(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("replicas %v", got)
	}

	// The count grows: wake the dialer.
	h.setCount(4)
	select {
	case <-h.wake:
	default:
		t.Fatal("a larger count did not wake the dialer")
	}
	if !h.need(2) {
		t.Fatal("holding 3 of 4 replicas, the agent needs more")
	}

	// A session ends: it is forgotten, the dialer wakes, and a session that
	// lived only briefly counts as a failure.
	h.setCount(3)
	<-h.wake
	h.remove(b, time.Hour)
	<-h.wake
	if !h.need(2) || h.attempts() != 1 {
		t.Fatalf("after b ended: need %v, attempts %d", h.need(2), h.attempts())
	}
	// Removing a session that a newer one replaced leaves the newer.
	b2 := &agentSession{replica: "b", addr: "10.0.0.1", since: time.Now()}
	h.add(b2, 3)
	h.remove(b, 0)
	if got := h.replicas(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("replicas %v after a stale remove", got)
	}
}

// scriptedLB is one address in front of several backends: connection i
// goes to backend script[i] while the script lasts, then round robin. A
// script makes the balancer's choices, and so the agent's duplicates,
// deterministic.
type scriptedLB struct {
	l        net.Listener
	mu       sync.Mutex
	backends []string
	script   []int
	n        int
}

func newScriptedLB(t testing.TB, script ...int) *scriptedLB {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lb := &scriptedLB{l: l, script: script}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go lb.forward(c)
		}
	}()
	t.Cleanup(func() { _ = l.Close() })
	return lb
}

func (lb *scriptedLB) setBackends(b ...string) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.backends = b
}

func (lb *scriptedLB) next() string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	i := lb.n
	if i < len(lb.script) {
		i = lb.script[i]
	}
	lb.n++
	return lb.backends[i%len(lb.backends)]
}

func (lb *scriptedLB) forward(c net.Conn) {
	defer c.Close()
	up, err := net.DialTimeout("tcp", lb.next(), 2*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); _ = up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); _ = c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

// replica is one in-process server replica.
type replica struct {
	srv       *Server
	reps      *Replicas
	metrics   *Metrics
	agentAddr string
	proxyAddr string
}

func startReplica(t testing.TB, ca *testCA, nodes NodeResolver, ports Ports, name string, count int) *replica {
	t.Helper()
	r := &replica{reps: NewReplicas(name), metrics: NewMetrics(prometheus.NewRegistry())}
	r.reps.Set(count)
	srv, err := NewServer(ServerConfig{
		AgentCert: ca.pair(t, "edge-tunnel-server"), AgentCA: ca.bundle(t),
		ProxyCert: ca.pair(t, "edge-tunnel-server"), ProxyCA: ca.bundle(t),
		Nodes: nodes, Ports: NewPortPolicy(ports), Replicas: r.reps, DialTimeout: 3 * time.Second,
		Log: testLog(t).WithField("side", name), Metrics: r.metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.srv, r.agentAddr, r.proxyAddr = srv, al.Addr().String(), pl.Addr().String()
	go func() { _ = srv.ServeAgents(al) }()
	go func() { _ = srv.ServeProxy(pl) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r
}

// TestAgentHoldsASessionToEveryReplicaThroughOneAddress: three replicas
// behind one load-balanced address. The balancer sends the agent's
// connections to A, A, B, A, C: the agent drops the two duplicates (which
// never displace its session to A) and ends with one session per replica,
// each of which carries a request. Before, it held one session per
// address: one replica of three.
func TestAgentHoldsASessionToEveryReplicaThroughOneAddress(t *testing.T) {
	echo := newEchoServer(t)
	e := &env{t: t, ca: newTestCA(t, "tunnel")}
	reqCert := e.ca.pair(t, "kube-apiserver-egress")
	pool, _ := e.ca.bundle(t).Pool()
	requester := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "tunnel.test",
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return reqCert.Get() }}
	target := "n1:" + strconv.Itoa(echo.port())

	var reps []*replica
	for _, name := range []string{"a", "b", "c"} {
		reps = append(reps, startReplica(t, e.ca, loopNode("n1"), allow(echo.port()), name, 3))
	}
	lb := newScriptedLB(t, 0, 0, 1, 0, 2)
	lb.setBackends(reps[0].agentAddr, reps[1].agentAddr, reps[2].agentAddr)
	e.agentAddr = lb.l.Addr().String()
	a, _ := e.startAgent(e.ca.pair(t, "system:vnode:n1", "system:vnodes"))

	everywhere := func(rs []*replica) func() bool {
		return func() bool {
			for _, r := range rs {
				if !r.srv.HasSession("n1") {
					return false
				}
			}
			return len(a.Replicas()) == len(rs)
		}
	}
	waitFor(t, 20*time.Second, "a session on every replica", everywhere(reps))
	var dups, replaced float64
	for i, r := range reps {
		dups += counterValue(r.metrics.AgentRejected.WithLabelValues("duplicate"))
		replaced += counterValue(r.metrics.Replacements)
		if s, c := connectTo(t, r.proxyAddr, requester, target); s != http.StatusOK {
			t.Fatalf("CONNECT via replica %d: %d", i, s)
		} else {
			roundTrip(t, c, "via "+r.reps.ID())
		}
	}
	if dups != 2 || replaced != 0 {
		t.Fatalf("duplicates dropped %v (want 2), sessions replaced %v (want 0: a duplicate never displaces the session it duplicates)", dups, replaced)
	}

	// Scaling to four: the replicas announce the new count and the agent
	// dials until it reaches the new replica too.
	d := startReplica(t, e.ca, loopNode("n1"), allow(echo.port()), "d", 3)
	reps = append(reps, d)
	lb.setBackends(reps[0].agentAddr, reps[1].agentAddr, reps[2].agentAddr, d.agentAddr)
	for _, r := range reps {
		r.reps.Set(4)
	}
	waitFor(t, 20*time.Second, "a session on the fourth replica", everywhere(reps))

	// A replica goes away and a new one takes its place: the agent's
	// session to it ended, and it dials until it holds the new one.
	closed := reps[1].reps.ID()
	_ = reps[1].srv.Close()
	reps[1] = startReplica(t, e.ca, loopNode("n1"), allow(echo.port()), "b2", 4)
	lb.setBackends(reps[0].agentAddr, reps[1].agentAddr, reps[2].agentAddr, reps[3].agentAddr)
	waitFor(t, 20*time.Second, "a session on the replacement replica", everywhere(reps))
	if got := a.Replicas(); slices.Contains(got, closed) {
		t.Fatalf("the agent still lists the closed replica: %v", got)
	}
}

// connectTo sends CONNECT target to the replica at proxy.
func connectTo(t testing.TB, proxy string, cfg *tls.Config, target string) (int, net.Conn) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", proxy, cfg)
	if err != nil {
		t.Fatalf("dialing the proxy: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	status, err := connectOn(c, target)
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	return status, c
}

func TestReplicaCountIsReadyEndpoints(t *testing.T) {
	yes, no := true, false
	slice := func(eps ...discoveryv1.Endpoint) any { return &discoveryv1.EndpointSlice{Endpoints: eps} }
	ep := func(addr string, ready *bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ready}}
	}
	got := readyEndpoints([]any{
		slice(ep("10.0.0.1", &yes), ep("10.0.0.2", &no), ep("10.0.0.3", nil)),
		// A replica listed in two slices while they are rebalanced counts once.
		slice(ep("10.0.0.1", &yes), ep("10.0.0.4", &yes)),
	})
	if got != 3 {
		t.Fatalf("ready replicas %d, want 3 (not ready excluded, unknown readiness counted, duplicates once)", got)
	}

	r := NewReplicas("edge-tunnel-server-0")
	changed := r.Changed()
	r.Set(0)
	select {
	case <-changed:
		t.Fatal("an unchanged count woke the announcer")
	default:
	}
	r.Set(3)
	select {
	case <-changed:
	default:
		t.Fatal("a new count did not wake the announcer")
	}
	if h := r.hello(); h.Replicas != 3 || !strings.HasPrefix(h.Replica, "edge-tunnel-server-0-") || NewReplicas("edge-tunnel-server-0").ID() == h.Replica {
		t.Fatalf("hello %+v: want the count and a name unique to this start", h)
	}
}
