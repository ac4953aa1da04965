package tunnel

import (
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

// coalescer sits between yamux and the session's TLS connection. yamux
// writes a data frame's 12-byte header and its body in two calls, which
// TLS would send as two records (and two syscalls); the coalescer holds a
// data header that announces a body and writes it with that body. Any
// other frame (window update, ping, go-away, or data without a body) goes
// out at once: nothing follows it to flush it.
type coalescer struct {
	net.Conn // yamux's streams take their addresses from it
	mu       sync.Mutex
	hdr      []byte // a held data header, or empty
	join     []byte // reused: header and body in one write
}

const (
	muxHeaderSize = 12 // version, type, flags (2), stream id (4), length (4)
	muxTypeData   = 0
)

func (c *coalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.hdr) == 0 && len(p) == muxHeaderSize && p[1] == muxTypeData && binary.BigEndian.Uint32(p[8:12]) > 0 {
		c.hdr = append(c.hdr[:0], p...)
		return len(p), nil
	}
	if len(c.hdr) == 0 {
		return c.Conn.Write(p)
	}
	c.join = append(append(c.join[:0], c.hdr...), p...)
	c.hdr = c.hdr[:0]
	n, err := c.Conn.Write(c.join)
	if n -= muxHeaderSize; n < 0 {
		n = 0
	}
	if len(c.join) > 2*largeBuffer {
		c.join = nil // a rare big body: do not keep its buffer
	}
	return n, err
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
