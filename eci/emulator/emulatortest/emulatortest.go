// Package emulatortest starts the ECI emulator for tests. It is kept apart
// from the emulator so that the eci-emulator binary links no test code.
package emulatortest

import (
	"testing"

	"github.com/vnode-project/vnode/eci/emulator"
)

// StartForTest serves an emulator on 127.0.0.1 for t and stops it (and its
// processes) when t ends. It returns the emulator and its host:port.
func StartForTest(t testing.TB, cfg emulator.Config) (*emulator.Emulator, string) {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	e, addr, stop, err := emulator.StartLocal(cfg)
	if err != nil {
		t.Fatalf("starting the ECI emulator: %v", err)
	}
	t.Cleanup(stop)
	return e, addr
}
