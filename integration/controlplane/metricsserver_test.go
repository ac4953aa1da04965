package controlplane

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// metrics-server is a build set of its own: its folder, and a key that
// only its module changes, so adding or bumping it leaves a cached control
// plane (minutes of building) valid, and the other way round.
func TestBuildSetsAreIndependent(t *testing.T) {
	src := t.TempDir()
	for _, m := range []string{"kubernetes", "etcd", "metrics-server"} {
		for _, f := range []string{"go.mod", "go.sum"} {
			if err := os.MkdirAll(filepath.Join(src, m), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(src, m, f), []byte(m+f), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	keys := func() (cp, ms string) {
		t.Helper()
		ctx := context.Background()
		cp, err := buildKey(ctx, "go", src, controlPlaneSet)
		if err != nil {
			t.Fatal(err)
		}
		ms, err = buildKey(ctx, "go", src, metricsServerSet)
		if err != nil {
			t.Fatal(err)
		}
		return cp, ms
	}
	cp1, ms1 := keys()
	if err := os.WriteFile(filepath.Join(src, "metrics-server", "go.sum"), []byte("bumped"), 0o644); err != nil {
		t.Fatal(err)
	}
	cp2, ms2 := keys()
	if cp1 != cp2 || ms1 == ms2 {
		t.Fatalf("bumping metrics-server changed the control plane's key: %v; changed its own: %v", cp1 != cp2, ms1 != ms2)
	}
	if err := os.WriteFile(filepath.Join(src, "kubernetes", "go.sum"), []byte("bumped"), 0o644); err != nil {
		t.Fatal(err)
	}
	if cp3, ms3 := keys(); cp3 == cp2 || ms3 != ms2 {
		t.Fatalf("bumping Kubernetes changed metrics-server's key: %v; changed the control plane's: %v", ms3 != ms2, cp3 != cp2)
	}
	if controlPlaneSet.dir == metricsServerSet.dir {
		t.Fatalf("both sets build into %s", controlPlaneSet.dir)
	}
}
