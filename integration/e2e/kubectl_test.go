package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/vnode-project/vnode/integration/testio"
)

// kubectl logs, exec and cp reach the pod's ECI instance through the real
// API server and the virtual node's kubelet API.
func TestKubectlLogsExecCp(t *testing.T) {
	e := newEnv(t, "process")
	n := e.startNode(t, "vn-kubectl")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := e.cp.CreateNamespace(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ticker", Namespace: "k", Labels: map[string]string{"app": "ticker"}},
		Spec: corev1.PodSpec{NodeName: n.name, RestartPolicy: corev1.RestartPolicyNever, Tolerations: []corev1.Toleration{vkToleration()}, Containers: []corev1.Container{
			{Name: "main", Image: "busybox", Command: []string{"/bin/sh", "-c", `i=0; while [ $i -lt 6 ]; do echo "tick $i"; i=$((i+1)); sleep 1; done; sleep 3600`}},
			{Name: "counter", Image: "busybox", Command: []string{"/bin/sh", "-c", `i=0; while [ $i -lt 8 ]; do echo "count $i"; i=$((i+1)); sleep 1; done`}},
			{Name: "side", Image: "busybox", Command: []string{"/bin/sh", "-c", "echo side-car up; sleep 3600"}},
		}}}
	if _, err := e.cp.Client.CoreV1().Pods("k").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPods(ctx, t, e.cp.Client, "k", "app=ticker", time.Minute, allRunning(1))
	kubectl := func(t *testing.T, stdin []byte, args ...string) (string, string, error) {
		t.Helper()
		cmd := e.cp.Kubectl(ctx, append([]string{"-n", "k"}, args...)...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if stdin != nil {
			cmd.Stdin = bytes.NewReader(stdin)
		}
		err := cmd.Run()
		return out.String(), errb.String(), err
	}

	t.Run("logs -f follows until the lines stop", func(t *testing.T) {
		out, stderr, err := kubectl(t, nil, "logs", "ticker", "-c", "main", "--tail=-1")
		if err != nil {
			t.Fatalf("kubectl logs: %v %s", err, stderr)
		}
		if !strings.HasPrefix(out, "tick 0\n") {
			t.Fatalf("logs %q", out)
		}
		// The counter prints a line a second, then exits: -f streams every
		// line once, in order, and ends by itself.
		fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
		defer fcancel()
		start := time.Now()
		cmd := e.cp.Kubectl(fctx, "-n", "k", "logs", "-f", "ticker", "-c", "counter")
		var buf bytes.Buffer
		cmd.Stdout = &buf
		if err := cmd.Run(); err != nil {
			t.Fatalf("logs -f did not end by itself: %v (after %s)", err, time.Since(start))
		}
		got := strings.Split(strings.TrimSpace(buf.String()), "\n")
		var want []string
		for i := 0; i < 8; i++ {
			want = append(want, "count "+string(rune('0'+i)))
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("followed %q, want %q", got, want)
		}
	})
	t.Run("logs options and containers", func(t *testing.T) {
		out, _, err := kubectl(t, nil, "logs", "ticker", "-c", "side")
		if err != nil || out != "side-car up\n" {
			t.Fatalf("side container: %q %v", out, err)
		}
		out, _, err = kubectl(t, nil, "logs", "ticker", "-c", "main", "--tail=2")
		if err != nil || out != "tick 4\ntick 5\n" {
			t.Fatalf("--tail=2: %q %v", out, err)
		}
		out, _, err = kubectl(t, nil, "logs", "ticker", "-c", "main", "--timestamps", "--tail=1")
		if err != nil || !strings.HasSuffix(out, "Z tick 5\n") {
			t.Fatalf("--timestamps: %q %v", out, err)
		}
		out, _, err = kubectl(t, nil, "logs", "ticker", "-c", "main", "--limit-bytes=9")
		if err != nil || out != "tick 0\nti" {
			t.Fatalf("--limit-bytes: %q %v", out, err)
		}
		out, _, err = kubectl(t, nil, "logs", "ticker", "-c", "main", "--since=1h")
		if err != nil || !strings.HasPrefix(out, "tick 0\n") || !strings.HasSuffix(out, "tick 5\n") {
			t.Fatalf("--since=1h: %q %v", out, err)
		}
		stamped, _, err := kubectl(t, nil, "logs", "ticker", "-c", "main", "--timestamps")
		var tick3 string
		for _, l := range strings.Split(stamped, "\n") {
			if ts, text, ok := strings.Cut(l, " "); ok && text == "tick 3" {
				tick3 = ts
			}
		}
		if err != nil || tick3 == "" {
			t.Fatalf("no timestamp for tick 3 in %q (%v)", stamped, err)
		}
		// The API carries sinceTime in whole seconds: tick 2 is a second
		// or more before tick 3, so it falls before that second.
		out, _, err = kubectl(t, nil, "logs", "ticker", "-c", "main", "--since-time="+tick3)
		if err != nil || out != "tick 3\ntick 4\ntick 5\n" {
			t.Fatalf("--since-time=%s: %q %v", tick3, out, err)
		}
	})
	t.Run("logs --previous after a restart", func(t *testing.T) {
		crash := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "crash", Namespace: "k", Labels: map[string]string{"app": "crash"}},
			Spec: corev1.PodSpec{NodeName: n.name, RestartPolicy: corev1.RestartPolicyAlways, Tolerations: []corev1.Toleration{vkToleration()},
				Containers: []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"/bin/sh", "-c", "echo run $$; sleep 1; exit 1"}}}}}
		if _, err := e.cp.Client.CoreV1().Pods("k").Create(ctx, crash, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitPods(ctx, t, e.cp.Client, "k", "app=crash", time.Minute, func(ps []corev1.Pod) bool {
			return len(ps) == 1 && len(ps[0].Status.ContainerStatuses) == 1 && ps[0].Status.ContainerStatuses[0].RestartCount >= 1
		})
		prev, _, err := kubectl(t, nil, "logs", "crash", "--previous")
		if err != nil || !strings.HasPrefix(prev, "run ") || strings.Count(prev, "\n") != 1 {
			t.Fatalf("--previous: %q %v", prev, err)
		}
		var cur string
		if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			cur, _, _ = kubectl(t, nil, "logs", "crash")
			return strings.HasPrefix(cur, "run ") && cur != prev, nil
		}); err != nil {
			t.Fatalf("the current run's log %q is the previous run's %q", cur, prev)
		}
	})
	t.Run("exec keeps arguments and exit codes", func(t *testing.T) {
		out, _, err := kubectl(t, nil, "exec", "ticker", "-c", "main", "--", "/bin/sh", "-c", `printf '<%s>' "$@"`, "sh", "a b", "", `q"u'o`)
		if err != nil || out != `<a b><><q"u'o>` {
			t.Fatalf("args: %q %v", out, err)
		}
		_, _, err = kubectl(t, nil, "exec", "ticker", "-c", "main", "--", "/bin/sh", "-c", "exit 3")
		var ee *exec.ExitError
		if !errorsAs(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("exit code: %v", err)
		}
		out, stderr, err := kubectl(t, []byte("from stdin\n"), "exec", "-i", "ticker", "-c", "main", "--", "/bin/sh", "-c", "cat; echo oops >&2")
		if err != nil || out != "from stdin\n" || !strings.Contains(stderr, "oops") {
			t.Fatalf("stdin/stderr: %q %q %v", out, stderr, err)
		}
	})
	t.Run("exec -it under a terminal, with its size", func(t *testing.T) {
		cmd := e.cp.Kubectl(ctx, "-n", "k", "exec", "-it", "ticker", "-c", "main", "--", "/bin/sh", "-c", "stty size; read x; echo got-$x")
		tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 33, Cols: 101})
		if err != nil {
			t.Fatal(err)
		}
		defer tty.Close()
		out := &testio.LockedBuffer{}
		done := make(chan struct{})
		go func() { _, _ = io.Copy(out, tty); close(done) }()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(out.String(), "33 101") && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		_, _ = tty.Write([]byte("hello\r"))
		if err := cmd.Wait(); err != nil {
			t.Fatalf("exec -it: %v\n%q", err, out.String())
		}
		<-done
		if !strings.Contains(out.String(), "33 101") || !strings.Contains(out.String(), "got-hello") {
			t.Fatalf("terminal session printed %q", out.String())
		}
	})
	t.Run("cp both ways", func(t *testing.T) {
		dir := t.TempDir()
		src := filepath.Join(dir, "big.bin")
		data := make([]byte, 10<<20)
		_, _ = rand.Read(data)
		if err := os.WriteFile(src, data, 0o644); err != nil {
			t.Fatal(err)
		}
		remote := "/tmp/in-pod.bin" // the pod's own /tmp: the process runtime isolates its files
		if _, stderr, err := kubectl(t, nil, "cp", src, "ticker:"+remote, "-c", "main"); err != nil {
			t.Fatalf("cp in: %v %s", err, stderr)
		}
		back := filepath.Join(dir, "back.bin")
		if _, stderr, err := kubectl(t, nil, "cp", "ticker:"+remote, back, "-c", "main"); err != nil {
			t.Fatalf("cp out: %v %s", err, stderr)
		}
		got, err := os.ReadFile(back)
		if err != nil {
			t.Fatal(err)
		}
		if testio.SHA256(got) != testio.SHA256(data) {
			t.Fatalf("checksums differ: %s vs %s (%d bytes)", testio.SHA256(got), testio.SHA256(data), len(got))
		}
	})
	t.Run("attach and port-forward say why not", func(t *testing.T) {
		_, stderr, err := kubectl(t, nil, "attach", "ticker", "-c", "main")
		if err == nil || !strings.Contains(stderr, "ECI has no attach API") {
			t.Fatalf("attach: %v %q", err, stderr)
		}
		pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
		defer pcancel()
		pf := e.cp.Kubectl(pctx, "-n", "k", "port-forward", "pod/ticker", "18080:80")
		var pfOut bytes.Buffer
		pf.Stdout, pf.Stderr = &pfOut, &pfOut
		_ = pf.Start()
		time.Sleep(2 * time.Second)
		// port-forward fails at the first connection, not at start.
		cmd := exec.CommandContext(pctx, "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/18080; echo x >&3; sleep 1")
		_ = cmd.Run()
		_ = pf.Wait()
		if !strings.Contains(pfOut.String(), "port-forward is not available") {
			t.Fatalf("port-forward said %q", pfOut.String())
		}
	})
}
