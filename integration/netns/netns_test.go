package netns

import (
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// A child started with a parent-death signal (as the control plane's
// processes are) is tied to the thread that forked it. Entering a
// namespace must not cost that thread its life, or the child dies with
// it: kube-apiserver did, at random, when a test opened a listener in a
// test host.
func TestDoKeepsThreadsAlive(t *testing.T) {
	h := New(t, 59)
	var children []*exec.Cmd
	for range 8 {
		cmd := exec.Command("sleep", "60")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		children = append(children, cmd)
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	for range 100 {
		l, err := h.Listen(0)
		if err != nil {
			t.Fatal(err)
		}
		_ = l.Close()
	}
	time.Sleep(100 * time.Millisecond) // a parent-death signal is delivered at once; allow for scheduling
	for i, c := range children {
		if err := c.Process.Signal(syscall.Signal(0)); err != nil {
			t.Fatalf("child %d died: %v", i, err)
		}
		var ws syscall.WaitStatus
		if pid, _ := syscall.Wait4(c.Process.Pid, &ws, syscall.WNOHANG, nil); pid == c.Process.Pid {
			t.Fatalf("child %d exited: %v", i, ws)
		}
	}
}
