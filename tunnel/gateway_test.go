package tunnel

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	corev1 "k8s.io/api/core/v1"

	"github.com/vnode-project/vnode/internal/identity"
)

// domainNodes are two network domains whose nodes reuse one another's
// addresses (a1 and b1 are both 10.231.90.1), each with gateways, and a
// node in no domain.
func domainNodes() StaticNodes {
	return StaticNodes{
		"a1":    {Node: "a1", IP: "10.231.90.1", Domain: "a"},
		"a2":    {Node: "a2", IP: "10.231.90.2", Domain: "a", Virtual: true},
		"a-own": {Node: "a-own", IP: "10.231.90.3", Domain: "a"},
		"ga1":   {Node: "ga1", IP: "10.231.91.1", Domain: "a", Gateway: true},
		"ga2":   {Node: "ga2", IP: "10.231.91.2", Domain: "a", Gateway: true},
		"b1":    {Node: "b1", IP: "10.231.90.1", Domain: "b"},
		"gb1":   {Node: "gb1", IP: "10.231.91.1", Domain: "b", Gateway: true},
		"lone":  {Node: "lone", IP: "10.231.92.1"},
	}
}

// fakeSession is a registered session: node, as identity prefix, closed
// (its connection is gone but the server has not yet unregistered it).
type fakeSession struct {
	node, prefix string
	closed       bool
}

func kubelet(node string) fakeSession {
	return fakeSession{node: node, prefix: identity.NodeUserPrefix}
}
func vnodeID(node string) fakeSession {
	return fakeSession{node: node, prefix: identity.VNodeUserPrefix}
}

// newRuleServer is a server that serves nothing: only its routing rule
// and session registry are used.
func newRuleServer(t *testing.T, nodes NodeResolver) *Server {
	t.Helper()
	ca := newTestCA(t, "rule")
	s, err := NewServer(ServerConfig{AgentCert: ca.pair(t, "server"), AgentCA: ca.bundle(t), Nodes: nodes, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// register adds a session whose yamux end is a pipe nobody reads.
func register(t *testing.T, s *Server, f fakeSession) {
	t.Helper()
	c, _ := net.Pipe()
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = false
	cfg.LogOutput = testWriter{t}
	mux, err := yamux.Client(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mux.Close() })
	if f.closed {
		_ = mux.Close()
	}
	s.reg.add(&session{key: sessionKey{node: f.node, identity: f.prefix}, mux: mux})
}

// The routing rule with network domains: the node's own session first,
// then its domain's gateways in name order (the first live one active,
// the others standing by), never another domain's gateway, and never a
// guess between nodes sharing an address.
func TestGatewayRoutingRule(t *testing.T) {
	for _, c := range []struct {
		name     string
		sessions []fakeSession // in registration order
		host     string
		carrier  string    // the node whose session carries it
		via      routeKind // own or gateway
		refused  string    // or the refusal's reason
		msg      string    // in the refusal's message
	}{
		{name: "own session before the gateway", sessions: []fakeSession{kubelet("ga1"), kubelet("a-own")}, host: "a-own", carrier: "a-own", via: routeOwn},
		{name: "no own session: the first gateway by name", sessions: []fakeSession{kubelet("ga1"), kubelet("ga2")}, host: "a1", carrier: "ga1", via: routeGateway},
		{name: "the active does not depend on who came first", sessions: []fakeSession{kubelet("ga2"), kubelet("ga1")}, host: "a1", carrier: "ga1", via: routeGateway},
		{name: "active's connection closed: the standby", sessions: []fakeSession{{node: "ga1", prefix: identity.NodeUserPrefix, closed: true}, kubelet("ga2")}, host: "a1", carrier: "ga2", via: routeGateway},
		{name: "active gone: the standby", sessions: []fakeSession{kubelet("ga2")}, host: "a1", carrier: "ga2", via: routeGateway},
		{name: "a gateway carries a virtual node of its domain", sessions: []fakeSession{kubelet("ga1")}, host: "a2", carrier: "ga1", via: routeGateway},
		{name: "by the one node claiming an address", sessions: []fakeSession{kubelet("ga1")}, host: "10.231.90.2", carrier: "ga1", via: routeGateway},
		{name: "a gateway node's own traffic on its own session", sessions: []fakeSession{kubelet("ga1"), kubelet("ga2")}, host: "ga2", carrier: "ga2", via: routeOwn},
		{name: "a gateway without a session is carried by another", sessions: []fakeSession{kubelet("ga1")}, host: "ga2", carrier: "ga1", via: routeGateway},
		{name: "a session that may not serve the gateway node is no gateway", sessions: []fakeSession{vnodeID("ga1"), kubelet("ga2")}, host: "a1", carrier: "ga2", via: routeGateway},
		{name: "an impostor's own session yields to the gateway", sessions: []fakeSession{vnodeID("a1"), kubelet("ga1")}, host: "a1", carrier: "ga1", via: routeGateway},

		{name: "domain A's gateways never carry domain B", sessions: []fakeSession{kubelet("ga1"), kubelet("ga2")}, host: "b1",
			refused: "no_session", msg: "no gateway of its network domain b (gb1) has a session"},
		{name: "a domain without gateways", sessions: []fakeSession{kubelet("ga1")}, host: "b1", refused: "no_session", msg: "domain b"},
		{name: "only a session that may not serve the gateway node", sessions: []fakeSession{vnodeID("ga1")}, host: "a1", refused: "no_session", msg: "domain a (ga1, ga2)"},
		{name: "every gateway closed", sessions: []fakeSession{{node: "ga1", prefix: identity.NodeUserPrefix, closed: true}}, host: "a1", refused: "no_session"},
		{name: "an impostor's own session and no gateway", sessions: []fakeSession{vnodeID("a1")}, host: "a1", refused: "identity_not_allowed", msg: "system:vnode:a1"},
		{name: "a node in no domain has no gateway", sessions: []fakeSession{kubelet("ga1"), kubelet("gb1")}, host: "lone", refused: "no_session"},
		{name: "an address two domains' nodes share is never guessed", sessions: []fakeSession{kubelet("ga1"), kubelet("gb1")}, host: "10.231.90.1", refused: "address_clash", msg: "a1 and b1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newRuleServer(t, domainNodes())
			for _, f := range c.sessions {
				register(t, s, f)
			}
			_, sess, via, r := s.route(c.host)
			if c.refused != "" {
				if r == nil {
					t.Fatalf("carried by %s (%s); want refused %s", sess.key.node, via, c.refused)
				}
				if r.reason != c.refused || !strings.Contains(r.msg, c.msg) {
					t.Fatalf("refused %s %q; want %s containing %q", r.reason, r.msg, c.refused, c.msg)
				}
				return
			}
			if r != nil {
				t.Fatalf("refused %s: %s", r.reason, r.msg)
			}
			if sess.key.node != c.carrier || via != c.via {
				t.Fatalf("carried by %s (%s); want %s (%s)", sess.key.node, via, c.carrier, c.via)
			}
		})
	}
}

// The two labels, as the index reads them from Nodes; the gateway index
// follows label changes and deletions.
func TestNodeIndexFollowsDomainLabels(t *testing.T) {
	node := func(name string, labels map[string]string) *corev1.Node {
		n := nodeObj(name, false, internalIP("10.231.90.1"))
		for k, v := range labels {
			n.Labels[k] = v
		}
		return n
	}
	gw := map[string]string{NetworkDomainLabel: "a", NetworkGatewayLabel: NetworkGatewayValue}
	ix := newNodeIndex()
	ix.upsert(node("g2", gw))
	ix.upsert(node("g1", gw))
	ix.upsert(node("m", map[string]string{NetworkDomainLabel: "a"}))
	ix.upsert(node("not-true", map[string]string{NetworkDomainLabel: "a", NetworkGatewayLabel: "yes"}))
	ix.upsert(node("no-domain", map[string]string{NetworkGatewayLabel: NetworkGatewayValue}))
	names := func(domain string) string {
		var out []string
		for _, g := range ix.Gateways(domain) {
			out = append(out, g.Node)
		}
		return strings.Join(out, ",")
	}
	if got := names("a"); got != "g1,g2" {
		t.Fatalf("gateways of a: %q, want g1,g2", got)
	}
	if got := names(""); got != "" {
		t.Fatalf("gateways of no domain: %q", got)
	}
	if m, _ := ix.Node("m"); m.Domain != "a" || m.Gateway {
		t.Fatalf("m: %+v", m)
	}
	ix.upsert(node("g1", map[string]string{NetworkDomainLabel: "b", NetworkGatewayLabel: NetworkGatewayValue}))
	if got := names("a") + "|" + names("b"); got != "g2|g1" {
		t.Fatalf("after g1 moved to b: %q", got)
	}
	ix.delete("g2")
	if got := names("a"); got != "" {
		t.Fatalf("after g2 was deleted: %q", got)
	}
}

// A gateway agent's own check, from its own view of the Nodes.
func TestGatewayAgentDialsOnlyItsDomain(t *testing.T) {
	view := domainNodes()
	for _, c := range []struct {
		self, node, host string
		refused          string // in the error, or "" if allowed
	}{
		{"ga1", "a1", "10.231.90.1", ""},
		{"ga1", "a2", "10.231.90.2", ""},
		{"ga1", "b1", "10.231.90.1", "not in network domain a"}, // b1's address is a1's too: the node decides
		{"ga1", "a1", "10.231.90.2", "not an address of node a1"},
		{"ga1", "a1", "127.0.0.1", "loopback"},
		{"ga1", "a1", "a1", "not an IP address"},
		{"ga1", "ghost", "10.231.90.1", "not in network domain a"},
		{"a1", "a2", "10.231.90.2", "not a gateway"},
		{"ghost", "a2", "10.231.90.2", "not a gateway"},
	} {
		err := gatewayAllows(view, c.self, c.node, c.host)
		switch {
		case c.refused == "" && err != nil:
			t.Errorf("%s dialing %s for %s: %v", c.self, c.host, c.node, err)
		case c.refused != "" && (err == nil || !strings.Contains(err.Error(), c.refused)):
			t.Errorf("%s dialing %s for %s: %v; want refused (%s)", c.self, c.host, c.node, err, c.refused)
		}
	}
}

// redirectDialer dials echo whatever address the agent was asked for, and
// records "<tag> <address>" per dial: the domain's addresses are not this
// host's, and which gateway dialed what is what the test looks at.
type redirectDialer struct {
	echo string
	mu   sync.Mutex
	log  []string
}

func (d *redirectDialer) as(tag string) agentOpt {
	return func(c *AgentConfig) {
		c.DialTarget = func(ctx context.Context, network, addr string) (net.Conn, error) {
			d.mu.Lock()
			d.log = append(d.log, tag+" "+addr)
			d.mu.Unlock()
			return (&net.Dialer{}).DialContext(ctx, network, d.echo)
		}
	}
}

func (d *redirectDialer) last() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.log) == 0 {
		return ""
	}
	return d.log[len(d.log)-1]
}

func gatewayOf(view NodeResolver) agentOpt { return func(c *AgentConfig) { c.Gateway = view } }

// Gateway agents on a real server: the active one carries its domain's
// nodes by name, the standby takes over when it goes, the other domain is
// never carried, and an agent that is no gateway (or whose own view says
// the node is not in its domain) refuses what the server asks.
func TestGatewayAgentsCarryTheirDomain(t *testing.T) {
	echo := newEchoServer(t)
	nodes := domainNodes()
	nodes["ga3"] = Target{Node: "ga3", IP: "10.231.91.3", Domain: "a", Gateway: true}
	nodes["ga0"] = Target{Node: "ga0", IP: "10.231.91.9", Domain: "a", Gateway: true}
	ports := allow(echo.port())
	ports.Localhost = []int{10266}
	e := newEnv(t, nodes, ports)
	port := strconv.Itoa(echo.port())
	dials := &redirectDialer{echo: echo.l.Addr().String()}
	start := func(node string, opts ...agentOpt) context.CancelFunc {
		own := func(c *AgentConfig) { c.Addresses = []string{nodes[node].IP} }
		_, stop := e.startAgent(e.ca.pair(t, identity.NodeUserPrefix+node, identity.NodesGroup), append(opts, own, dials.as(node))...)
		e.waitSession(node)
		return stop
	}
	stopGA1 := start("ga1", gatewayOf(nodes))
	stopGA2 := start("ga2", gatewayOf(nodes))

	e.through("a1:"+port, "through the active gateway")
	if got, want := dials.last(), "ga1 10.231.90.1:"+port; got != want {
		t.Fatalf("dial %q, want %q", got, want)
	}
	if got := counterValue(e.metrics.Routed.WithLabelValues("gateway")); got != 1 {
		t.Fatalf("gateway-routed requests %v, want 1", got)
	}
	e.through("ga2:"+port, "a gateway's own node")
	if got, want := dials.last(), "ga2 10.231.91.2:"+port; got != want {
		t.Fatalf("dial %q, want %q", got, want)
	}
	if got := counterValue(e.metrics.Routed.WithLabelValues("own")); got != 1 {
		t.Fatalf("own-routed requests %v, want 1", got)
	}

	// Domain b has no gateway session: a's gateways do not carry b1,
	// though they could dial its address (a1's too).
	before := dials.last()
	if status, body := e.connectAnswer("b1:" + port); status != http.StatusServiceUnavailable || !strings.Contains(body, "domain b") {
		t.Fatalf("CONNECT b1: %d %q; want 503", status, body)
	}
	// A port on the node's loopback is the node's own agent's to reach.
	if status, body := e.connectAnswer("a1:10266"); status != http.StatusForbidden || !strings.Contains(body, "loopback") {
		t.Fatalf("CONNECT a1:10266 via a gateway: %d %q; want 403", status, body)
	}
	if dials.last() != before {
		t.Fatalf("dialed %q", dials.last())
	}

	// The active gateway goes: the standby carries the next CONNECT.
	stopGA1()
	waitFor(t, 10*time.Second, "ga1's session to end", func() bool { return !e.srv.HasSession("ga1") })
	e.through("a1:"+port, "through the standby")
	if got, want := dials.last(), "ga2 10.231.90.1:"+port; got != want {
		t.Fatalf("after ga1 stopped, dial %q, want %q", got, want)
	}

	// The agents check what the server asks, too. ga3 is labelled a
	// gateway but its agent runs without --gateway: once it is the first
	// gateway with a session, the server routes a1 to it and it refuses.
	start("ga3")
	stopGA2()
	waitFor(t, 10*time.Second, "ga2's session to end", func() bool { return !e.srv.HasSession("ga2") })
	if status, body := e.connectAnswer("a1:" + port); status != http.StatusForbidden || !strings.Contains(body, "not a gateway") {
		t.Fatalf("CONNECT a1 through an agent without --gateway: %d %q; want 403", status, body)
	}
	// ga0 is a gateway whose own view of the Nodes has a1 in another
	// domain (the server's view is stale, or lies): it refuses.
	stale := domainNodes()
	stale["ga0"] = nodes["ga0"]
	stale["a1"] = Target{Node: "a1", IP: "10.231.90.1", Domain: "c"}
	start("ga0", gatewayOf(stale))
	if status, body := e.connectAnswer("a1:" + port); status != http.StatusForbidden || !strings.Contains(body, "not in network domain a") {
		t.Fatalf("CONNECT a1 through a gateway whose view has it elsewhere: %d %q; want 403", status, body)
	}
	if got, want := dials.last(), "ga2 10.231.90.1:"+port; got != want {
		t.Fatalf("an agent dialed after refusing: last dial %q, want %q", got, want)
	}
}
