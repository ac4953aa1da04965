package tunnel

import (
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// percentile returns the p-th percentile (0-100) of samples.
func percentile(samples []time.Duration, p float64) time.Duration {
	s := slices.Clone(samples)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func median(ds []time.Duration) time.Duration { return percentile(ds, 50) }

// echoLatencies runs perConn 64-byte round trips on each connection at
// once and returns every round trip's duration. A round trip that takes
// over 5s fails the test: a blocked session shows here as a timeout.
func echoLatencies(t *testing.T, conns []net.Conn, perConn int) []time.Duration {
	t.Helper()
	var mu sync.Mutex
	var all []time.Duration
	errs := make(chan error, len(conns))
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, got := make([]byte, 64), make([]byte, 64)
			local := make([]time.Duration, 0, perConn)
			for i := 0; i < perConn; i++ {
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				start := time.Now()
				if _, err := c.Write(msg); err != nil {
					errs <- err
					return
				}
				if _, err := io.ReadFull(c, got); err != nil {
					errs <- err
					return
				}
				local = append(local, time.Since(start))
			}
			mu.Lock()
			all = append(all, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a small request on another stream failed (blocked behind the stalled reader?): %v", err)
	}
	return all
}

// One stream whose reader stalls must not raise the small-request p99 of
// the other streams on the same session by more than 2x. Rounds with and
// without a stalled reader alternate, so load from elsewhere on the
// machine hits both alike, and the medians of their p99s are compared.
// A session that a stalled stream blocks fails it outright: the other
// streams' requests time out.
func TestStalledReaderKeepsOthersP99(t *testing.T) {
	if testing.Short() {
		t.Skip("measures latency over several seconds")
	}
	echo, f := newEchoServer(t), newFlood(t)
	e := newEnv(t, loopNode("n1"), allow(echo.port(), f.l.Addr().(*net.TCPAddr).Port))
	e.startAgent(e.ca.pair(t, "system:vnode:n1", "system:vnodes"))
	e.waitSession("n1")
	const streams, perConn, rounds = 8, 150, 5
	conns := make([]net.Conn, streams)
	for i := range conns {
		s, c := e.connect("n1:" + strconv.Itoa(echo.port()))
		if s != http.StatusOK {
			t.Fatalf("status %d", s)
		}
		conns[i] = c
	}
	echoLatencies(t, conns, 50) // warm up

	floodTarget := "n1:" + strconv.Itoa(f.l.Addr().(*net.TCPAddr).Port)
	// stall opens a stream to the flood that is never read, and waits
	// until its target can write no more (every buffer on the way full).
	stall := func(i int) net.Conn {
		s, c := e.connect(floodTarget)
		if s != http.StatusOK {
			t.Fatalf("status %d", s)
		}
		waitFor(t, 5*time.Second, "the flood's connection", func() bool { return f.conn(i) != nil })
		n := f.conn(i)
		last, since := int64(-1), time.Now()
		waitFor(t, 20*time.Second, "the unread stream to stall", func() bool {
			if v := n.Load(); v != last {
				last, since = v, time.Now()
				return false
			}
			return time.Since(since) > 200*time.Millisecond
		})
		return c
	}
	var base, stalled []time.Duration
	for r := 0; r < rounds; r++ {
		base = append(base, percentile(echoLatencies(t, conns, perConn), 99))
		c := stall(r)
		stalled = append(stalled, percentile(echoLatencies(t, conns, perConn), 99))
		_ = c.Close()
	}
	mb, ms := median(base), median(stalled)
	t.Logf("small-request p99 per round (%d streams x %d requests): without a stalled reader %v (median %v), with one %v (median %v)",
		streams, perConn, base, mb, stalled, ms)
	if ms > 2*mb {
		t.Fatalf("a stalled reader raised the other streams' p99 from %v to %v (more than 2x)", mb, ms)
	}
}
