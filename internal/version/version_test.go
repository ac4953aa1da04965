package version

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestKubernetesOf(t *testing.T) {
	for in, want := range map[string]string{
		"v0.35.4":         "v1.35.4",
		"v0.36.0-alpha.1": "v1.36.0-alpha.1",
		"v1.2.3":          "v1.0.0-unknown",
		"v0.x":            "v1.0.0-unknown",
		"":                "v1.0.0-unknown",
	} {
		if got := kubernetesOf(in); got != want {
			t.Errorf("kubernetesOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReleaseWins(t *testing.T) {
	old := release
	t.Cleanup(func() { release = old })
	release = "v9.9.9"
	if Version() != "v9.9.9" || !strings.HasSuffix(Kubelet(), "-vnode-v9.9.9") {
		t.Fatalf("Version() = %q, Kubelet() = %q; want the -X release", Version(), Kubelet())
	}
	if !strings.HasPrefix(String(), "v9.9.9 (Kubernetes v1.") {
		t.Fatalf("String() = %q", String())
	}
}

func TestKubernetesFromBuildInfo(t *testing.T) {
	// Test binaries record no dependencies, so build a small program as a
	// release would be built, with -X, and ask it.
	if testing.Short() {
		t.Skip("builds a binary")
	}
	bin := filepath.Join(t.TempDir(), "printversion")
	build := exec.Command("go", "build", "-ldflags", "-X github.com/vnode-project/vnode/internal/version.release=v0.0.7", "-o", bin, "./testdata/printversion")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); !strings.HasPrefix(got, "v1.35.") || !strings.HasSuffix(got, "-vnode-v0.0.7") {
		t.Fatalf("the kubelet version is %q; want v1.35.x (k8s.io/apimachinery in go.mod) -vnode-v0.0.7", got)
	}
}
