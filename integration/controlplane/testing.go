package controlplane

import (
	"context"
	"testing"
	"time"
)

// StartForTest starts a control plane in t's temporary directory and stops
// it when t ends, printing every component's log tail if t failed. Cleanups
// also run when the test panics; a test binary killed outright takes the
// components with it through their parent-death signal.
func StartForTest(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	// The first run on a fresh machine may compile the control plane.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	cp, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("starting the control plane: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for name, tail := range cp.LogTails(40) {
				t.Logf("--- last lines of %s's log ---\n%s", name, tail)
			}
		}
		cp.Stop()
	})
	return cp
}
