package emulator

import (
	"os"
	"os/exec"
	"testing"
)

// A process that has barely run (an idle shell between its commands) has
// a CPU time above 0: metrics-server drops a container whose counter is 0,
// so with whole ticks kubectl top showed no pod for minutes.
func TestUsageCountsLessThanATick(t *testing.T) {
	if _, err := os.Stat("/proc/self/schedstat"); err != nil {
		t.Skip("this kernel has no schedstat (CONFIG_SCHED_INFO)")
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if cpu, _ := usage(cmd.Process.Pid); cpu == 0 {
		t.Fatal("a started process used 0 ns of CPU")
	}
}
