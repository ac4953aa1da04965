package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vnode-project/vnode/integration/testio"
)

// TestKubectlStreamsThroughTunnel: the long-lived and interactive kubectl
// commands work through the tunnel as on a reachable node: logs -f
// delivers lines as they are written, exec -it follows a terminal resize,
// and cp carries a few MiB each way intact.
func TestKubectlStreamsThroughTunnel(t *testing.T) {
	const name = "vn-streams"
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e.startNode(t, name)
	e.startAgent(t, name)
	waitFor(ctx, t, "the agent's session", func() bool { return e.server.cur.HasSession(name) })
	const lines = 12
	e.runPod(ctx, t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "shell", Namespace: "streams"},
		Spec: corev1.PodSpec{NodeName: name, RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{
			{Name: "main", Image: "busybox", Command: []string{"/bin/sh", "-c", "sleep 3600"}},
			{Name: "counter", Image: "busybox", Command: []string{"/bin/sh", "-c",
				fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo "count $i"; i=$((i+1)); sleep 0.5; done`, lines)}},
		}}})

	t.Run("logs -f delivers lines while following", func(t *testing.T) {
		fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
		defer fcancel()
		cmd := e.cp.Kubectl(fctx, "-n", "streams", "logs", "-f", "shell", "-c", "counter")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var got []string
		var at []time.Time
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			got, at = append(got, sc.Text()), append(at, time.Now())
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("logs -f did not end by itself when the container did: %v", err)
		}
		var want []string
		for i := 0; i < lines; i++ {
			want = append(want, fmt.Sprintf("count %d", i))
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("followed %q, want %q", got, want)
		}
		// Buffered somewhere on the way, the lines would arrive together
		// at the end; followed, they arrive as the container writes them
		// (0.5s apart).
		spread := at[len(at)-1].Sub(at[0])
		t.Logf("lines arrived over %s", spread.Round(time.Millisecond))
		if spread < time.Second {
			t.Fatalf("all %d lines arrived within %s: not followed live", lines, spread)
		}
	})

	t.Run("exec -it follows a terminal resize", func(t *testing.T) {
		cmd := e.cp.Kubectl(ctx, "-n", "streams", "exec", "-it", "shell", "-c", "main", "--",
			"/bin/sh", "-c", `stty size; while read x; do [ "$x" = q ] && break; stty size; done; echo bye-$((6*7))`)
		tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 33, Cols: 101})
		if err != nil {
			t.Fatal(err)
		}
		defer tty.Close()
		out := &testio.LockedBuffer{}
		done := make(chan struct{})
		go func() { _, _ = io.Copy(out, tty); close(done) }()
		poll := func(want string, nudge func()) {
			t.Helper()
			deadline := time.Now().Add(20 * time.Second)
			for !strings.Contains(out.String(), want) {
				if time.Now().After(deadline) {
					t.Fatalf("no %q from the terminal session in 20s: %q", want, out.String())
				}
				if nudge != nil {
					nudge()
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		poll("33 101", nil)
		// Resizing the terminal sends kubectl SIGWINCH; the new size travels
		// through the tunnel on its own stream. Each Enter makes the shell
		// print its size again until the new one shows.
		if err := pty.Setsize(tty, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
			t.Fatal(err)
		}
		poll("40 120", func() { _, _ = tty.Write([]byte("\r")) })
		_, _ = tty.Write([]byte("q\r"))
		if err := cmd.Wait(); err != nil {
			t.Fatalf("exec -it: %v\n%q", err, out.String())
		}
		<-done
		if !strings.Contains(out.String(), "bye-42") {
			t.Fatalf("terminal session printed %q", out.String())
		}
	})

	t.Run("cp both ways", func(t *testing.T) {
		dir := t.TempDir()
		src := filepath.Join(dir, "big.bin")
		data := make([]byte, 6<<20)
		_, _ = rand.Read(data)
		if err := os.WriteFile(src, data, 0o644); err != nil {
			t.Fatal(err)
		}
		kubectl := func(args ...string) string {
			t.Helper()
			var out, errb bytes.Buffer
			cmd := e.cp.Kubectl(ctx, append([]string{"-n", "streams"}, args...)...)
			cmd.Stdout, cmd.Stderr = &out, &errb
			if err := cmd.Run(); err != nil {
				t.Fatalf("kubectl %v: %v %s", args, err, errb.String())
			}
			return out.String()
		}
		remote := "/tmp/in-pod.bin" // the pod's own /tmp: the process runtime isolates its files
		kubectl("cp", src, "shell:"+remote, "-c", "main")
		if sum := strings.Fields(kubectl("exec", "shell", "-c", "main", "--", "sha256sum", remote)); len(sum) == 0 || sum[0] != testio.SHA256(data) {
			t.Fatalf("cp in: checksums differ: %v vs %s", sum, testio.SHA256(data))
		}
		back := filepath.Join(dir, "back.bin")
		kubectl("cp", "shell:"+remote, back, "-c", "main")
		got, err := os.ReadFile(back)
		if err != nil {
			t.Fatal(err)
		}
		if testio.SHA256(got) != testio.SHA256(data) {
			t.Fatalf("cp out: checksums differ: %s vs %s (%d bytes)", testio.SHA256(got), testio.SHA256(data), len(got))
		}
	})
}
