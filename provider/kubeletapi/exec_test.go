package kubeletapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilexec "k8s.io/utils/exec"
)

type buf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buf) Write(p []byte) (int, error) { b.mu.Lock(); defer b.mu.Unlock(); return b.b.Write(p) }
func (b *buf) Close() error                { return nil }
func (b *buf) String() string              { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

type attachIO struct {
	stdin          io.Reader
	stdout, stderr *buf
	tty            bool
	resize         chan api.TermSize
}

func (a *attachIO) Stdin() io.Reader            { return a.stdin }
func (a *attachIO) Stdout() io.WriteCloser      { return a.stdout }
func (a *attachIO) Stderr() io.WriteCloser      { return a.stderr }
func (a *attachIO) TTY() bool                   { return a.tty }
func (a *attachIO) Resize() <-chan api.TermSize { return a.resize }

// peer speaks the session protocol: it echoes stdin upper-cased on stdout
// until stdin closes, reports resizes on stderr, then exits with code.
func peer(t *testing.T, code int) *httptest.Server {
	up := websocket.Upgrader{}
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			t.Errorf("upgrade: %v", err)
			return
		}
		defer c.Close()
		for {
			_, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			switch msg[0] {
			case chanStdin:
				_ = c.WriteMessage(websocket.BinaryMessage, append([]byte{chanStdout}, bytes.ToUpper(msg[1:])...))
			case chanResize:
				_ = c.WriteMessage(websocket.BinaryMessage, append([]byte{chanStderr}, msg[1:]...))
			case chanClose:
				st := metav1.Status{Status: metav1.StatusSuccess}
				if code != 0 {
					st = metav1.Status{Status: metav1.StatusFailure, Reason: "NonZeroExitCode", Message: "exit",
						Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: "ExitCode", Message: "3"}}}}
				}
				b, _ := json.Marshal(st)
				_ = c.WriteMessage(websocket.BinaryMessage, append([]byte{chanStatus}, b...))
				_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
				return
			}
		}
	}))
}

func TestStreamExec(t *testing.T) {
	srv := peer(t, 3)
	defer srv.Close()
	stdin, stdinW := io.Pipe()
	a := &attachIO{stdin: stdin, stdout: &buf{}, stderr: &buf{}, tty: true, resize: make(chan api.TermSize, 1)}
	a.resize <- api.TermSize{Width: 120, Height: 40}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		_, _ = stdinW.Write([]byte("hello exec"))
		// Close stdin only once the peer has seen the resize and the input.
		for !strings.Contains(a.stderr.String(), "Width") || a.stdout.String() == "" {
			time.Sleep(5 * time.Millisecond)
		}
		stdinW.Close()
	}()
	err := StreamExec(ctx, websocket.DefaultDialer, "ws"+strings.TrimPrefix(srv.URL, "http"), a)
	var exit utilexec.ExitError
	if !errors.As(err, &exit) || exit.ExitStatus() != 3 {
		t.Fatalf("got %v, want exit code 3", err)
	}
	if a.stdout.String() != "HELLO EXEC" {
		t.Errorf("stdout %q", a.stdout.String())
	}
	if !strings.Contains(a.stderr.String(), `"Width":120`) {
		t.Errorf("resize not forwarded: stderr %q", a.stderr.String())
	}

	srv0 := peer(t, 0)
	defer srv0.Close()
	a = &attachIO{stdin: strings.NewReader(""), stdout: &buf{}, stderr: &buf{}}
	if err := StreamExec(ctx, websocket.DefaultDialer, "ws"+strings.TrimPrefix(srv0.URL, "http"), a); err != nil {
		t.Fatalf("exit 0: %v", err)
	}
}

func TestStreamExecRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	a := &attachIO{stdout: &buf{}, stderr: &buf{}}
	err := StreamExec(context.Background(), websocket.DefaultDialer, "ws"+strings.TrimPrefix(srv.URL, "http"), a)
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("got %v", err)
	}
}
