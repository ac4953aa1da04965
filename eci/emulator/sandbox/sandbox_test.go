package sandbox

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Where it runs (as root, on Linux with overlayfs and user namespaces)
// an instance can be set up and entered.
func TestProbe(t *testing.T) {
	if err := Probe(); err != nil {
		t.Fatal(err)
	}
}

// A volume's source is resolved beneath the instance's directory: a link
// a pod left in its emptyDir (used as a subPath) cannot bind a host path
// into an instance.
func TestVolumeSourceStaysInTheInstance(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "volumes", "v"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(dir, "volumes", "v", "link")); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{"volumes/v/link", "../" + filepath.Base(dir)} {
		in, err := Start(dir, Spec{Hostname: "h", Mounts: []Mount{{Source: src, Target: "/x"}}})
		if err == nil {
			in.Stop()
			t.Fatalf("source %s was mounted", src)
		}
		if !strings.Contains(err.Error(), "opening volume source "+src) {
			t.Errorf("source %s: %v", src, err)
		}
	}
}

// Run as an unprivileged uid, Probe refuses and says why.
func TestProbeRefusesUnprivileged(t *testing.T) {
	if os.Getenv("SANDBOX_TEST_UNPRIVILEGED") != "" {
		if err := Probe(); !errors.Is(err, ErrNotRoot) {
			t.Fatalf("Probe as uid %d: %v", os.Geteuid(), err)
		}
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("already unprivileged: TestProbe shows the refusal")
	}
	// The test binary, where an unprivileged uid may run it.
	dir, err := os.MkdirTemp("", "sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "sandbox.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestProbeRefusesUnprivileged$", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = []string{"SANDBOX_TEST_UNPRIVILEGED=1", "PATH=" + os.Getenv("PATH")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	// -test.v: the child says it ran the test, not that none matched.
	cmd.Args = append(cmd.Args, "-test.v")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestProbeRefusesUnprivileged") {
		t.Fatalf("as uid 65534: %v\n%s", err, out)
	}
}
