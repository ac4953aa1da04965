package emulator

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// A process that has barely run (an idle shell between its commands) has
// a CPU time above 0: metrics-server drops a container whose counter is 0,
// so with whole ticks kubectl top showed no pod for minutes.
func TestUsageCountsLessThanATick(t *testing.T) {
	if _, err := os.Stat("/proc/self/schedstat"); err != nil {
		t.Skip("this kernel has no schedstat (CONFIG_SCHED_INFO)")
	}
	// It has run once it has written its line (then it idles in sleep).
	cmd := exec.Command("sh", "-c", "echo started; exec sleep 60")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	// The kernel adds a task's run time up when it leaves the CPU: until
	// then, in its first slice, schedstat says 0. Wait until it sleeps.
	pid := strconv.Itoa(cmd.Process.Pid)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if f := statFields(pid); len(f) > 0 && f[0] == "S" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %s never went to sleep", pid)
		}
		time.Sleep(time.Millisecond)
	}
	if cpu, _ := usage(cmd.Process.Pid); cpu == 0 {
		t.Fatal("a started process used 0 ns of CPU")
	}
}
