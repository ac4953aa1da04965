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
func echoLatencies(t testing.TB, conns []net.Conn, perConn int) []time.Duration {
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

// stalledReaderP99 measures, over rounds, the small-request p99 of 8
// streams on one session without and then with one more stream whose
// reader stalls (its target writes until every buffer on the way is full).
// Rounds alternate, so load from elsewhere on the machine hits both alike.
// A session that the stalled stream blocks fails tb outright: the other
// streams' requests time out.
func stalledReaderP99(tb testing.TB, rounds, perConn int) (base, stalled []time.Duration) {
	echo, f := newEchoServer(tb), newFlood(tb)
	e := newEnv(tb, loopNode("n1"), allow(echo.port(), f.l.Addr().(*net.TCPAddr).Port))
	e.startAgent(e.ca.pair(tb, "system:vnode:n1", "system:vnodes"))
	e.waitSession("n1")
	const streams = 8
	conns := make([]net.Conn, streams)
	for i := range conns {
		s, c := e.connect("n1:" + strconv.Itoa(echo.port()))
		if s != http.StatusOK {
			tb.Fatalf("status %d", s)
		}
		conns[i] = c
	}
	echoLatencies(tb, conns, 50) // warm up

	floodTarget := "n1:" + strconv.Itoa(f.l.Addr().(*net.TCPAddr).Port)
	stall := func(i int) net.Conn {
		s, c := e.connect(floodTarget)
		if s != http.StatusOK {
			tb.Fatalf("status %d", s)
		}
		waitFor(tb, 5*time.Second, "the flood's connection", func() bool { return f.conn(i) != nil })
		n := f.conn(i)
		last, since := int64(-1), time.Now()
		waitFor(tb, 20*time.Second, "the unread stream to stall", func() bool {
			if v := n.Load(); v != last {
				last, since = v, time.Now()
				return false
			}
			return time.Since(since) > 200*time.Millisecond
		})
		return c
	}
	for r := 0; r < rounds; r++ {
		base = append(base, percentile(echoLatencies(tb, conns, perConn), 99))
		c := stall(r)
		stalled = append(stalled, percentile(echoLatencies(tb, conns, perConn), 99))
		_ = c.Close()
	}
	return base, stalled
}

// A stream whose reader stalled does not block the other streams of its
// session: their requests still complete (a blocked session fails this by
// timing out). How much it slows them is measured by
// BenchmarkStalledReaderP99, not asserted here.
func TestStalledReaderDoesNotBlockOthers(t *testing.T) {
	base, stalled := stalledReaderP99(t, 1, 100)
	t.Logf("small-request p99 without a stalled reader %v, with one %v", base[0], stalled[0])
}

// The small-request p99 of 8 streams with and without a stalled ninth
// stream on the same session: the target is at most 2x.
func BenchmarkStalledReaderP99(b *testing.B) {
	base, stalled := stalledReaderP99(b, 5, 150)
	mb, ms := median(base), median(stalled)
	b.ReportMetric(float64(mb)/float64(time.Millisecond), "p99-ms-alone")
	b.ReportMetric(float64(ms)/float64(time.Millisecond), "p99-ms-beside-stalled")
	b.ReportMetric(float64(ms)/float64(mb), "ratio")
	b.Logf("per round: without %v, with %v", base, stalled)
}
