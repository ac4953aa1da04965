package kubeletapi

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"

	"github.com/vnode-project/vnode/eci/model"
)

// genLog is a LogSource over a log of n lines, one per millisecond, that
// it makes up on each call instead of holding: the size of a log does not
// cost the test memory.
type genLog struct {
	n     int
	calls atomic.Int64
}

func (g *genLog) lineAt(i int) string {
	return t0.Add(time.Duration(i)*time.Millisecond).Format(time.RFC3339Nano) + fmt.Sprintf(" line %08d %s", i, strings.Repeat("x", 80))
}

func (g *genLog) ContainerLog(_ context.Context, req model.LogRequest) (string, error) {
	g.calls.Add(1)
	first := 0
	if !req.Since.IsZero() {
		first = max(0, int(req.Since.Sub(t0)/time.Millisecond))
	}
	if req.Tail > 0 {
		first = max(first, g.n-req.Tail)
	}
	limit := req.LimitBytes
	if limit <= 0 {
		limit = MaxLimitBytes
	}
	var b strings.Builder
	for i := first; i < g.n && b.Len() < limit; i++ {
		b.WriteString(g.lineAt(i) + "\n")
	}
	s := b.String()
	return s[:min(len(s), limit)], nil
}

// Issue 12 item 4: kubectl logs without --tail read the whole log into
// memory before its first byte. The first lines now come after one ECI
// page, and the next page is asked for only as the client reads on.
func TestLogsStreamWithoutReadingAhead(t *testing.T) {
	g := &genLog{n: 2_000_000} // about 200 MB, some 200 pages
	l := &Logs{Source: g}
	rc, err := l.Stream(context.Background(), "eci-1", "c", api.ContainerLogOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	r := bufio.NewReader(rc)
	first, err := r.ReadString('\n')
	if err != nil || first != "line 00000000 "+strings.Repeat("x", 80)+"\n" {
		t.Fatalf("first line %q, %v", first, err)
	}
	if n := g.calls.Load(); n > 2 {
		t.Fatalf("%d ECI calls before the first line reached the client; a page (one call) is enough", n)
	}
}

// A tail longer than ECI's 2,000 lines is right at page edges, and holds
// no more than a page or two: two passes, the second starting at the page
// that holds the first line wanted.
func TestLongTailInTwoPasses(t *testing.T) {
	g := &genLog{n: 50_000} // 6 pages
	l := &Logs{Source: g}
	for _, tail := range []int{2500, 12345, 49_999, 60_000} {
		g.calls.Store(0)
		rc, err := l.Stream(context.Background(), "eci-1", "c", api.ContainerLogOpts{Tail: tail})
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(rc)
		want := max(0, g.n-tail)
		for sc.Scan() {
			if exp := g.lineAt(want)[strings.IndexByte(g.lineAt(want), ' ')+1:]; sc.Text() != exp {
				t.Fatalf("tail %d: line %q, want %q", tail, sc.Text(), exp)
			}
			want++
		}
		if want != g.n {
			t.Errorf("tail %d ended at line %d of %d", tail, want, g.n)
		}
		// One pass over the pages to count, then the pages from the
		// first line wanted on (each a page edge more at most).
		perPage := MaxLimitBytes / (len(g.lineAt(0)) + 1)
		if n := g.calls.Load(); n > int64(g.n/perPage+1+min(tail, g.n)/perPage+2) {
			t.Errorf("tail %d took %d calls", tail, n)
		}
	}
}

// The first ECI call's error is the request's answer.
func TestLogsFirstErrorIsReturned(t *testing.T) {
	l := &Logs{Source: failingLog{}}
	if _, err := l.Stream(context.Background(), "eci-1", "c", api.ContainerLogOpts{Tail: 5000}); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Fatalf("error %v", err)
	}
	if _, err := l.Stream(context.Background(), "eci-1", "c", api.ContainerLogOpts{}); err == nil {
		t.Fatal("no error")
	}
}

type failingLog struct{}

func (failingLog) ContainerLog(context.Context, model.LogRequest) (string, error) {
	return "", fmt.Errorf("InvalidContainerGroup.NotFound")
}

// Issue 12 item 4: a few concurrent kubectl logs could exhaust the node.
// Past the limit, a log request is refused with 429 and a clear message,
// and the slot frees when a stream ends; other kubelet API paths are not
// limited.
func TestLogStreamsAreCapped(t *testing.T) {
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(2)
	var inFlight atomic.Int32
	var hold atomic.Bool
	hold.Store(true)
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/containerLogs/") {
			// The first two hold their slots until released; one past
			// the limit must never get here, and is answered at once if
			// it does, so the test fails instead of hanging.
			if inFlight.Add(1) <= 2 && hold.Load() {
				started.Done()
				<-release
			}
			defer inFlight.Add(-1)
		}
		_, _ = w.Write([]byte("ok"))
	})
	srv := httptest.NewServer(LimitLogStreams(2, inner))
	defer srv.Close()
	get := func(path string) (*http.Response, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	done := make(chan int, 2)
	for range 2 {
		go func() {
			resp, err := http.Get(srv.URL + "/containerLogs/ns/p/c")
			if err == nil {
				resp.Body.Close()
				done <- resp.StatusCode
			} else {
				done <- 0
			}
		}()
	}
	started.Wait()
	resp, body := get("/containerLogs/ns/p/c")
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "2 log streams") || resp.Header.Get("Retry-After") == "" {
		t.Errorf("third stream: %d %q", resp.StatusCode, body)
	}
	if resp, _ := get("/stats/summary"); resp.StatusCode != http.StatusOK {
		t.Errorf("other paths limited: %d", resp.StatusCode)
	}
	hold.Store(false)
	close(release)
	for range 2 {
		if code := <-done; code != http.StatusOK {
			t.Errorf("a stream within the limit got %d", code)
		}
	}
	if resp, _ := get("/containerLogs/ns/p/c"); resp.StatusCode != http.StatusOK {
		t.Errorf("after the streams ended: %d", resp.StatusCode)
	}
}
