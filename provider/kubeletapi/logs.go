package kubeletapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"

	"github.com/vnode-project/vnode/eci/model"
)

// ECI's per-call limits on DescribeContainerLog.
const (
	MaxTailLines  = 2000
	MaxLimitBytes = 1 << 20
)

// LogSource reads container logs with kubelet semantics: lines from Since
// (inclusive) on, the last Tail of them when Tail > 0, then at most
// LimitBytes from the start of that; every line carries its RFC 3339
// timestamp ("2006-01-02T15:04:05.999999999Z text").
type LogSource interface {
	ContainerLog(ctx context.Context, req model.LogRequest) (string, error)
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
//
// Memory stays bounded whatever the log's size: the log is read one ECI
// page (at most MaxLimitBytes) at a time and each page is written out
// before the next is asked for, the client's reading pacing the reads. A
// tail longer than ECI serves in one call is found in two passes, the
// first only counting lines (see tail). The first call to ECI is made
// before Stream returns, so an error (no such instance, refused
// credentials) is the request's answer, not a cut stream.
func (l *Logs) Stream(ctx context.Context, instanceID, container string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	since := opts.SinceTime
	if opts.SinceSeconds > 0 {
		since = time.Now().Add(-time.Duration(opts.SinceSeconds) * time.Second)
	}
	req := model.LogRequest{InstanceID: instanceID, Container: container, Since: since, Previous: opts.Previous}
	src := &firstCall{LogSource: l.Source, done: make(chan error, 1)}
	pr, pw := io.Pipe()
	go func() {
		w := &lineWriter{bw: bufio.NewWriterSize(pw, 32<<10), timestamps: opts.Timestamps, remaining: opts.LimitBytes}
		err := l.produce(ctx, src, req, opts, w)
		src.report(err) // when it failed before its first call
		pw.CloseWithError(nilIfLimit(err))
	}()
	if err := <-src.done; err != nil {
		pr.Close()
		return nil, err
	}
	return pr, nil
}

// produce writes the lines opts select, then follows.
func (l *Logs) produce(ctx context.Context, src LogSource, req model.LogRequest, opts api.ContainerLogOpts, w *lineWriter) error {
	cur := newCursor()
	follow := opts.Follow && !opts.Previous
	var err error
	if opts.Tail > 0 {
		err = l.tail(ctx, src, req, opts.Tail, cur, w, follow)
	} else {
		err = forward(ctx, src, req, cur, w.lines)
	}
	if err != nil || !follow {
		return err
	}
	return l.follow(ctx, src, req, cur, w)
}

// forward pages from the cursor (or req.Since before any line) to the end
// of the log, handing each page's new lines to each.
func forward(ctx context.Context, src LogSource, req model.LogRequest, cur *cursor, each func([]line) error) error {
	req.Tail = 0
	req.LimitBytes = MaxLimitBytes
	for {
		if !cur.last.IsZero() {
			req.Since = cur.last
		}
		content, err := src.ContainerLog(ctx, req)
		if err != nil {
			return err
		}
		full := len(content) >= MaxLimitBytes*9/10
		parsed := parse(content)
		if full && !strings.HasSuffix(content, "\n") && len(parsed) > 1 {
			// The page cut a line; the next page, which starts at that
			// line's timestamp, brings it whole.
			parsed = parsed[:len(parsed)-1]
		}
		lines := cur.fresh(parsed)
		cur.own()
		if err := each(lines); err != nil {
			return err
		}
		// A short page is the end; a full one continues from its last line.
		if !full || len(lines) == 0 {
			return nil
		}
	}
}

// errTailDone ends the second pass of a tail once it has written its lines.
var errTailDone = errors.New("tail written")

// tail writes the last n lines. Up to MaxTailLines ECI serves them in one
// call. More (or more than one answer holds) take two passes over the
// log, so memory never holds n lines: the first counts the lines and
// keeps, for the pages that may hold the first line wanted, the cursor
// they start at; the second restarts at the right page and writes from
// the (count-n)th line on. Following, the second pass writes up to the
// log's end; otherwise it stops after n lines, though the log grew.
func (l *Logs) tail(ctx context.Context, src LogSource, req model.LogRequest, n int, cur *cursor, w *lineWriter, follow bool) error {
	if n <= MaxTailLines {
		r := req
		r.Tail, r.LimitBytes = n, MaxLimitBytes
		content, err := src.ContainerLog(ctx, r)
		if err != nil {
			return err
		}
		if len(content) < MaxLimitBytes*9/10 {
			return w.lines(cur.fresh(parse(content)))
		}
	}
	type mark struct {
		at     *cursor
		before int // lines before the page this cursor starts
	}
	count := 0
	marks := []mark{{newCursor(), 0}}
	counter := newCursor()
	err := forward(ctx, src, req, counter, func(ls []line) error {
		count += len(ls)
		marks = append(marks, mark{counter.clone(), count})
		// The first line wanted is at count-n or later: a page that
		// starts before a later mark that is itself not past it is of no
		// use.
		for len(marks) >= 2 && marks[1].before <= count-n {
			marks = marks[1:]
		}
		return nil
	})
	if err != nil {
		return err
	}
	start := max(0, count-n)
	m := marks[0]
	for _, x := range marks {
		if x.before <= start {
			m = x
		}
	}
	*cur = *m.at
	i, sent := m.before, 0
	err = forward(ctx, src, req, cur, func(ls []line) error {
		if i+len(ls) <= start {
			i += len(ls)
			return nil
		}
		from := max(0, start-i)
		i += len(ls)
		ls = ls[from:]
		if !follow && len(ls) > n-sent {
			ls = ls[:n-sent]
		}
		sent += len(ls)
		if err := w.lines(ls); err != nil {
			return err
		}
		if !follow && sent >= n {
			return errTailDone
		}
		return nil
	})
	if errors.Is(err, errTailDone) {
		return nil
	}
	return err
}

func (l *Logs) follow(ctx context.Context, src LogSource, req model.LogRequest, cur *cursor, w *lineWriter) error {
	poll := l.Poll
	if poll <= 0 {
		poll = time.Second
	}
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
		// timestamp may be new); the cursor drops what was already sent.
		if err := forward(ctx, src, req, cur, w.lines); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("following the log: %w", err)
		}
		if done {
			return nil
		}
	}
}

// firstCall reports the outcome of the first call through it on done.
type firstCall struct {
	LogSource
	once sync.Once
	done chan error
}

func (f *firstCall) ContainerLog(ctx context.Context, req model.LogRequest) (string, error) {
	content, err := f.LogSource.ContainerLog(ctx, req)
	f.report(err)
	return content, err
}

func (f *firstCall) report(err error) { f.once.Do(func() { f.done <- err }) }

// cursor remembers the newest timestamp sent and how many lines with
// exactly that timestamp were sent, so overlapping reads never double a
// line and never drop one.
type cursor struct {
	last time.Time
	atTS map[string]int // raw line -> times sent, for lines at last
}

func newCursor() *cursor { return &cursor{atTS: map[string]int{}} }

func (c *cursor) clone() *cursor {
	out := &cursor{last: c.last, atTS: make(map[string]int, len(c.atTS))}
	for k, v := range c.atTS {
		out.atTS[strings.Clone(k)] = v
	}
	return out
}

// own copies the remembered lines out of the page they were sliced from,
// so the cursor does not keep a whole page alive after it.
func (c *cursor) own() {
	owned := make(map[string]int, len(c.atTS))
	for k, v := range c.atTS {
		owned[strings.Clone(k)] = v
	}
	c.atTS = owned
}

// fresh returns the lines not sent before, in place: lines is reused.
// Its maps are cleared, not remade, for each new timestamp: with one line
// per timestamp, as most logs have, remaking them was most of what paging
// allocated.
func (c *cursor) fresh(lines []line) []line {
	out := lines[:0]
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
			clear(c.atTS)
			c.atTS[ln.raw] = 1
			clear(counts)
			counts[ln.raw] = 1
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
	out := make([]line, 0, strings.Count(content, "\n")+1)
	for raw := range strings.SplitSeq(content, "\n") {
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

// lineWriter writes lines, with or without their timestamps, buffered
// and flushed after each page, and enforces kubectl's --limit-bytes over
// the whole stream.
type lineWriter struct {
	bw         *bufio.Writer
	timestamps bool
	remaining  int // 0: unlimited
	limited    bool
}

var errLimit = errors.New("limit reached")

func (w *lineWriter) lines(ls []line) error {
	for _, ln := range ls {
		s := ln.text
		if w.timestamps {
			s = ln.raw
		}
		if err := w.line(s); err != nil {
			if errors.Is(err, errLimit) {
				if ferr := w.bw.Flush(); ferr != nil {
					return ferr
				}
			}
			return err
		}
	}
	return w.bw.Flush()
}

func (w *lineWriter) line(s string) error {
	if w.remaining > 0 || w.limited {
		w.limited = true
		if len(s)+1 >= w.remaining {
			if len(s) >= w.remaining {
				_, _ = w.bw.WriteString(s[:w.remaining])
			} else {
				_, _ = w.bw.WriteString(s)
				_ = w.bw.WriteByte('\n')
			}
			w.remaining = 0
			return errLimit
		}
		w.remaining -= len(s) + 1
	}
	if _, err := w.bw.WriteString(s); err != nil {
		return err
	}
	return w.bw.WriteByte('\n')
}

func nilIfLimit(err error) error {
	if errors.Is(err, errLimit) {
		return nil
	}
	return err
}

// DefaultMaxLogStreams is how many `kubectl logs` a node serves at once
// unless told otherwise. Each holds at most a page or two (a few MiB), and
// a -f stream asks ECI every poll interval, from a DescribeContainerLog
// quota of 500 calls a minute that exec and restarts share: a few dozen
// followers already use it up.
const DefaultMaxLogStreams = 32

// LimitLogStreams serves at most max /containerLogs/ requests at once
// (max <= 0: DefaultMaxLogStreams); one more is answered 429 Too Many
// Requests at once, saying so and to retry, instead of queueing. Wrap the
// routes inside authentication, so only callers allowed to read logs can
// take a slot.
func LimitLogStreams(max int, next http.Handler) http.Handler {
	if max <= 0 {
		max = DefaultMaxLogStreams
	}
	slots := make(chan struct{}, max)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/containerLogs/") {
			next.ServeHTTP(w, r)
			return
		}
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
			next.ServeHTTP(w, r)
		default:
			w.Header().Set("Retry-After", "5")
			http.Error(w, fmt.Sprintf("this node already serves %d log streams, its limit (--max-log-streams); retry later", max), http.StatusTooManyRequests)
		}
	})
}
