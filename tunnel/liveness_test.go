package tunnel

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/vnode-project/vnode/internal/identity"
)

// An active gateway whose connection goes quiet without closing is found
// dead by the first dial it leaves unanswered (a ping it does not answer
// either), not by the keepalive half a minute later; the standby then
// carries the domain. A live agent slow to dial its target is left alone.
func TestSilentSessionIsClosed(t *testing.T) {
	echo := newEchoServer(t)
	nodes := StaticNodes{
		"a1":  {Node: "a1", IP: "10.231.90.1", Domain: "a"},
		"ga1": {Node: "ga1", IP: "10.231.91.1", Domain: "a", Gateway: true},
		"ga2": {Node: "ga2", IP: "10.231.91.2", Domain: "a", Gateway: true},
		"n1":  {Node: "n1", IP: "10.231.92.1"},
	}
	e := newEnv(t, nodes, allow(echo.port()))
	port := strconv.Itoa(echo.port())
	dials := &redirectDialer{echo: echo.l.Addr().String()}
	var cut freezer
	defer cut.close()
	for _, gw := range []string{"ga1", "ga2"} {
		opts := []agentOpt{gatewayOf(nodes), dials.as(gw), func(c *AgentConfig) { c.Addresses = []string{nodes[gw].IP} }}
		if gw == "ga1" {
			opts = append(opts, cut.wrap)
		}
		e.startAgent(e.ca.pair(t, identity.NodeUserPrefix+gw, identity.NodesGroup), opts...)
		e.waitSession(gw)
	}
	// n1's agent is alive but its target answers slower than the server
	// waits: its session must stay.
	slow := func(c *AgentConfig) {
		c.Addresses = []string{nodes["n1"].IP}
		c.DialTarget = func(ctx context.Context, network, addr string) (net.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}
	}
	e.startAgent(e.ca.pair(t, identity.NodeUserPrefix+"n1", identity.NodesGroup), slow)
	e.waitSession("n1")
	if status, _ := e.connectAnswer("n1:" + port); status != http.StatusGatewayTimeout {
		t.Fatalf("CONNECT n1 (slow target): %d, want 504", status)
	}

	e.through("a1:"+port, "through the active gateway")
	cut.freeze()
	if status, _ := e.connectAnswer("a1:" + port); status == http.StatusOK {
		t.Fatal("a silent gateway answered")
	}
	// Bounded generously: the point is the cause (the counter), not the time.
	waitFor(t, time.Minute, "the silent session to be closed", func() bool {
		return counterValue(e.metrics.SilentClosed) == 1 && !e.srv.HasSession("ga1")
	})
	e.through("a1:"+port, "through the standby")
	if got := dials.last(); got[:3] != "ga2" {
		t.Fatalf("after the silent loss, dial %q, want through ga2", got)
	}
	if !e.srv.HasSession("n1") || counterValue(e.metrics.SilentClosed) != 1 {
		t.Fatalf("the slow but live agent's session was closed (silent closes %v)", counterValue(e.metrics.SilentClosed))
	}
}
