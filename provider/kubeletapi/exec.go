package kubeletapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilexec "k8s.io/utils/exec"
)

// Channels of an ECI exec WebSocket. ECI does not document its framing; the
// emulator and this client use Kubernetes' v4.channel.k8s.io layout: each
// binary message starts with its channel byte.
const (
	chanStdin  = 0
	chanStdout = 1
	chanStderr = 2
	chanStatus = 3 // metav1.Status JSON; a non-zero exit code is a cause of type ExitCode
	chanResize = 4 // {"Width":w,"Height":h}
	chanClose  = 255
)

// StreamExec bridges one exec session on the WebSocket at uri to a kubelet
// exec stream: stdin, stdout, stderr and resizes flow both ways, and a
// non-zero exit code is returned as a utilexec.ExitError so kubectl exits
// with it.
func StreamExec(ctx context.Context, dialer *websocket.Dialer, uri string, attach api.AttachIO) error {
	conn, resp, err := dialer.DialContext(ctx, uri, nil)
	if err != nil {
		if resp != nil {
			return fmt.Errorf("opening the exec session: %s: %w", resp.Status, err)
		}
		return fmt.Errorf("opening the exec session: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wmu sync.Mutex
	send := func(ch byte, data []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return conn.WriteMessage(websocket.BinaryMessage, append([]byte{ch}, data...))
	}
	// Closing the connection unblocks every reader and writer.
	go func() {
		<-ctx.Done()
		wmu.Lock()
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		wmu.Unlock()
		conn.Close()
	}()

	if in := attach.Stdin(); in != nil {
		go func() {
			buf := make([]byte, 32*1024)
			for {
				n, err := in.Read(buf)
				if n > 0 {
					if send(chanStdin, buf[:n]) != nil {
						return
					}
				}
				if err != nil {
					// EOF (or a broken client): tell the command its stdin ended.
					_ = send(chanClose, []byte{chanStdin})
					return
				}
			}
		}()
	}
	if attach.TTY() && attach.Resize() != nil {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case size, ok := <-attach.Resize():
					if !ok {
						return
					}
					b, _ := json.Marshal(struct{ Width, Height uint16 }{size.Width, size.Height})
					if send(chanResize, b) != nil {
						return
					}
				}
			}
		}()
	}

	var status *metav1.Status
	for {
		typ, msg, err := conn.ReadMessage()
		if err != nil {
			if status != nil || websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("exec session ended without an exit status: %w", err)
		}
		if typ != websocket.BinaryMessage || len(msg) == 0 {
			continue
		}
		data := msg[1:]
		switch msg[0] {
		case chanStdout:
			if w := attach.Stdout(); w != nil {
				if _, err := w.Write(data); err != nil {
					return fmt.Errorf("writing stdout to the client: %w", err)
				}
			}
		case chanStderr:
			if w := attach.Stderr(); w != nil {
				if _, err := w.Write(data); err != nil {
					return fmt.Errorf("writing stderr to the client: %w", err)
				}
			}
		case chanStatus:
			status = &metav1.Status{}
			if err := json.Unmarshal(data, status); err != nil {
				return fmt.Errorf("decoding the exec status %q: %w", data, err)
			}
		}
	}
	return statusError(status)
}

// statusError turns the session's final status into kubelet semantics.
func statusError(s *metav1.Status) error {
	if s == nil {
		return errors.New("exec session closed without an exit status")
	}
	if s.Status == metav1.StatusSuccess {
		return nil
	}
	if s.Details != nil {
		for _, c := range s.Details.Causes {
			if c.Type == "ExitCode" {
				code, err := strconv.Atoi(c.Message)
				if err == nil {
					return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", code), Code: code}
				}
			}
		}
	}
	return fmt.Errorf("exec failed: %s", s.Message)
}
