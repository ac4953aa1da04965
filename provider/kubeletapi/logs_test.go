package kubeletapi

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"

	"github.com/vnode-project/vnode/eci/model"
)

// memLog is a LogSource over an in-memory, growing log with kubelet
// semantics, recording the calls made to it.
type memLog struct {
	mu    sync.Mutex
	lines []string // timestamped
	calls []model.LogRequest
	done  bool
}

func (m *memLog) add(ts time.Time, text string) {
	m.mu.Lock()
	m.lines = append(m.lines, ts.UTC().Format(time.RFC3339Nano)+" "+text)
	m.mu.Unlock()
}

func (m *memLog) ContainerLog(_ context.Context, req model.LogRequest) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, req)
	if req.Tail > MaxTailLines || req.LimitBytes > MaxLimitBytes {
		return "", fmt.Errorf("InvalidParameter: over ECI's limit: %+v", req)
	}
	var sel []string
	for _, l := range m.lines {
		ts, _ := time.Parse(time.RFC3339Nano, strings.SplitN(l, " ", 2)[0])
		if !ts.Before(req.Since) {
			sel = append(sel, l)
		}
	}
	if req.Tail > 0 && len(sel) > req.Tail {
		sel = sel[len(sel)-req.Tail:]
	}
	out := ""
	if len(sel) > 0 {
		out = strings.Join(sel, "\n") + "\n"
	}
	if req.LimitBytes > 0 && len(out) > req.LimitBytes {
		out = out[:req.LimitBytes] // may cut a line, as a byte limit does
	}
	return out, nil
}

func (m *memLog) terminated(context.Context) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.done, nil
}

func readAllString(t *testing.T, rc io.ReadCloser) string {
	t.Helper()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestLogsOptions(t *testing.T) {
	m := &memLog{}
	for i := 0; i < 5000; i++ {
		// Several lines share each second, as real logs do.
		m.add(t0.Add(time.Duration(i/3)*time.Second), fmt.Sprintf("line %d", i))
	}
	l := &Logs{Source: m}
	ctx := context.Background()

	rc, _ := l.Stream(ctx, "eci-1", "c", api.ContainerLogOpts{Tail: 3})
	if got := readAllString(t, rc); got != "line 4997\nline 4998\nline 4999\n" {
		t.Errorf("tail 3: %q", got)
	}
	// A tail past ECI's 2000-line limit pages instead of truncating.
	rc, _ = l.Stream(ctx, "eci-1", "c", api.ContainerLogOpts{Tail: 4500})
	got := strings.Split(strings.TrimSuffix(readAllString(t, rc), "\n"), "\n")
	if len(got) != 4500 || got[0] != "line 500" || got[4499] != "line 4999" {
		t.Errorf("tail 4500: %d lines, %q .. %q", len(got), got[0], got[len(got)-1])
	}
	// Everything, paged by bytes, nothing doubled or lost at page edges.
	rc, _ = l.Stream(ctx, "eci-1", "c", api.ContainerLogOpts{})
	got = strings.Split(strings.TrimSuffix(readAllString(t, rc), "\n"), "\n")
	if len(got) != 5000 {
		t.Fatalf("all: %d lines", len(got))
	}
	for i, s := range got {
		if s != fmt.Sprintf("line %d", i) {
			t.Fatalf("all: line %d is %q", i, s)
		}
	}
	rc, _ = l.Stream(ctx, "eci-1", "c", api.ContainerLogOpts{SinceTime: t0.Add(1666 * time.Second), Timestamps: true})
	got = strings.Split(strings.TrimSuffix(readAllString(t, rc), "\n"), "\n")
	if len(got) != 2 || !strings.HasPrefix(got[0], "2026-01-01T00:27:46Z line 4998") {
		t.Errorf("since-time with timestamps: %q", got)
	}
	rc, _ = l.Stream(ctx, "eci-1", "c", api.ContainerLogOpts{Tail: 3, LimitBytes: 12})
	if got := readAllString(t, rc); got != "line 4997\nli" {
		t.Errorf("limit-bytes: %q", got)
	}
	rc, _ = l.Stream(ctx, "eci-1", "c", api.ContainerLogOpts{Previous: true, Tail: 1})
	readAllString(t, rc)
	if last := m.calls[len(m.calls)-1]; !last.Previous {
		t.Errorf("previous not passed: %+v", last)
	}
}

// -f: lines written while following arrive once each, in order, and the
// stream ends after the container terminates.
func TestLogsFollow(t *testing.T) {
	m := &memLog{}
	m.add(t0, "before")
	l := &Logs{Source: m, Poll: 5 * time.Millisecond, Terminated: m.terminated}
	rc, err := l.Stream(context.Background(), "eci-1", "c", api.ContainerLogOpts{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for i := 0; i < 200; i++ {
			// Bursts within one timestamp test the de-duplication.
			m.add(t0.Add(time.Duration(1+i/10)*time.Second), fmt.Sprintf("n%d", i))
			if i%7 == 0 {
				time.Sleep(2 * time.Millisecond)
			}
		}
		m.add(t0.Add(time.Hour), "n200")
		m.add(t0.Add(time.Hour), "n200") // a real duplicate line is kept
		m.mu.Lock()
		m.done = true
		m.mu.Unlock()
	}()
	got := strings.Split(strings.TrimSuffix(readAllString(t, rc), "\n"), "\n")
	want := []string{"before"}
	for i := 0; i < 200; i++ {
		want = append(want, fmt.Sprintf("n%d", i))
	}
	want = append(want, "n200", "n200")
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("followed %d lines, want %d:\n%v", len(got), len(want), got)
	}
}

func TestLogsFollowEndsWhenClientLeaves(t *testing.T) {
	m := &memLog{}
	m.add(t0, "x")
	l := &Logs{Source: m, Poll: 5 * time.Millisecond, Terminated: m.terminated}
	ctx, cancel := context.WithCancel(context.Background())
	rc, _ := l.Stream(ctx, "eci-1", "c", api.ContainerLogOpts{Follow: true})
	buf := make([]byte, 2)
	if _, err := io.ReadFull(rc, buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, rc); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not end after the client went away")
	}
}

// --limit-bytes of a log larger than one ECI page reads only the pages it
// needs.
func TestLimitBytesStopsPaging(t *testing.T) {
	m := &memLog{}
	for i := 0; i < 60000; i++ { // about 2.8 MB: three pages
		m.add(t0.Add(time.Duration(i)*time.Millisecond), fmt.Sprintf("line %06d", i))
	}
	l := &Logs{Source: m}
	rc, _ := l.Stream(context.Background(), "eci-1", "c", api.ContainerLogOpts{LimitBytes: 100})
	if got := readAllString(t, rc); got != firstBytes(m, 100) {
		t.Fatalf("limit-bytes 100: %q", got)
	}
	if len(m.calls) != 1 {
		t.Fatalf("%d calls for the first 100 bytes, want 1", len(m.calls))
	}
	m.calls = nil
	rc, _ = l.Stream(context.Background(), "eci-1", "c", api.ContainerLogOpts{})
	if got := readAllString(t, rc); strings.Count(got, "\n") != 60000 {
		t.Fatalf("whole log: %d lines", strings.Count(got, "\n"))
	}
	if len(m.calls) < 3 {
		t.Fatalf("the whole log in %d calls: it is three pages", len(m.calls))
	}
}

// firstBytes is the first n bytes of m's log without timestamps.
func firstBytes(m *memLog, n int) string {
	var b strings.Builder
	for _, l := range m.lines {
		b.WriteString(strings.SplitN(l, " ", 2)[1] + "\n")
		if b.Len() >= n {
			break
		}
	}
	return b.String()[:n]
}
