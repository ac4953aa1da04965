package tunnel

import (
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"
)

// dialer opens a connection to the echo or flood target, tunneled or not.
type dialer func(b *testing.B) net.Conn

func benchDialers(b *testing.B, port int) map[string]dialer {
	e := newEnv(b, loopNode("n1"), allow(port))
	e.startAgent(e.ca.pair(b, "system:vnode:n1", "system:vnodes"))
	e.waitSession("n1")
	return map[string]dialer{
		"direct": func(b *testing.B) net.Conn {
			c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				b.Fatal(err)
			}
			return c
		},
		"tunnel": func(b *testing.B) net.Conn {
			s, c := e.connect("n1:" + strconv.Itoa(port))
			if s != http.StatusOK {
				b.Fatalf("status %d", s)
			}
			return c
		},
	}
}

// BenchmarkThroughput reads from a flood target over 1 and 16 streams.
func BenchmarkThroughput(b *testing.B) {
	f := newFlood(b)
	for name, dial := range benchDialers(b, f.l.Addr().(*net.TCPAddr).Port) {
		for _, streams := range []int{1, 16} {
			b.Run(name+"/streams="+strconv.Itoa(streams), func(b *testing.B) {
				conns := make([]net.Conn, streams)
				for i := range conns {
					conns[i] = dial(b)
				}
				const chunk = 1 << 20
				b.SetBytes(chunk)
				b.ResetTimer()
				var wg sync.WaitGroup
				per := (b.N + streams - 1) / streams
				for _, c := range conns {
					wg.Add(1)
					go func() {
						defer wg.Done()
						_, _ = io.CopyN(io.Discard, c, int64(per)*chunk)
					}()
				}
				wg.Wait()
				b.StopTimer()
				for _, c := range conns {
					_ = c.Close()
				}
			})
		}
	}
}

// BenchmarkLatency is the round trip of a 64-byte request on an open
// stream; it reports p50 and p99.
func BenchmarkLatency(b *testing.B) {
	echo := newEchoServer(b)
	for name, dial := range benchDialers(b, echo.port()) {
		b.Run(name, func(b *testing.B) {
			c := dial(b)
			defer c.Close()
			msg, got := make([]byte, 64), make([]byte, 64)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, got); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}
