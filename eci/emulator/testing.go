package emulator

import (
	"context"
	"net"
	"testing"
)

// StartForTest serves an emulator on 127.0.0.1 for t and stops it (and its
// processes) when t ends. It returns the emulator and its host:port.
func StartForTest(t testing.TB, cfg Config) (*Emulator, string) {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatalf("starting the ECI emulator: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = e.Serve(ctx, l); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = e.Close()
	})
	return e, l.Addr().String()
}
