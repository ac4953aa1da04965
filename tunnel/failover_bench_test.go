package tunnel

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vnode-project/vnode/internal/identity"
)

// BenchmarkGatewayFailover measures, for a network domain with an active
// and a standby gateway, the time from the active gateway's loss to the
// first request answered through the standby (issue 18). Two losses:
//
//   - crash: the gateway's connections close (a process or machine that
//     restarts); the server sees the session end at once.
//   - silent: its connections go quiet without closing (a power cut, a NAT
//     that forgets the flow); the server finds the session dead only when
//     a stream it routed there is not acknowledged (StreamOpenTimeout) or
//     the keepalive fails.
//
// The requester retries as kube-apiserver's caller would, one CONNECT at a
// time. Run: go test -run '^$' -bench GatewayFailover -benchtime 3x ./tunnel/
func BenchmarkGatewayFailover(b *testing.B) {
	for _, loss := range []string{"crash", "silent"} {
		b.Run(loss, func(b *testing.B) {
			var total time.Duration
			for i := 0; i < b.N; i++ {
				d := gatewayFailover(b, loss)
				b.Logf("round %d: %s", i+1, d.Round(time.Millisecond))
				total += d
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s/failover")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func gatewayFailover(b *testing.B, loss string) time.Duration {
	echo := newEchoServer(b)
	nodes := StaticNodes{
		"a1":  {Node: "a1", IP: "10.231.90.1", Domain: "a"},
		"ga1": {Node: "ga1", IP: "10.231.91.1", Domain: "a", Gateway: true},
		"ga2": {Node: "ga2", IP: "10.231.91.2", Domain: "a", Gateway: true},
	}
	e := newEnv(b, nodes, allow(echo.port()))
	dials := &redirectDialer{echo: echo.l.Addr().String()}
	var cut freezer
	for _, gw := range []string{"ga1", "ga2"} {
		opts := []agentOpt{gatewayOf(nodes), dials.as(gw), func(c *AgentConfig) { c.Addresses = []string{nodes[gw].IP} }}
		if gw == "ga1" {
			opts = append(opts, cut.wrap)
		}
		e.startAgent(e.ca.pair(b, identity.NodeUserPrefix+gw, identity.NodesGroup), opts...)
		e.waitSession(gw)
	}
	target := "a1:" + strconv.Itoa(echo.port())
	e.through(target, "through the active gateway")
	if got := dials.last(); got[:3] != "ga1" {
		b.Fatalf("first request went through %q, want ga1", got)
	}

	b.ResetTimer()
	lost := time.Now()
	if loss == "crash" {
		cut.close()
	} else {
		cut.freeze()
	}
	for {
		status, c := e.connect(target)
		if status == http.StatusOK {
			roundTrip(b, c, "through the standby")
			_ = c.Close()
			if got := dials.last(); got[:3] == "ga2" {
				break
			}
		}
		if time.Since(lost) > time.Minute {
			b.Fatalf("no answer through the standby a minute after the loss (last status %d)", status)
		}
		time.Sleep(10 * time.Millisecond)
	}
	d := time.Since(lost)
	b.StopTimer()
	cut.close()
	return d
}

// freezer holds an agent's connections to the server, to close them (a
// crash) or make them go quiet without closing (a silent loss: nothing is
// read or written any more, the TCP connection stays up).
type freezer struct {
	mu     sync.Mutex
	conns  []net.Conn
	frozen chan struct{} // closed on freeze
	gone   chan struct{} // closed on close: frozen calls return
	once   sync.Once
}

func (f *freezer) init() {
	f.once.Do(func() { f.frozen, f.gone = make(chan struct{}), make(chan struct{}) })
}

func (f *freezer) wrap(c *AgentConfig) {
	f.init()
	dial := c.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		f.mu.Lock()
		f.conns = append(f.conns, conn)
		f.mu.Unlock()
		return &frozenConn{Conn: conn, f: f}, nil
	}
}

func (f *freezer) freeze() {
	f.init()
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.frozen:
	default:
		close(f.frozen)
	}
}

func (f *freezer) close() {
	f.init()
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.gone:
	default:
		close(f.gone)
	}
	for _, c := range f.conns {
		_ = c.Close()
	}
}

type frozenConn struct {
	net.Conn
	f *freezer
}

func (c *frozenConn) hold() error {
	select {
	case <-c.f.frozen:
		<-c.f.gone
		return net.ErrClosed
	default:
		return nil
	}
}

func (c *frozenConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if herr := c.hold(); herr != nil {
		return 0, herr
	}
	return n, err
}

func (c *frozenConn) Write(p []byte) (int, error) {
	if err := c.hold(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}
