package bench

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkVersusANP runs every scenario on direct loopback, our tunnel,
// the floor (our hops and TLS without multiplexing, floor_test.go) and
// ANP v0.36.0. Figures are b.ReportMetric units; run with -benchtime 1x.
func BenchmarkVersusANP(b *testing.B) {
	o := startOrigins(b)
	p := newPKI(b)
	bin, err := buildANP(b)
	if err != nil {
		b.Skipf("skipping: building apiserver-network-proxy v0.36.0 from the module proxy failed, nothing to compare with: %v", err)
	}
	systems := []*system{{name: "direct"}, ours(b, p, o), floor(b, p), anp(b, bin, p)}
	for _, s := range systems[1:] {
		waitReady(b, s, o.echo)
	}
	for _, s := range systems {
		b.Run(s.name+"/download/1", func(b *testing.B) { throughput(b, s, o, 1, 256<<20, true) })
		b.Run(s.name+"/download/16", func(b *testing.B) { throughput(b, s, o, 16, 16<<20, true) })
		b.Run(s.name+"/upload/1", func(b *testing.B) { throughput(b, s, o, 1, 256<<20, false) })
		b.Run(s.name+"/upload/16", func(b *testing.B) { throughput(b, s, o, 16, 16<<20, false) })
		b.Run(s.name+"/latency/reused", func(b *testing.B) { latencyReused(b, s, o) })
		b.Run(s.name+"/latency/new", func(b *testing.B) { latencyNew(b, s, o) })
		if len(s.pids) > 0 {
			b.Run(s.name+"/idle/1000", func(b *testing.B) { idle(b, s, o, 1000) })
		}
	}
}

func waitReady(b *testing.B, s *system, port int) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := s.dial(ctx, port)
		cancel()
		if err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s not ready in 30s: %v", s.name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// throughput moves size bytes on each of streams connections at once.
func throughput(b *testing.B, s *system, o origins, streams int, size uint64, download bool) {
	for i := 0; i < b.N; i++ {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, streams)
		for j := 0; j < streams; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- transfer(s, o, size, download)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(uint64(streams)*size)/time.Since(start).Seconds()/1e6, "MB/s")
	}
}

func transfer(s *system, o origins, size uint64, download bool) error {
	port := o.sink
	if download {
		port = o.source
	}
	c, err := s.dial(context.Background(), port)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	if err := binary.Write(c, binary.BigEndian, size); err != nil {
		return err
	}
	if download {
		_, err = io.CopyN(io.Discard, c, int64(size))
		return err
	}
	buf := make([]byte, 64<<10)
	for n := size; n > 0; {
		w := min(n, uint64(len(buf)))
		if _, err := c.Write(buf[:w]); err != nil {
			return err
		}
		n -= w
	}
	_, err = io.ReadFull(c, buf[:1])
	return err
}

func roundTrip(c net.Conn, msg, got []byte) error {
	if _, err := c.Write(msg); err != nil {
		return err
	}
	_, err := io.ReadFull(c, got)
	return err
}

func report(b *testing.B, ds []time.Duration) {
	slices.Sort(ds)
	ms := func(q float64) float64 { return float64(ds[int(float64(len(ds)-1)*q)]) / 1e6 }
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
}

// latencyReused: 64-byte round trips on one kept connection.
func latencyReused(b *testing.B, s *system, o origins) {
	c, err := s.dial(context.Background(), o.echo)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg, got := make([]byte, 64), make([]byte, 64)
	var ds []time.Duration
	for i := 0; i < b.N*3000; i++ {
		start := time.Now()
		if err := roundTrip(c, msg, got); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(start))
	}
	report(b, ds)
}

// latencyNew: a new connection (TLS to the proxy and CONNECT, for the
// tunnels) for each 64-byte round trip.
func latencyNew(b *testing.B, s *system, o origins) {
	msg, got := make([]byte, 64), make([]byte, 64)
	var ds []time.Duration
	for i := 0; i < b.N*300; i++ {
		start := time.Now()
		c, err := s.dial(context.Background(), o.echo)
		if err != nil {
			b.Fatal(err)
		}
		err = roundTrip(c, msg, got)
		_ = c.Close()
		if err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(start))
	}
	report(b, ds)
}

// idle: what n open, idle streams cost the tunnel's processes.
func idle(b *testing.B, s *system, o origins, n int) {
	for i := 0; i < b.N; i++ {
		time.Sleep(500 * time.Millisecond)
		before := s.rss(b)
		conns := make([]net.Conn, 0, n)
		msg, got := make([]byte, 1), make([]byte, 1)
		for j := 0; j < n; j++ {
			c, err := s.dial(context.Background(), o.echo)
			if err != nil {
				b.Fatalf("stream %d: %v", j, err)
			}
			if err := roundTrip(c, msg, got); err != nil {
				b.Fatalf("stream %d: %v", j, err)
			}
			conns = append(conns, c)
		}
		time.Sleep(time.Second)
		after := s.rss(b)
		for _, c := range conns {
			_ = c.Close()
		}
		b.ReportMetric(float64(after)/(1<<20), "RSS-MiB")
		b.ReportMetric(float64(after-before)/float64(n)/1024, "KiB/stream")
	}
}
