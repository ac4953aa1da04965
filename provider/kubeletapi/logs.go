package kubeletapi

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
)

// ECI's per-call limits on DescribeContainerLog.
const (
	MaxTailLines  = 2000
	MaxLimitBytes = 1 << 20
)

// LogRequest is one DescribeContainerLog call.
type LogRequest struct {
	InstanceID string
	Container  string
	Tail       int       // 0: no tail
	Since      time.Time // zero: from the start
	LimitBytes int       // 0: ECI's default
	Previous   bool      // the previous instance of the container (LastTime)
}

// LogSource reads container logs with kubelet semantics: lines from Since
// (inclusive) on, the last Tail of them when Tail > 0, then at most
// LimitBytes from the start of that; every line carries its RFC 3339
// timestamp ("2006-01-02T15:04:05.999999999Z text").
type LogSource interface {
	ContainerLog(ctx context.Context, req LogRequest) (string, error)
}

// Logs implements kubectl logs on top of a LogSource.
type Logs struct {
	Source LogSource
	// Poll is how often -f asks for new lines.
	Poll time.Duration
	// Terminated tells -f when the container has stopped for good, so the
	// stream can end after a last read.
	Terminated func(ctx context.Context) (bool, error)
}

type line struct {
	ts   time.Time
	raw  string // timestamp and text, as ECI returned it
	text string
}

// Stream returns the container's log per opts. With Follow it streams new
// lines until the container terminates or ctx ends (the client went away).
func (l *Logs) Stream(ctx context.Context, instanceID, container string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	since := opts.SinceTime
	if opts.SinceSeconds > 0 {
		since = time.Now().Add(-time.Duration(opts.SinceSeconds) * time.Second)
	}
	limit := opts.LimitBytes
	if opts.Follow && !opts.Previous {
		limit = 0 // the cursor must reach the end before following
	}
	first, err := l.readAll(ctx, LogRequest{InstanceID: instanceID, Container: container, Since: since, Previous: opts.Previous}, opts.Tail, limit)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	w := &limitWriter{w: pw, remaining: opts.LimitBytes}
	emit := func(ls []line) error {
		for _, ln := range ls {
			s := ln.text
			if opts.Timestamps {
				s = ln.raw
			}
			if err := w.writeLine(s); err != nil {
				return err
			}
		}
		return nil
	}
	go func() {
		if err := emit(first); err != nil {
			pw.CloseWithError(nilIfLimit(err))
			return
		}
		if !opts.Follow || opts.Previous {
			pw.Close()
			return
		}
		pw.CloseWithError(nilIfLimit(l.follow(ctx, instanceID, container, first, emit)))
	}()
	return pr, nil
}

// readAll pages forward from req.Since through every line (ECI returns at
// most MaxLimitBytes a call) and keeps the last tail lines (tail <= 0: all).
// A tail within ECI's limit is one call. Without a tail, paging stops once
// the lines hold limit bytes (limit <= 0: no limit): --limit-bytes of a
// large log must not read all of it.
func (l *Logs) readAll(ctx context.Context, req LogRequest, tail, limit int) ([]line, error) {
	if tail > 0 && tail <= MaxTailLines {
		req.Tail = tail
		content, err := l.Source.ContainerLog(ctx, req)
		if err != nil {
			return nil, err
		}
		return parse(content), nil
	}
	var (
		out   []line
		seen  = newCursor()
		bytes int
	)
	for {
		req.LimitBytes = MaxLimitBytes
		content, err := l.Source.ContainerLog(ctx, req)
		if err != nil {
			return nil, err
		}
		full := len(content) >= MaxLimitBytes*9/10
		parsed := parse(content)
		if full && !strings.HasSuffix(content, "\n") && len(parsed) > 1 {
			// The page cut a line; the next page, which starts at that
			// line's timestamp, brings it whole.
			parsed = parsed[:len(parsed)-1]
		}
		lines := seen.fresh(parsed)
		out = append(out, lines...)
		if tail > 0 && len(out) > tail {
			out = out[len(out)-tail:]
		}
		if tail <= 0 && limit > 0 {
			for _, ln := range lines {
				bytes += len(ln.text) + 1 // the shortest form a line is written in
			}
			if bytes >= limit {
				return out, nil
			}
		}
		// A short page is the end; a full one continues from its last line.
		if !full || len(lines) == 0 {
			return out, nil
		}
		req.Since = seen.last
	}
}

func (l *Logs) follow(ctx context.Context, instanceID, container string, first []line, emit func([]line) error) error {
	poll := l.Poll
	if poll <= 0 {
		poll = time.Second
	}
	cur := newCursor()
	cur.fresh(first)
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		done := false
		if l.Terminated != nil {
			var err error
			if done, err = l.Terminated(ctx); err != nil && ctx.Err() == nil {
				return fmt.Errorf("checking whether the container ended: %w", err)
			}
		}
		// Ask from the last line seen (inclusive: lines sharing its
		// timestamp may be new) and drop what was already sent.
		req := LogRequest{InstanceID: instanceID, Container: container, Since: cur.last}
		if cur.last.IsZero() {
			req.Since = time.Time{}
		}
		lines, err := l.readAll(ctx, req, 0, 0)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("following the log: %w", err)
		}
		if err := emit(cur.fresh(lines)); err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// cursor remembers the newest timestamp sent and how many lines with
// exactly that timestamp were sent, so overlapping reads never double a
// line and never drop one.
type cursor struct {
	last time.Time
	atTS map[string]int // raw line -> times sent, for lines at last
}

func newCursor() *cursor { return &cursor{atTS: map[string]int{}} }

func (c *cursor) fresh(lines []line) []line {
	var out []line
	counts := map[string]int{}
	for _, ln := range lines {
		switch {
		case ln.ts.Before(c.last):
			continue
		case ln.ts.Equal(c.last):
			counts[ln.raw]++
			if counts[ln.raw] <= c.atTS[ln.raw] {
				continue // sent before
			}
			c.atTS[ln.raw] = counts[ln.raw]
		default:
			c.last = ln.ts
			c.atTS = map[string]int{ln.raw: 1}
			counts = map[string]int{ln.raw: 1}
		}
		out = append(out, ln)
	}
	return out
}

func parse(content string) []line {
	if content == "" {
		return nil
	}
	content = strings.TrimSuffix(content, "\n")
	parts := strings.Split(content, "\n")
	out := make([]line, 0, len(parts))
	for _, raw := range parts {
		tsStr, text, _ := strings.Cut(raw, " ")
		ts, err := time.Parse(time.RFC3339Nano, tsStr)
		if err != nil {
			// Not timestamped: keep it, ordered with what came before.
			text = raw
			if n := len(out); n > 0 {
				ts = out[n-1].ts
			}
		}
		out = append(out, line{ts: ts, raw: raw, text: text})
	}
	return out
}

// limitWriter enforces kubectl's --limit-bytes over the whole stream.
type limitWriter struct {
	w         *io.PipeWriter
	remaining int // 0: unlimited
	limited   bool
}

var errLimit = fmt.Errorf("limit reached")

func (l *limitWriter) writeLine(s string) error {
	b := append([]byte(s), '\n')
	if l.remaining > 0 || l.limited {
		l.limited = true
		if len(b) >= l.remaining {
			_, _ = l.w.Write(b[:l.remaining])
			l.remaining = 0
			return errLimit
		}
		l.remaining -= len(b)
	}
	_, err := l.w.Write(b)
	return err
}

func nilIfLimit(err error) error {
	if err == errLimit {
		return nil
	}
	return err
}
