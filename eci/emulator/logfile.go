package emulator

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"time"
)

// maxLogAnswer is the most DescribeContainerLog returns ("at most 1 MB").
const maxLogAnswer = 1 << 20

// logQuery is what DescribeContainerLog selects from a log file.
type logQuery struct {
	from       time.Time // lines at or after it
	tail       int       // the last tail of those (0: all)
	limit      int       // then at most limit bytes (0: maxLogAnswer)
	timestamps bool
}

// readLogPage answers q from the log file at path without reading the
// whole file: the first line at or after q.from is found by binary search
// on the lines' timestamps (the runtime writes them in time order), a tail
// by reading back from the end, and reading stops at the byte limit. A
// page therefore costs what it returns, not the log's size, and paging
// through a log is linear in it.
func readLogPage(path string, q logQuery) (string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	return logPage(f, fi.Size(), q)
}

// logPage answers q from a log of size bytes read through f.
func logPage(f io.ReaderAt, size int64, q logQuery) (string, error) {
	var err error
	off := int64(0)
	if !q.from.IsZero() {
		if off, err = seekTime(f, size, q.from); err != nil {
			return "", err
		}
	}
	if q.tail > 0 {
		t, err := tailStart(f, off, size, q.tail)
		if err != nil {
			return "", err
		}
		off = max(off, t)
	}
	limit := q.limit
	if limit <= 0 || limit > maxLogAnswer {
		limit = maxLogAnswer
	}
	var out strings.Builder
	sc := bufio.NewScanner(io.NewSectionReader(f, off, size-off))
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() && out.Len() < limit {
		l := sc.Bytes()
		tsStr, text, _ := bytes.Cut(l, []byte(" "))
		ts, err := time.Parse(time.RFC3339Nano, string(tsStr))
		if err != nil || ts.Before(q.from) {
			continue
		}
		if q.timestamps {
			out.Write(l)
		} else {
			out.Write(text)
		}
		out.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	content := out.String()
	if len(content) > limit {
		content = content[:limit]
	}
	return content, nil
}

// seekTime returns the offset of a line start at or before the first line
// stamped at or after from, within 64 KiB of it.
func seekTime(f io.ReaderAt, size int64, from time.Time) (int64, error) {
	lo, hi := int64(0), size // lo is a line start before the wanted line, or 0
	for hi-lo > 64<<10 {
		mid := lo + (hi-lo)/2
		start, ts, err := lineAfter(f, mid, size)
		if err != nil {
			return 0, err
		}
		if start >= hi {
			break
		}
		if !ts.IsZero() && ts.Before(from) {
			lo = start
		} else {
			hi = start
		}
	}
	return lo, nil
}

// lineAfter finds the first line that starts after off (at off when off
// is 0) and reads its timestamp (zero when it has none).
func lineAfter(f io.ReaderAt, off, size int64) (int64, time.Time, error) {
	start := off
	if off > 0 {
		buf := make([]byte, 4096)
		for pos := off - 1; ; pos += int64(len(buf)) {
			if pos >= size {
				return size, time.Time{}, nil
			}
			n, err := f.ReadAt(buf, pos)
			if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
				start = pos + int64(i) + 1
				break
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return 0, time.Time{}, err
			}
			if n == 0 {
				return size, time.Time{}, nil
			}
		}
	}
	buf := make([]byte, 64)
	n, err := f.ReadAt(buf, start)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, time.Time{}, err
	}
	tsStr, _, _ := bytes.Cut(buf[:n], []byte(" "))
	ts, _ := time.Parse(time.RFC3339Nano, string(tsStr))
	return start, ts, nil
}

// tailStart reads back from the end of the file, not before floor, to the
// start of the n-th last line.
func tailStart(f io.ReaderAt, floor, size int64, n int) (int64, error) {
	buf := make([]byte, 64<<10)
	end := size
	newlines := 0
	for end > floor {
		start := max(floor, end-int64(len(buf)))
		chunk := buf[:end-start]
		if _, err := f.ReadAt(chunk, start); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		for i := len(chunk) - 1; i >= 0; i-- {
			if chunk[i] != '\n' || start+int64(i) == size-1 {
				continue // the log's final newline ends the last line
			}
			newlines++
			if newlines == n {
				return start + int64(i) + 1, nil
			}
		}
		end = start
	}
	return floor, nil
}
