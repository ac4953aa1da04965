// Package testio has the small I/O helpers the end-to-end tests share: a
// buffer a test can poll while a command writes to it, and a checksum to
// compare copied files by.
package testio

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"sync"
)

// LockedBuffer is a bytes.Buffer safe to read while another goroutine
// writes (a command's output being waited for).
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// SHA256 is the hex SHA-256 of b.
func SHA256(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
