package tunnel

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// A relay reads into a small buffer of its own while its stream is
// quiet, and into a pooled large one while data flows: most tunneled
// connections (kubelet API calls, exec sessions, log follows) sit idle
// most of the time, and two large buffers per direction per side would
// hold 128 KiB per idle connection.
//
// The large size makes a yamux data frame (its 12-byte header and the
// body) fill exactly four TLS records of 16 KiB: 32 KiB bodies took three
// records, the last one carrying 12 bytes.
const (
	smallBuffer = 1 << 10
	largeBuffer = 4*tlsRecordPayload - muxHeaderSize
)

// tlsRecordPayload is the most plaintext one TLS record carries.
const tlsRecordPayload = 16 << 10

var largeBuffers = sync.Pool{New: func() any { b := make([]byte, largeBuffer); return &b }}

// stallThreshold: a write into a stream that takes longer than this waited
// for the peer to open its window, i.e. for a slow reader.
const stallThreshold = 50 * time.Millisecond

// closeWriter is a connection that can half-close (TCP, TLS, yamux streams).
type closeWriter interface{ CloseWrite() error }

func closeWrite(c net.Conn) {
	if cw, ok := c.(closeWriter); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// relay copies both ways until both directions end, half-closing each side
// as its source ends, then closes both. A direction that ends in an error
// (not EOF) closes both at once: the other direction may be blocked on a
// peer that will never send a FIN. toPeer counts bytes written into
// stream, fromPeer those read from it; stalls counts slow writes into
// stream (nil counters are skipped).
func relay(local, stream net.Conn, toPeer, fromPeer, stalls prometheus.Counter) {
	var wg sync.WaitGroup
	var once sync.Once
	abort := func() {
		once.Do(func() {
			_ = local.Close()
			_ = stream.Close()
		})
	}
	// One direction runs on the caller's goroutine: an idle stream holds
	// one goroutine fewer on each side.
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := copyCounted(stream, local, toPeer, stalls); err != nil {
			abort()
			return
		}
		closeWrite(stream)
	}()
	if err := copyCounted(local, stream, fromPeer, nil); err != nil {
		abort()
	} else {
		closeWrite(local)
	}
	wg.Wait()
	abort()
}

// copyCounted copies until src ends; it returns nil on a clean EOF. It
// reads into the small buffer until a read fills it (data is flowing),
// then into a large pooled one until a read comes back short of the small
// size (the stream went quiet), which returns the large one to the pool.
func copyCounted(dst io.Writer, src io.Reader, n, stalls prometheus.Counter) error {
	small := make([]byte, smallBuffer)
	var large *[]byte
	defer func() {
		if large != nil {
			largeBuffers.Put(large)
		}
	}()
	for {
		buf := small
		if large != nil {
			buf = *large
		}
		r, err := src.Read(buf)
		if r > 0 {
			start := time.Now()
			w, werr := dst.Write(buf[:r])
			if stalls != nil && time.Since(start) > stallThreshold {
				stalls.Inc()
			}
			if n != nil {
				n.Add(float64(w))
			}
			if werr != nil {
				return werr
			}
		}
		// Adapt only now: buf's bytes have been written.
		switch {
		case large == nil && r == len(small):
			large = largeBuffers.Get().(*[]byte)
		case large != nil && r < len(small):
			largeBuffers.Put(large)
			large = nil
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// streamConn gives a yamux stream CloseWrite: yamux's Close is a
// half-close (FIN) that still lets the peer's data in, so CloseWrite is
// Close, and Close also runs onClose once (gauges, pending counts).
type streamConn struct {
	net.Conn
	onClose func()
	once    sync.Once
}

func (s *streamConn) CloseWrite() error { return s.Conn.Close() }

func (s *streamConn) Close() error {
	err := s.Conn.Close()
	s.once.Do(func() {
		if s.onClose != nil {
			s.onClose()
		}
	})
	return err
}

// prefixConn replays bytes a reader already buffered before reading the
// connection (a CONNECT request's reader may hold the first bytes of the
// tunneled stream).
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (p *prefixConn) Read(b []byte) (int, error) { return p.r.Read(b) }

func (p *prefixConn) CloseWrite() error {
	if cw, ok := p.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return p.Conn.Close()
}
