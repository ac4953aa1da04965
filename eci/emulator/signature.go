package emulator

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vnode-project/vnode/eci/model"
)

// stringToSign builds the RPC string to sign from every parameter but
// Signature, empty values included.
func stringToSign(method string, params url.Values) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		if k != "Signature" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, model.PercentEncode(k)+"="+model.PercentEncode(params.Get(k)))
	}
	return method + "&%2F&" + model.PercentEncode(strings.Join(parts, "&"))
}

// sign is base64(HMAC-SHA1(secret + "&", stringToSign)).
func sign(secret, sts string) string {
	mac := hmac.New(sha1.New, []byte(secret+"&"))
	mac.Write([]byte(sts))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// nonces remembers SignatureNonces for twice the skew window (a request
// is accepted up to maxSkew either side of its Timestamp), so a replayed
// request is refused. They are kept in memory and, when dir is set, in an
// append-only journal there, so a request replayed after the emulator
// restarts is refused too, as ECI would. Each request appends one line;
// the journal is never rewritten. It has two generations: once the
// current file's first entry is a window old, the file becomes the
// previous generation, replacing the one before, whose entries have all
// expired; a new emulator reads both and keeps what is in the window.
type nonces struct {
	mu      sync.Mutex
	seen    map[string]time.Time
	last    time.Time // the last in-memory prune
	dir     string    // "" keeps them in memory only
	f       *os.File  // the current generation, appended to
	started time.Time // the current generation's first entry
}

const (
	maxSkew     = 15 * time.Minute
	nonceWindow = 2 * maxSkew
	nonceFile   = "nonces.journal"
)

// openNonces loads the journal in dir ("" for none) and opens it for
// appending.
func openNonces(dir string, now time.Time) (*nonces, error) {
	n := &nonces{seen: map[string]time.Time{}, dir: dir, last: now}
	if dir == "" {
		return n, nil
	}
	for _, name := range []string{nonceFile + ".prev", nonceFile} {
		first, err := n.load(filepath.Join(dir, name), now)
		if err != nil {
			return nil, err
		}
		if name == nonceFile {
			n.started = first
		}
	}
	if err := n.openCurrent(); err != nil {
		return nil, err
	}
	return n, nil
}

// load reads one generation: lines of "<unix nanoseconds> <nonce,
// query-escaped>". A line a crash cut short is skipped. It returns the
// first entry's time.
func (n *nonces) load(path string, now time.Time) (time.Time, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("reading the nonce journal: %w", err)
	}
	defer f.Close()
	var first time.Time
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		tsStr, esc, ok := strings.Cut(sc.Text(), " ")
		ns, err := strconv.ParseInt(tsStr, 10, 64)
		nonce, uerr := url.QueryUnescape(esc)
		if !ok || err != nil || uerr != nil {
			continue
		}
		t := time.Unix(0, ns)
		if first.IsZero() {
			first = t
		}
		if now.Sub(t) <= nonceWindow {
			n.seen[nonce] = t
		}
	}
	if err := sc.Err(); err != nil {
		return time.Time{}, fmt.Errorf("reading the nonce journal %s: %w", path, err)
	}
	return first, nil
}

func (n *nonces) openCurrent() error {
	f, err := os.OpenFile(filepath.Join(n.dir, nonceFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening the nonce journal: %w", err)
	}
	n.f = f
	return nil
}

// use records nonce at now; false if it was seen within the window. An
// error means the nonce could not be journaled (the request must not be
// served: after a restart its replay would pass).
func (n *nonces) use(nonce string, now time.Time) (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if now.Sub(n.last) > time.Minute {
		for k, t := range n.seen {
			if now.Sub(t) > nonceWindow {
				delete(n.seen, k)
			}
		}
		n.last = now
	}
	if t, dup := n.seen[nonce]; dup && now.Sub(t) <= nonceWindow {
		return false, nil
	}
	if n.f != nil {
		if err := n.journal(nonce, now); err != nil {
			return false, err
		}
	}
	n.seen[nonce] = now
	return true, nil
}

// journal appends nonce, first starting a new generation when the current
// one is a window old.
func (n *nonces) journal(nonce string, now time.Time) error {
	if !n.started.IsZero() && now.Sub(n.started) > nonceWindow {
		n.f.Close()
		n.f = nil
		cur := filepath.Join(n.dir, nonceFile)
		if err := os.Rename(cur, cur+".prev"); err != nil {
			return fmt.Errorf("rotating the nonce journal: %w", err)
		}
		if err := n.openCurrent(); err != nil {
			return err
		}
		n.started = time.Time{}
	}
	if n.started.IsZero() {
		n.started = now
	}
	if _, err := fmt.Fprintf(n.f, "%d %s\n", now.UnixNano(), url.QueryEscape(nonce)); err != nil {
		return fmt.Errorf("writing the nonce journal: %w", err)
	}
	return nil
}

func (n *nonces) close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.f == nil {
		return nil
	}
	err := n.f.Close()
	n.f = nil
	return err
}
