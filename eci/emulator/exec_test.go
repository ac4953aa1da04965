package emulator

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	sdkeci "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"
	"github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// execConn is a client end of an exec session in the emulator's
// v4.channel.k8s.io framing.
type execConn struct {
	t      *testing.T
	conn   *websocket.Conn
	stdout strings.Builder
	stderr strings.Builder
	status *metav1.Status
}

// startExec asks ExecContainerCommand for a session and dials it.
func startExec(t *testing.T, c *sdkeci.Client, id string, cmd []string, set func(*sdkeci.ExecContainerCommandRequest)) *execConn {
	t.Helper()
	x := sdkeci.CreateExecContainerCommandRequest()
	x.Scheme, x.ContainerGroupId, x.ContainerName = "http", id, "app"
	b, _ := json.Marshal(cmd)
	x.Command = string(b)
	if set != nil {
		set(x)
	}
	xr, err := c.ExecContainerCommand(x)
	if err != nil {
		t.Fatalf("ExecContainerCommand %v: %v", cmd, err)
	}
	conn, _, err := websocket.DefaultDialer.Dial(xr.WebSocketUri, nil)
	if err != nil {
		t.Fatalf("dialling %s: %v", xr.WebSocketUri, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &execConn{t: t, conn: conn}
}

func (x *execConn) send(ch byte, b []byte) {
	x.t.Helper()
	if err := x.conn.WriteMessage(websocket.BinaryMessage, append([]byte{ch}, b...)); err != nil {
		x.t.Fatalf("sending on channel %d: %v", ch, err)
	}
}

func (x *execConn) resize(w, h int) {
	x.send(chanResize, []byte(`{"Width":`+strconv.Itoa(w)+`,"Height":`+strconv.Itoa(h)+`}`))
}

// readUntil reads messages until cond holds on stdout or the status
// arrives; false if the status came first.
func (x *execConn) readUntil(cond func(stdout string) bool) bool {
	x.t.Helper()
	_ = x.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for !cond(x.stdout.String()) {
		if x.status != nil {
			return false
		}
		_, msg, err := x.conn.ReadMessage()
		if err != nil {
			x.t.Fatalf("the session ended without a status: %v (stdout %q)", err, x.stdout.String())
		}
		switch msg[0] {
		case chanStdout:
			x.stdout.Write(msg[1:])
		case chanStderr:
			x.stderr.Write(msg[1:])
		case chanStatus:
			var st metav1.Status
			if err := json.Unmarshal(msg[1:], &st); err != nil {
				x.t.Fatalf("status %q: %v", msg[1:], err)
			}
			x.status = &st
		default:
			x.t.Fatalf("a message on channel %d", msg[0])
		}
	}
	return true
}

// exitCode waits for the status and returns the exit code it carries.
func (x *execConn) exitCode() int {
	x.t.Helper()
	x.readUntil(func(string) bool { return false })
	st := x.status
	if st.Status == metav1.StatusSuccess {
		return 0
	}
	if st.Status != metav1.StatusFailure || st.Reason != "NonZeroExitCode" || st.Details == nil {
		x.t.Fatalf("status %+v", st)
	}
	for _, cause := range st.Details.Causes {
		if cause.Type == "ExitCode" {
			n, err := strconv.Atoi(cause.Message)
			if err != nil {
				x.t.Fatalf("exit code %q", cause.Message)
			}
			return n
		}
	}
	x.t.Fatalf("no ExitCode cause in %+v", st)
	return -1
}

// Exec with TTY runs the command on a terminal of the client's size that
// follows resizes, takes stdin through it, and delivers the exit code;
// without TTY, stdin reaches the command until the client closes it (or
// not at all with Stdin=false), and Sync answers at once.
func TestExecTTYAndStdin(t *testing.T) {
	t.Parallel()
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "process"})
	c := sdkClient(t, ep, testID, testSecret)
	resp, err := c.CreateContainerGroup(groupRequest("exec", "Always", sh("sleep 60")...))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.ContainerGroupId
	waitFor(t, "the container running", func() bool {
		g := describeGroup(t, c, "http", id)
		return g.Status == "Running" && g.Containers[0].CurrentState.State == "Running"
	})

	t.Run("tty", func(t *testing.T) {
		x := startExec(t, c, id, sh(`tty; stty size; read line; stty size; echo "got:$line"; exit 3`),
			func(r *sdkeci.ExecContainerCommandRequest) { r.TTY = requests.NewBoolean(true) })
		x.resize(100, 33) // before the start: the terminal's first size
		if !x.readUntil(func(out string) bool { return strings.Contains(out, "33 100") }) {
			t.Fatalf("no first size: %q", x.stdout.String())
		}
		x.resize(120, 40)
		x.send(chanStdin, []byte("hello\r"))
		if code := x.exitCode(); code != 3 {
			t.Errorf("exit code %d, want 3", code)
		}
		out := x.stdout.String()
		if !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "40 120") || !strings.Contains(out, "got:hello") {
			t.Errorf("terminal output %q", out)
		}
		// A terminal joins stderr to stdout and turns \n into \r\n.
		if x.stderr.Len() != 0 || !strings.Contains(out, "got:hello\r\n") {
			t.Errorf("stdout %q stderr %q", out, x.stderr.String())
		}
	})
	t.Run("tty end of input", func(t *testing.T) {
		x := startExec(t, c, id, []string{"cat"}, func(r *sdkeci.ExecContainerCommandRequest) { r.TTY = requests.NewBoolean(true) })
		x.resize(80, 24)
		x.send(chanStdin, []byte("typed\r"))
		if !x.readUntil(func(out string) bool { return strings.Count(out, "typed") == 2 }) { // the echo and cat's copy
			t.Fatalf("cat on a terminal: %q", x.stdout.String())
		}
		x.send(chanClose, []byte{chanStdin})
		if code := x.exitCode(); code != 0 {
			t.Errorf("exit code %d after end of input", code)
		}
	})
	t.Run("not a tty", func(t *testing.T) {
		x := startExec(t, c, id, sh(`if tty -s; then echo tty; else echo no-tty; fi; cat; echo err >&2; exit 5`), nil)
		x.send(chanStdin, []byte("part-1 "))
		x.send(chanStdin, []byte("part-2\n"))
		x.send(chanClose, []byte{chanStdin})
		if code := x.exitCode(); code != 5 {
			t.Errorf("exit code %d, want 5", code)
		}
		if x.stdout.String() != "no-tty\npart-1 part-2\n" || x.stderr.String() != "err\n" {
			t.Errorf("stdout %q stderr %q", x.stdout.String(), x.stderr.String())
		}
	})
	t.Run("stdin off", func(t *testing.T) {
		x := startExec(t, c, id, sh(`cat; echo eof`), func(r *sdkeci.ExecContainerCommandRequest) { r.QueryParams["Stdin"] = "false" })
		x.send(chanStdin, []byte("ignored\n"))
		if code := x.exitCode(); code != 0 || x.stdout.String() != "eof\n" {
			t.Errorf("exit %d stdout %q", code, x.stdout.String())
		}
	})
	t.Run("sync", func(t *testing.T) {
		x := sdkeci.CreateExecContainerCommandRequest()
		x.Scheme, x.ContainerGroupId, x.ContainerName, x.Command = "http", id, "app", `["/bin/sh","-c","echo synced; echo $HOSTNAME"]`
		x.QueryParams["Sync"] = "true"
		xr, err := c.ExecContainerCommand(x)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ SyncResponse, WebSocketUri string }
		if err := json.Unmarshal(xr.GetHttpContentBytes(), &body); err != nil || body.SyncResponse != "synced\nexec\n" || body.WebSocketUri != "" {
			t.Errorf("sync answer %s (%v)", xr.GetHttpContentString(), err)
		}
	})
	t.Run("errors", func(t *testing.T) {
		long := make([]string, 21)
		for i := range long {
			long[i] = "x"
		}
		longJSON, _ := json.Marshal(long)
		for name, tc := range map[string]struct {
			set  func(*sdkeci.ExecContainerCommandRequest)
			code string
		}{
			"no command":       {func(r *sdkeci.ExecContainerCommandRequest) { r.Command = "" }, "MissingParameter"},
			"not JSON":         {func(r *sdkeci.ExecContainerCommandRequest) { r.Command = "ls -l" }, "InvalidParameter"},
			"empty array":      {func(r *sdkeci.ExecContainerCommandRequest) { r.Command = "[]" }, "InvalidParameter"},
			"21 elements":      {func(r *sdkeci.ExecContainerCommandRequest) { r.Command = string(longJSON) }, "InvalidParameter"},
			"element over 256": {func(r *sdkeci.ExecContainerCommandRequest) { r.Command = `["` + strings.Repeat("a", 257) + `"]` }, "InvalidParameter"},
			"sync with tty": {func(r *sdkeci.ExecContainerCommandRequest) {
				r.TTY = requests.NewBoolean(true)
				r.QueryParams["Sync"] = "true"
			}, "InvalidParameter"},
			"unknown container": {func(r *sdkeci.ExecContainerCommandRequest) { r.ContainerName = "ghost" }, "InvalidContainer.NotFound"},
			"unknown group":     {func(r *sdkeci.ExecContainerCommandRequest) { r.ContainerGroupId = "eci-nope" }, "InvalidContainerGroup.NotFound"},
		} {
			x := sdkeci.CreateExecContainerCommandRequest()
			x.Scheme, x.ContainerGroupId, x.ContainerName, x.Command = "http", id, "app", `["true"]`
			tc.set(x)
			_, err := c.ExecContainerCommand(x)
			if se := serverError(t, err); se.ErrorCode() != tc.code {
				t.Errorf("%s: %s %s, want %s", name, se.ErrorCode(), se.Message(), tc.code)
			}
		}
	})
}
