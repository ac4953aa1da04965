package tunnel

import (
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// dialRequest opens every stream: the server asks the agent to dial Host:Port.
type dialRequest struct {
	// Node is the node the dial is for: the agent's own, or, for a
	// gateway, a node of its network domain. Empty from older servers
	// (then the agent's own).
	Node string `json:"node,omitempty"`
	Host string `json:"host"`
	Port int    `json:"port"`
	// TimeoutMillis is how long the server waits for the answer; the agent
	// gives up its dial a little earlier so its answer says why.
	TimeoutMillis int64 `json:"timeoutMillis,omitempty"`
}

// Dial answer codes.
const (
	codeRefused = "refused"
	codeTimeout = "timeout"
	codeFailed  = "failed"
)

// dialResponse answers it; Error is empty on success.
type dialResponse struct {
	Error string `json:"error,omitempty"`
	// Code classifies Error: "refused" (policy), "timeout", "failed".
	Code string `json:"code,omitempty"`
}

const maxFrame = 4 << 10

func writeFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > maxFrame {
		return fmt.Errorf("frame of %d bytes exceeds %d", len(b), maxFrame)
	}
	buf := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(buf, uint16(len(b)))
	copy(buf[2:], b)
	_, err = w.Write(buf)
	return err
}

func readFrame(r io.Reader, v any) error {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n > maxFrame {
		return fmt.Errorf("frame of %d bytes exceeds %d", n, maxFrame)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// StreamWindow is each stream's receive window: the most a stream buffers
// for a reader that stopped, and what one stream can have in flight.
const StreamWindow = 1 << 20

// coalescer sits between yamux and the session's TLS connection and
// writes asynchronously: yamux's send loop appends frames to a pending
// buffer and goes on at once, and a writer goroutine sends everything
// pending in one TLS write when the previous write is done (it never
// waits for more: what is pending goes out as soon as the connection is
// free). A stream's writer thus reads its next chunk while the last one is
// being encrypted and sent, and back-to-back frames fill whole TLS
// records: a 16 KiB body after its 12-byte header is no longer sent as a
// 16,384-byte record and a 12-byte one.
//
// The writer runs only while something is pending: an idle session (most
// of a server's thousands) holds no goroutine for it.
//
// yamux writes a data frame's header and its body in two calls; the
// coalescer holds a data header that announces a body until the body
// comes, so the writer never sends a header alone. The pending buffer is
// bounded (pendingLimit): a Write that would overflow it waits.
//
// Close sends what is pending first (yamux closes the connection right
// after a go-away, for one), for at most closeFlushTimeout.
type coalescer struct {
	net.Conn            // the session's TLS connection; yamux's streams take their addresses from it
	raw      *batchConn // under the TLS connection, or nil: one syscall a TLS write

	mu      sync.Mutex
	space   sync.Cond // pending was taken, or the writer failed, for Write
	idle    sync.Cond // the writer stopped, for Close
	hdr     []byte    // a held data header, or empty
	pending []byte
	spare   []byte // the buffer the writer last sent, reused
	running bool   // a writer goroutine is sending pending
	closing bool
	err     error // the writer's, sticky
	once    sync.Once
	cerr    error
	closed  bool   // Close has closed the connection
	onClose func() // run once the connection is closed (afterClose)
}

const (
	muxHeaderSize = 12 // version, type, flags (2), stream id (4), length (4)
	muxTypeData   = 0
	// pendingLimit bounds what waits for the connection: two buffers of
	// this size a session at most (pending, and the one being sent).
	pendingLimit = 256 << 10
	// closeFlushTimeout bounds sending what is pending on Close, as
	// crypto/tls bounds its close_notify.
	closeFlushTimeout = 5 * time.Second
)

func newCoalescer(c net.Conn, raw *batchConn) *coalescer {
	co := &coalescer{Conn: c, raw: raw}
	co.space.L = &co.mu
	co.idle.L = &co.mu
	return co
}

func (c *coalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.closing {
		return 0, net.ErrClosed
	}
	if len(c.hdr) == 0 && len(p) == muxHeaderSize && p[1] == muxTypeData && binary.BigEndian.Uint32(p[8:12]) > 0 {
		c.hdr = append(c.hdr[:0], p...)
		return len(p), nil
	}
	// Wait for room, unless nothing is pending (a frame larger than the
	// limit goes alone).
	for len(c.pending) > 0 && len(c.pending)+len(c.hdr)+len(p) > pendingLimit && c.err == nil && !c.closing {
		c.space.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	if c.closing {
		return 0, net.ErrClosed
	}
	c.pending = append(append(c.pending, c.hdr...), p...)
	c.hdr = c.hdr[:0]
	if !c.running {
		c.running = true
		go c.writeLoop()
	}
	return len(p), nil
}

// writeLoop sends what is pending until nothing is or a write fails; a
// failed write closes the connection, so that yamux's reader ends the
// session too.
func (c *coalescer) writeLoop() {
	c.mu.Lock()
	for len(c.pending) > 0 {
		out := c.pending
		c.pending, c.spare = c.spare[:0], nil
		c.space.Broadcast()
		c.mu.Unlock()
		err := c.send(out)
		c.mu.Lock()
		if cap(out) <= 2*pendingLimit { // a rare big frame: do not keep its buffer
			c.spare = out[:0]
		}
		if err != nil {
			c.err = err
			c.space.Broadcast()
			c.stopped()
			c.mu.Unlock()
			_ = c.Conn.Close()
			return
		}
	}
	c.stopped()
	c.mu.Unlock()
}

// stopped marks the writer gone (mu held).
func (c *coalescer) stopped() {
	c.running = false
	c.idle.Broadcast()
}

// waitIdle waits until no writer runs (mu held).
func (c *coalescer) waitIdle() {
	for c.running {
		c.idle.Wait()
	}
}

// send writes b to the TLS connection, as one syscall if it can.
func (c *coalescer) send(b []byte) error {
	if c.raw == nil {
		_, err := c.Conn.Write(b)
		return err
	}
	c.raw.hold()
	_, err := c.Conn.Write(b)
	if ferr := c.raw.flush(); err == nil {
		err = ferr
	}
	return err
}

// Close sends what is pending (for at most closeFlushTimeout), then
// closes the connection.
func (c *coalescer) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		c.closing = true
		c.space.Broadcast()
		if c.running {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
		}
		c.waitIdle()
		c.mu.Unlock()
		c.cerr = c.Conn.Close()
		c.mu.Lock()
		c.closed = true
		f := c.onClose
		c.mu.Unlock()
		if f != nil {
			f()
		}
	})
	return c.cerr
}

// afterClose runs f once Close has closed the connection (at once if it
// has): yamux closes its connection whenever its session ends, however
// it ends, so f is the session's end without a goroutine waiting for it.
func (c *coalescer) afterClose(f func()) {
	c.mu.Lock()
	closed := c.closed
	if !closed {
		c.onClose = f
	}
	c.mu.Unlock()
	if closed {
		f()
	}
}

// batchConn is the raw connection under a session's TLS connection.
// crypto/tls writes each record (16 KiB at most) with its own syscall;
// between hold and flush, batchConn gathers them and flush writes them
// at once. Writes outside that (the handshake, alerts) go straight
// through. Records keep their order: crypto/tls encrypts and writes each
// under its own lock, so a record written while held follows the held ones.
type batchConn struct {
	net.Conn
	mu      sync.Mutex
	holding bool
	buf     []byte
}

func (b *batchConn) hold() {
	b.mu.Lock()
	b.holding = true
	b.mu.Unlock()
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.holding {
		return b.Conn.Write(p)
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// flush writes what was held and stops holding.
func (b *batchConn) flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.holding = false
	return b.flushLocked()
}

func (b *batchConn) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(b.buf)
	b.buf = b.buf[:0]
	if cap(b.buf) > 4*pendingLimit {
		b.buf = nil
	}
	return err
}

// Close closes the connection at once, even while a flush is blocked
// (crypto/tls's Close relies on this to break a Write in flight), and
// drops what is held: only a Write in flight holds anything, and a Close
// during one means to break it.
func (b *batchConn) Close() error { return b.Conn.Close() }

// rawOf is the batchConn under c, or nil.
func rawOf(c *tls.Conn) *batchConn {
	b, _ := c.NetConn().(*batchConn)
	return b
}

// heldWrites sends each Write's TLS records in one syscall (a requester's
// connection: a 64 KiB relay write is four records).
type heldWrites struct {
	*tls.Conn
	raw *batchConn
}

func (h *heldWrites) Write(p []byte) (int, error) {
	h.raw.hold()
	n, err := h.Conn.Write(p)
	if ferr := h.raw.flush(); err == nil {
		err = ferr
	}
	return n, err
}

// batchListener hands out its connections as batchConns.
type batchListener struct{ net.Listener }

func (l batchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &batchConn{Conn: c}, nil
}

// muxConfig is shared by both ends; keepalives find dead NAT paths.
func muxConfig(logOut io.Writer) *yamux.Config {
	c := yamux.DefaultConfig()
	c.MaxStreamWindowSize = StreamWindow
	c.KeepAliveInterval = 15 * time.Second
	c.ConnectionWriteTimeout = 15 * time.Second
	c.StreamOpenTimeout = 10 * time.Second
	c.StreamCloseTimeout = 30 * time.Second
	c.AcceptBacklog = 1024
	c.LogOutput = logOut
	return c
}
