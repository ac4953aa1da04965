package sandbox

import (
	"os"
	"path/filepath"
	"strings"
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
