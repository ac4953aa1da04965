package tunnel

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// writesConn records each Write as the TLS connection would send it. A
// gate, if set, holds every Write until a value is sent on it, and
// entered says a Write is waiting there.
type writesConn struct {
	net.Conn
	mu      sync.Mutex
	writes  [][]byte
	closed  bool
	err     error
	gate    chan struct{}
	entered chan struct{}
	wrote   chan struct{} // one value per Write done
}

func newWritesConn() *writesConn { return &writesConn{wrote: make(chan struct{}, 1024)} }

func (w *writesConn) Write(p []byte) (int, error) {
	if w.gate != nil {
		w.entered <- struct{}{}
		<-w.gate
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, net.ErrClosed
	}
	w.writes = append(w.writes, append([]byte(nil), p...))
	w.wrote <- struct{}{}
	return len(p), nil
}

func (w *writesConn) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	return nil
}

func (w *writesConn) SetWriteDeadline(time.Time) error { return nil }

func (w *writesConn) snapshot() ([][]byte, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([][]byte(nil), w.writes...), w.closed
}

// waitWrites waits (for a test's lifetime at most) for n more writes.
func (w *writesConn) waitWrites(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-w.wrote:
		case <-time.After(10 * time.Second):
			t.Fatal("a write never came")
		}
	}
}

func muxHeader(typ byte, length uint32) []byte {
	h := make([]byte, muxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint32(h[4:8], 7)
	binary.BigEndian.PutUint32(h[8:12], length)
	return h
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// A data header that announces a body goes out with it, in one write;
// every other frame goes out without waiting for another write, or it
// would wait for a write that never comes.
func TestCoalescerJoinsDataHeaderAndBody(t *testing.T) {
	w := newWritesConn()
	c := newCoalescer(w, nil)
	defer c.Close()
	body := bytes.Repeat([]byte("x"), 5000)
	hdr := muxHeader(muxTypeData, uint32(len(body)))
	if n, err := c.Write(hdr); n != muxHeaderSize || err != nil {
		t.Fatalf("header: %d %v", n, err)
	}
	if n, err := c.Write(body); n != len(body) || err != nil {
		t.Fatalf("body: %d %v", n, err)
	}
	w.waitWrites(t, 1)
	if writes, _ := w.snapshot(); len(writes) != 1 || !bytes.Equal(writes[0], cat(hdr, body)) {
		t.Fatalf("writes: %d", len(writes))
	}
	for name, h := range map[string][]byte{
		"window update": muxHeader(1, 262144),
		"ping":          muxHeader(2, 1),
		"data, no body": muxHeader(muxTypeData, 0),
		"go away":       muxHeader(3, 0),
	} {
		before, _ := w.snapshot()
		if _, err := c.Write(h); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		w.waitWrites(t, 1)
		if writes, _ := w.snapshot(); !bytes.Equal(writes[len(before)], h) {
			t.Errorf("%s was changed: %v", name, writes[len(before)])
		}
	}
}

// Frames that come while a write is in progress go out together in the
// next one, in order; a data header never goes out apart from its body.
func TestCoalescerBatchesWhileTheConnectionIsBusy(t *testing.T) {
	w := newWritesConn()
	w.gate, w.entered = make(chan struct{}), make(chan struct{}, 16)
	c := newCoalescer(w, nil)
	first := cat(muxHeader(1, 9))
	if _, err := c.Write(first); err != nil {
		t.Fatal(err)
	}
	<-w.entered // the writer took it and is busy
	var want []byte
	for i := range 5 {
		body := bytes.Repeat([]byte{byte('a' + i)}, 100*(i+1))
		h := muxHeader(muxTypeData, uint32(len(body)))
		for _, p := range [][]byte{h, body} {
			if _, err := c.Write(p); err != nil {
				t.Fatal(err)
			}
		}
		want = append(want, cat(h, body)...)
	}
	held := muxHeader(muxTypeData, 3) // its body has not come yet
	if _, err := c.Write(held); err != nil {
		t.Fatal(err)
	}
	w.gate <- struct{}{} // first goes out
	<-w.entered
	w.gate <- struct{}{} // everything pending, in one write
	w.waitWrites(t, 2)
	writes, _ := w.snapshot()
	if len(writes) != 2 || !bytes.Equal(writes[0], first) || !bytes.Equal(writes[1], want) {
		t.Fatalf("got %d writes, want the first frame then the five data frames joined", len(writes))
	}
	go func() {
		for range w.entered {
			w.gate <- struct{}{}
		}
	}()
	if _, err := c.Write([]byte("xyz")); err != nil {
		t.Fatal(err)
	}
	w.waitWrites(t, 1)
	if writes, _ := w.snapshot(); !bytes.Equal(writes[2], cat(held, []byte("xyz"))) {
		t.Fatalf("the held header and its body: %q", writes[2])
	}
	_ = c.Close()
	close(w.entered)
}

// While the connection is busy, what waits is bounded: no write carries
// more than pendingLimit (for frames below it), and nothing is lost.
func TestCoalescerBoundsWhatWaits(t *testing.T) {
	w := newWritesConn()
	w.gate, w.entered = make(chan struct{}), make(chan struct{}, 16)
	go func() {
		for range w.entered {
			time.Sleep(time.Millisecond) // let frames pile up
			w.gate <- struct{}{}
		}
	}()
	c := newCoalescer(w, nil)
	var want []byte
	for i := range 200 {
		p := bytes.Repeat([]byte{byte(i)}, 16<<10+muxHeaderSize)
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
		want = append(want, p...)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	close(w.entered)
	writes, closed := w.snapshot()
	if !closed || !bytes.Equal(cat(writes...), want) {
		t.Fatalf("closed %v, %d bytes of %d arrived, or out of order", closed, len(cat(writes...)), len(want))
	}
	for _, b := range writes {
		if len(b) > pendingLimit {
			t.Fatalf("a write of %d bytes, over the %d limit", len(b), pendingLimit)
		}
	}
}

// Close sends what is pending before it closes the connection (a
// go-away, say), and later writes fail.
func TestCoalescerCloseSendsPending(t *testing.T) {
	w := newWritesConn()
	w.gate, w.entered = make(chan struct{}), make(chan struct{}, 16)
	c := newCoalescer(w, nil)
	a, b := muxHeader(2, 1), muxHeader(3, 0)
	_, _ = c.Write(a)
	<-w.entered
	_, _ = c.Write(b)
	closed := make(chan error)
	go func() { closed <- c.Close() }()
	w.gate <- struct{}{}
	<-w.entered
	w.gate <- struct{}{}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	writes, isClosed := w.snapshot()
	if !isClosed || !bytes.Equal(cat(writes...), cat(a, b)) {
		t.Fatalf("closed %v, writes %q", isClosed, writes)
	}
	if _, err := c.Write(a); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

// A failed write closes the connection (so the session's reader ends)
// and every later Write returns the error.
func TestCoalescerWriteErrorEndsTheConnection(t *testing.T) {
	w := newWritesConn()
	boom := errors.New("boom")
	w.err = boom
	c := newCoalescer(w, nil)
	_, _ = c.Write(muxHeader(2, 1))
	c.mu.Lock()
	c.waitIdle()
	c.mu.Unlock()
	if _, closed := w.snapshot(); !closed {
		t.Fatal("the connection is still open")
	}
	if _, err := c.Write(muxHeader(2, 1)); !errors.Is(err, boom) {
		t.Fatalf("write after the failure: %v", err)
	}
	_ = c.Close()
}

// Between hold and flush a batchConn gathers writes into one; outside
// that they pass straight through.
func TestBatchConnGathersHeldWrites(t *testing.T) {
	w := newWritesConn()
	b := &batchConn{Conn: w}
	_, _ = b.Write([]byte("hello"))
	b.hold()
	for _, s := range []string{"one", "two", "three"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatal(n, err)
		}
	}
	if writes, _ := w.snapshot(); len(writes) != 1 {
		t.Fatalf("held writes went out: %q", writes)
	}
	if err := b.flush(); err != nil {
		t.Fatal(err)
	}
	_, _ = b.Write([]byte("after"))
	writes, _ := w.snapshot()
	want := []string{"hello", "onetwothree", "after"}
	if len(writes) != len(want) {
		t.Fatalf("writes %q", writes)
	}
	for i := range want {
		if string(writes[i]) != want[i] {
			t.Fatalf("write %d: %q, want %q", i, writes[i], want[i])
		}
	}
}

// Close does not wait for a flush that is blocked on the peer: closing is
// how a stuck Write is broken.
func TestBatchConnCloseBreaksABlockedFlush(t *testing.T) {
	w := newWritesConn()
	w.gate, w.entered = make(chan struct{}), make(chan struct{}, 1)
	b := &batchConn{Conn: w}
	b.hold()
	_, _ = b.Write([]byte("stuck"))
	flushed := make(chan error)
	go func() { flushed <- b.flush() }()
	<-w.entered
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, closed := w.snapshot(); !closed {
		t.Fatal("not closed")
	}
	close(w.gate)
	if err := <-flushed; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the blocked flush: %v", err)
	}
}

// countingConn counts Write calls on the raw connection.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *countingConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// Over real TLS, a heldWrites Write of four records' worth reaches the
// socket as one write, and the peer reads the bytes intact.
func TestHeldWritesSendsAWritesRecordsAtOnce(t *testing.T) {
	ca := newTestCA(t, "wire")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tl := tls.NewListener(batchListener{l}, serverTLS(ca.pair(t, "server"), ca.bundle(t), nil, tls.NoClientCert))
	got := make(chan []byte, 1)
	go func() {
		c, err := tl.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	cfg, err := clientTLS(ca.pair(t, "client"), ca.bundle(t), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cfg.NextProtos = nil
	raw, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingConn{Conn: raw}
	bc := &batchConn{Conn: counted}
	tc := tls.Client(bc, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	// Past crypto/tls's small first records, so that each is 16 KiB.
	warm := bytes.Repeat([]byte("w"), 256<<10)
	if _, err := tc.Write(warm); err != nil {
		t.Fatal(err)
	}
	h := &heldWrites{Conn: tc, raw: rawOf(tc)}
	data := make([]byte, 4*tlsRecordPayload)
	for i := range data {
		data[i] = byte(i * 7)
	}
	before := counted.count()
	if n, err := h.Write(data); n != len(data) || err != nil {
		t.Fatal(n, err)
	}
	if w := counted.count() - before; w != 1 {
		t.Fatalf("%d socket writes for one Write of four records", w)
	}
	_ = tc.Close()
	if b := <-got; !bytes.Equal(b, append(warm, data...)) {
		t.Fatalf("the peer read %d bytes, want %d intact", len(b), len(warm)+len(data))
	}
}
