package tunnel

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tagDialer records which agent dialed, to tell sessions apart.
func tagDialer(tag string, mu *sync.Mutex, by *[]string) agentOpt {
	return func(c *AgentConfig) {
		c.DialTarget = func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			*by = append(*by, tag)
			mu.Unlock()
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}
	}
}

func TestNewerSessionReplacesOlder(t *testing.T) {
	echo := newEchoServer(t)
	e := newEnv(t, loopNode("n1"), allow(echo.port()))
	target := "n1:" + strconv.Itoa(echo.port())
	var mu sync.Mutex
	var by []string
	cert := e.ca.pair(t, "system:vnode:n1", "system:vnodes")
	// The first agent would wait a minute to come back, so the second
	// keeps the node for the rest of the test.
	e.startAgent(cert, tagDialer("first", &mu, &by), func(c *AgentConfig) { c.MinBackoff, c.MaxBackoff = time.Minute, time.Minute })
	e.waitSession("n1")
	if s, c := e.connect(target); s != http.StatusOK {
		t.Fatalf("status %d", s)
	} else {
		roundTrip(t, c, "one")
	}
	e.startAgent(cert, tagDialer("second", &mu, &by))
	waitFor(t, 10*time.Second, "the replacement", func() bool { return counterValue(e.metrics.Replacements) == 1 })
	for i := 0; i < 3; i++ {
		if s, c := e.connect(target); s != http.StatusOK {
			t.Fatalf("status %d", s)
		} else {
			roundTrip(t, c, "two")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"first", "second", "second", "second"}; len(by) != 4 || by[0] != want[0] || by[1] != want[1] || by[3] != want[3] {
		t.Fatalf("dials by %v, want %v", by, want)
	}
	if counterValue(e.metrics.Sessions.WithLabelValues("n1", "system:vnode:")) != 1 {
		t.Fatal("sessions gauge for n1 is not 1")
	}
}

// flood serves endless data on each connection and counts what each wrote.
type flood struct {
	l       net.Listener
	mu      sync.Mutex
	written []*atomic.Int64
}

func newFlood(t testing.TB) *flood {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &flood{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n := &atomic.Int64{}
			f.mu.Lock()
			f.written = append(f.written, n)
			f.mu.Unlock()
			go func() {
				buf := make([]byte, 32<<10)
				for {
					w, err := c.Write(buf)
					n.Add(int64(w))
					if err != nil {
						_ = c.Close()
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { _ = l.Close() })
	return f
}

func (f *flood) conn(i int) *atomic.Int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i < len(f.written) {
		return f.written[i]
	}
	return nil
}

// A requester that stops reading fills its own stream's window and no
// more: another stream on the same session keeps its throughput.
func TestSlowReaderDoesNotStallOtherStreams(t *testing.T) {
	f := newFlood(t)
	e := newEnv(t, loopNode("n1"), allow(f.l.Addr().(*net.TCPAddr).Port))
	_, _ = e.startAgent(e.ca.pair(t, "system:vnode:n1", "system:vnodes"))
	e.waitSession("n1")
	target := "n1:" + strconv.Itoa(f.l.Addr().(*net.TCPAddr).Port)

	status, _ := e.connect(target) // never read
	if status != http.StatusOK {
		t.Fatalf("status %d", status)
	}
	waitFor(t, 5*time.Second, "the first stream's target", func() bool { return f.conn(0) != nil })
	slow := f.conn(0)
	// Its window filled: the target has written at least a window's worth
	// (whether the window and socket buffers are full yet does not matter:
	// the bound below is checked after the other stream moved 64 MiB).
	waitFor(t, 20*time.Second, "the unread stream to fill its window", func() bool { return slow.Load() >= StreamWindow })

	status, fast := e.connect(target)
	if status != http.StatusOK {
		t.Fatalf("second stream: status %d", status)
	}
	const want = 64 << 20
	start := time.Now()
	_ = fast.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := io.CopyN(io.Discard, fast, want)
	if err != nil {
		t.Fatalf("second stream read %d bytes then: %v (it was stalled by the first)", n, err)
	}
	d := time.Since(start)
	buffered := slow.Load()
	t.Logf("unread stream: %d KiB taken from its target while the other read %d MiB in %s (%.0f MiB/s)",
		buffered>>10, want>>20, d.Round(time.Millisecond), float64(want>>20)/d.Seconds())
	// Bounded buffering: the window plus socket buffers, not the flood. Its
	// target writes as fast as the other's, so a stream without a bound
	// would have taken about as much as the other read. (Not a stall timed
	// on the clock: a loaded machine pauses a stream without any window.)
	if buffered > 32<<20 {
		t.Fatalf("%d bytes taken for a reader that never read, while the other read %d: not bounded", buffered, want)
	}
}

func TestAgentReconnectsAfterServerRestart(t *testing.T) {
	echo := newEchoServer(t)
	e := newEnv(t, loopNode("n1"), allow(echo.port()))
	target := "n1:" + strconv.Itoa(echo.port())
	e.startAgent(e.ca.pair(t, "system:vnode:n1", "system:vnodes"))
	e.waitSession("n1")
	_, before := e.connect(target)
	roundTrip(t, before, "before")

	e.restart()
	// The tunnel through the old replica ends with it.
	_ = before.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := before.Read(make([]byte, 1)); err == nil {
		t.Fatal("a tunnel outlived its server")
	}
	e.waitSession("n1")
	status, after := e.connect(target)
	if status != http.StatusOK {
		t.Fatalf("after restart: status %d", status)
	}
	roundTrip(t, after, "after")
}

func TestAgentDrainsOnShutdown(t *testing.T) {
	echo := newEchoServer(t)
	e := newEnv(t, loopNode("n1"), allow(echo.port()))
	_, stop := e.startAgent(e.ca.pair(t, "system:vnode:n1", "system:vnodes"), func(c *AgentConfig) { c.DrainTimeout = 5 * time.Second })
	e.waitSession("n1")
	_, c := e.connect("n1:" + strconv.Itoa(echo.port()))
	roundTrip(t, c, "open")
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	// Draining: no new stream is accepted, the open one still works.
	waitFor(t, 5*time.Second, "new streams refused", func() bool {
		s, _ := e.connect("n1:" + strconv.Itoa(echo.port()))
		return s != http.StatusOK
	})
	roundTrip(t, c, "still open")
	_ = c.Close()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the agent did not stop once its last stream closed")
	}
}
