package local

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// An add-on's token is replaced at 80% of its life, a failed request is
// retried, and the file always holds a whole token, 0600.
func TestRenewToken(t *testing.T) {
	start := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(start)
	path := filepath.Join(t.TempDir(), "addon.token")
	if err := writeToken(path, "token-0"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	calls, fail := 0, false
	request := func(context.Context) (string, time.Time, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if fail {
			return "", time.Time{}, errors.New("API server unreachable")
		}
		return "token-" + string(rune('0'+calls)), clk.Now().Add(time.Hour), nil
	}
	warned := make(chan error, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		renewToken(ctx, clk, path, request, start, start.Add(time.Hour), time.Minute, func(err error) { warned <- err })
		close(done)
	}()
	defer func() { cancel(); <-done }()

	waitToken := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			b, _ := os.ReadFile(path)
			if string(b) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("token file holds %q, want %q", b, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	step := func(d time.Duration) {
		t.Helper()
		for !clk.HasWaiters() {
			time.Sleep(time.Millisecond)
		}
		clk.Step(d)
	}

	step(47 * time.Minute) // before 80% of the hour: nothing
	if b, _ := os.ReadFile(path); string(b) != "token-0" {
		t.Fatalf("renewed early: %q", b)
	}
	step(time.Minute) // 48 minutes: renewed
	waitToken("token-1")

	mu.Lock()
	fail = true
	mu.Unlock()
	step(48 * time.Minute)
	if err := <-warned; err == nil {
		t.Fatal("no warning for a failed renewal")
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	step(time.Minute) // retried a minute later
	waitToken("token-3")
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode: %v, %v", fi.Mode(), err)
	}
}
