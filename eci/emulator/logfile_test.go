package emulator

import (
	"bytes"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingReader counts the bytes read from a log.
type countingReader struct {
	b    []byte
	read atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	r := bytes.NewReader(c.b)
	n, err := r.ReadAt(p, off)
	c.read.Add(int64(n))
	return n, err
}

// bigLog is n timestamped lines, one per millisecond, two sharing a
// timestamp now and then.
func bigLog(n int) ([]byte, []string) {
	var b bytes.Buffer
	lines := make([]string, n)
	for i := range n {
		ts := t0.Add(time.Duration(i) * time.Millisecond)
		if i%50 == 1 {
			ts = t0.Add(time.Duration(i-1) * time.Millisecond)
		}
		lines[i] = ts.Format(time.RFC3339Nano) + " " + fmt.Sprintf("line %07d %s", i, strings.Repeat("x", 60))
		b.WriteString(lines[i] + "\n")
	}
	return b.Bytes(), lines
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Issue 12 item 4: the emulator read the whole log file for every
// DescribeContainerLog page, so paging through a log cost its size
// squared. A page now reads about what it returns: the first line wanted
// is found by binary search, a tail from the end.
func TestLogPageReadsAboutWhatItReturns(t *testing.T) {
	data, lines := bigLog(400000) // about 38 MB
	r := &countingReader{b: data}
	size := int64(len(data))
	check := func(what string, q logQuery, want []string, maxRead int64) {
		t.Helper()
		r.read.Store(0)
		got, err := logPage(r, size, q)
		if err != nil {
			t.Fatal(err)
		}
		wantS := strings.Join(want, "\n") + "\n"
		if q.limit > 0 && len(wantS) > q.limit {
			wantS = wantS[:q.limit]
		}
		if got != wantS {
			t.Errorf("%s: got %d bytes starting %.60q, want %d starting %.60q", what, len(got), got, len(wantS), wantS)
		}
		if n := r.read.Load(); n > maxRead {
			t.Errorf("%s read %d bytes of a %d-byte log for a %d-byte page", what, n, size, len(got))
		}
	}
	from, _ := time.Parse(time.RFC3339Nano, strings.SplitN(lines[300001], " ", 2)[0])
	first := 300001
	for first > 0 && strings.SplitN(lines[first-1], " ", 2)[0] == strings.SplitN(lines[first], " ", 2)[0] {
		first--
	}
	// A page from the middle: the lines from there, cut at the limit.
	n := (1 << 20) / len(lines[0]+"\n")
	check("a page from StartTime", logQuery{from: from, limit: 1 << 20, timestamps: true}, lines[first:first+n+1], 3<<20)
	check("a tail", logQuery{tail: 100, timestamps: true}, lines[len(lines)-100:], 1<<20)
	check("a tail from StartTime", logQuery{from: from, tail: 2000, limit: 1 << 20, timestamps: true}, lines[len(lines)-2000:], 2<<20)
	// Without LimitBytes ECI returns at most 1 MB, not the whole log.
	r.read.Store(0)
	got, err := logPage(r, size, logQuery{})
	if err != nil || len(got) != maxLogAnswer {
		t.Errorf("no limit: %d bytes (%v), want ECI's %d", len(got), err, maxLogAnswer)
	}
}
