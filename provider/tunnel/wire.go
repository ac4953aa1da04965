package tunnel

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
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
