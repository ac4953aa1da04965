package tunnel

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
)

// writesConn records each Write as the TLS connection would send it.
type writesConn struct {
	net.Conn
	writes [][]byte
}

func (w *writesConn) Write(p []byte) (int, error) {
	w.writes = append(w.writes, append([]byte(nil), p...))
	return len(p), nil
}

func muxHeader(typ byte, length uint32) []byte {
	h := make([]byte, muxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint32(h[4:8], 7)
	binary.BigEndian.PutUint32(h[8:12], length)
	return h
}

// A data header that announces a body goes out with it, in one write;
// every other frame goes out at once, or it would wait for a write that
// never comes.
func TestCoalescerJoinsDataHeaderAndBody(t *testing.T) {
	w := &writesConn{}
	c := &coalescer{Conn: w}
	body := bytes.Repeat([]byte("x"), 5000)
	hdr := muxHeader(muxTypeData, uint32(len(body)))
	if n, err := c.Write(hdr); n != muxHeaderSize || err != nil {
		t.Fatalf("header: %d %v", n, err)
	}
	if len(w.writes) != 0 {
		t.Fatal("a data header went out alone")
	}
	if n, err := c.Write(body); n != len(body) || err != nil {
		t.Fatalf("body: %d %v", n, err)
	}
	if len(w.writes) != 1 || !bytes.Equal(w.writes[0], append(append([]byte(nil), hdr...), body...)) {
		t.Fatalf("writes: %d", len(w.writes))
	}
	for name, h := range map[string][]byte{
		"window update": muxHeader(1, 262144),
		"ping":          muxHeader(2, 1),
		"data, no body": muxHeader(muxTypeData, 0),
		"go away":       muxHeader(3, 0),
	} {
		w.writes = nil
		if _, err := c.Write(h); err != nil || len(w.writes) != 1 || !bytes.Equal(w.writes[0], h) {
			t.Errorf("%s was held back or changed: %v", name, w.writes)
		}
	}
}
