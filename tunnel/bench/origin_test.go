package bench

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
)

// origins are the targets on loopback: source writes as many bytes as
// asked (download), sink reads as many as announced and acks with one
// byte (upload), echo echoes (small requests, idle streams).
type origins struct{ source, sink, echo int }

func startOrigins(tb testing.TB) origins {
	tb.Helper()
	serve := func(handle func(net.Conn)) int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); handle(c) }()
			}
		}()
		return l.Addr().(*net.TCPAddr).Port
	}
	return origins{
		source: serve(func(c net.Conn) {
			var n uint64
			if binary.Read(c, binary.BigEndian, &n) != nil {
				return
			}
			buf := make([]byte, 64<<10)
			for n > 0 {
				w := min(n, uint64(len(buf)))
				if _, err := c.Write(buf[:w]); err != nil {
					return
				}
				n -= w
			}
		}),
		sink: serve(func(c net.Conn) {
			var n uint64
			if binary.Read(c, binary.BigEndian, &n) != nil {
				return
			}
			if _, err := io.CopyN(io.Discard, c, int64(n)); err != nil {
				return
			}
			_, _ = c.Write([]byte{1})
		}),
		echo: serve(func(c net.Conn) { _, _ = io.Copy(c, c) }),
	}
}
