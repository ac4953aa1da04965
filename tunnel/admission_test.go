package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"
)

func TestDeferralEncoding(t *testing.T) {
	for _, d := range []time.Duration{0, time.Millisecond, 2 * time.Second, maxDeferral} {
		got, ok := decodeDeferral(encodeDeferral(d))
		if !ok || got != d {
			t.Fatalf("%v round-tripped to %v, %v", d, got, ok)
		}
	}
	if got, _ := decodeDeferral(encodeDeferral(time.Hour * 24 * 365)); got != maxDeferral {
		t.Fatalf("an overlong delay is sent as %v, want the cap %v", got, maxDeferral)
	}
	// A TLS record (handshake, 0x16) is no deferral.
	if _, ok := decodeDeferral([5]byte{0x16, 3, 3, 0, 1}); ok {
		t.Fatal("a TLS record header decoded as a deferral")
	}
}

func TestDeferredWaitHonoursServerDelayWithinMaxBackoff(t *testing.T) {
	if _, ok := deferredWait(errors.New("dialing the server: refused"), time.Minute); ok {
		t.Fatal("an ordinary failure is taken for a deferral")
	}
	for range 200 {
		w, ok := deferredWait(fmt.Errorf("wrapped: %w", &DeferredError{RetryAfter: 2 * time.Second}), 30*time.Second)
		if !ok || w < 2*time.Second || w > 2500*time.Millisecond {
			t.Fatalf("deferral of 2s: wait %v (%v), want within [2s, 2.5s]", w, ok)
		}
		if w, _ = deferredWait(&DeferredError{RetryAfter: time.Minute}, 10*time.Second); w != 10*time.Second {
			t.Fatalf("deferral of 1m with a 10s max backoff: wait %v, want 10s", w)
		}
	}
}

// Deferred agents are given turns one handshake time (over the slots)
// apart, after the admitted ones, never beyond maxAppointment.
func TestAppointmentsFollowTheHandshakeTime(t *testing.T) {
	a := newAdmission(4, 4)
	for range 50 {
		a.finished(40 * time.Millisecond) // 4 slots: a turn every 10ms
	}
	now := time.Unix(1000, 0)
	a.enter()
	a.enter() // two admitted: the first appointment is the third turn
	for i, want := range []time.Duration{30, 40, 50} {
		if got := a.appointment(now, 0); got != want*time.Millisecond {
			t.Fatalf("appointment %d: %v, want %v", i, got, want*time.Millisecond)
		}
	}
	if got := a.appointment(now, time.Second); got != time.Second {
		t.Fatalf("an appointment sooner than RetryAfter: %v, want 1s", got)
	}
	// Later, past every appointment given, turns start again from now.
	later := now.Add(time.Hour)
	if got := a.appointment(later, 0); got != 30*time.Millisecond {
		t.Fatalf("a fresh appointment: %v, want 30ms", got)
	}
	// However many are deferred, none is told to wait past the horizon.
	var last time.Duration
	for range 10000 {
		last = a.appointment(later, 0)
	}
	if last != maxAppointment {
		t.Fatalf("the 10,000th appointment: %v, want the horizon %v", last, maxAppointment)
	}
}

func TestAdmissionCountsSlotsAndQueue(t *testing.T) {
	a := newAdmission(2, 1)
	for i := range 3 {
		if !a.enter() {
			t.Fatalf("connection %d refused with 2 slots and a queue of 1", i)
		}
	}
	if a.enter() {
		t.Fatal("a fourth connection admitted beyond 2 slots and a queue of 1")
	}
	for i := range 2 {
		if err := a.acquire(context.Background()); err != nil {
			t.Fatalf("slot %d: %v", i, err)
		}
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.acquire(done); err == nil {
		t.Fatal("a third handshake got a slot while both were taken")
	}
	a.release()
	if err := a.acquire(context.Background()); err != nil {
		t.Fatalf("a freed slot was not handed on: %v", err)
	}
	a.leave()
	if !a.enter() {
		t.Fatal("a connection that left did not make room")
	}
	a.close() // both slots taken: closing ends the wait
	if err := a.acquire(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("waiting on a closed admission: %v, want net.ErrClosed", err)
	}
}

// stallHandshake opens a TCP connection to the agent port that never sends
// its ClientHello, holding one of the server's handshake slots, and waits
// until the server counts it.
func (e *env) stallHandshake(want int) net.Conn {
	e.t.Helper()
	c, err := net.Dial("tcp", e.agentAddr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = c.Close() })
	waitFor(e.t, 10*time.Second, "the stalled connection admitted", func() bool {
		e.srv.adm.mu.Lock()
		defer e.srv.adm.mu.Unlock()
		return e.srv.adm.admitted == want
	})
	return c
}

// With every handshake slot taken and no queue, a new agent is deferred
// with the server's delay, a connected node's traffic still flows, and the
// agent gets its session once a slot frees.
func TestServerDefersAgentsBeyondHandshakeCapacity(t *testing.T) {
	echo := newEchoServer(t)
	nodes := StaticNodes{"n1": {Node: "n1", IP: "127.0.0.1", Virtual: true}, "n2": {Node: "n2", IP: "127.0.0.2", Virtual: true}}
	e := newEnvWith(t, nodes, allow(echo.port()), func(c *ServerConfig) {
		c.MaxHandshakes, c.MaxHandshakeQueue, c.RetryAfter = 1, -1, 1500*time.Millisecond
	})
	e.startAgent(e.ca.pair(t, "system:vnode:n1", "system:vnodes"))
	e.waitSession("n1")

	stalled := e.stallHandshake(1)
	err := e.sessionOnce("n2")
	var d *DeferredError
	if !errors.As(err, &d) || d.RetryAfter != 1500*time.Millisecond {
		t.Fatalf("an agent beyond capacity got %v, want a deferral of 1.5s", err)
	}
	if got := counterValue(e.metrics.AgentRejected.WithLabelValues("deferred")); got != 1 {
		t.Fatalf("deferrals counted: %v, want 1", got)
	}
	// Traffic to the connected node flows while handshakes are saturated.
	status, c := e.connect("n1:" + strconv.Itoa(echo.port()))
	if status != http.StatusOK {
		t.Fatalf("CONNECT to a connected node during the storm: %d", status)
	}
	roundTrip(t, c, "still flowing")

	_ = stalled.Close() // its handshake fails and frees the slot
	e.startAgent(e.ca.pair(t, "system:vnode:n2", "system:vnodes"))
	e.waitSession("n2")
}

// A connection that waited for a slot until half the handshake timeout is
// deferred rather than handshaken with an agent that may have given up.
func TestQueuedAgentIsDeferredWhenNoSlotFrees(t *testing.T) {
	e := newEnvWith(t, loopNode("n1"), Ports{}, func(c *ServerConfig) {
		c.MaxHandshakes, c.MaxHandshakeQueue, c.HandshakeTimeout = 1, 1, 400*time.Millisecond
	})
	// The test holds the only slot: this agent waits in the queue and is
	// deferred when its wait runs out.
	if err := e.srv.adm.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer e.srv.adm.release()
	err := e.sessionOnce("n1")
	var d *DeferredError
	if !errors.As(err, &d) {
		t.Fatalf("a queued agent whose wait ran out got %v, want a deferral", err)
	}
}

// A requester beyond the dials the server takes at once gets 503 with
// Retry-After, not a hang.
func TestBusyServerAnswersRetryAfter(t *testing.T) {
	echo := newEchoServer(t)
	e := newEnvWith(t, loopNode("n1"), allow(echo.port()), func(c *ServerConfig) { c.MaxPendingDials, c.RetryAfter = 1, 3*time.Second })
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	e.startAgent(e.ca.pair(t, "system:vnode:n1", "system:vnodes"), func(c *AgentConfig) {
		c.DialTarget = func(ctx context.Context, network, addr string) (net.Conn, error) {
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}
	})
	e.waitSession("n1")
	target := "n1:" + strconv.Itoa(echo.port())
	go func() {
		c, err := tlsDial(e)
		if err == nil {
			defer c.Close()
			_, _ = connectOn(c, target)
		}
	}()
	waitFor(t, 10*time.Second, "one dial pending", func() bool { return counterValue(e.metrics.PendingDials) == 1 })
	c, err := tlsDial(e)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "3" {
		t.Fatalf("a requester beyond capacity got %d, Retry-After %q; want 503, 3", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// sessionOnce makes one connection attempt as node's agent and returns
// how it ended.
func (e *env) sessionOnce(node string) error {
	e.t.Helper()
	a, err := NewAgent(AgentConfig{Server: e.agentAddr, ServerName: "tunnel.test", Cert: e.ca.pair(e.t, "system:vnode:"+node, "system:vnodes"),
		CA: e.ca.bundle(e.t), DialTimeout: 5 * time.Second, Log: testLog(e.t)})
	if err != nil {
		e.t.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(e.agentAddr)
	s, err := a.connect(context.Background(), host)
	if err == nil {
		_ = s.mux.Close()
	}
	return err
}

func tlsDial(e *env) (net.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.proxyAddr, e.requester)
}
