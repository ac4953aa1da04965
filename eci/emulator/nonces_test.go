package emulator

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// signedURL signs a DescribeRegions request as the SDK would and returns
// the URL to POST, so the very same request can be sent again.
func signedURL(endpoint, nonce string) string {
	q := url.Values{"Action": {"DescribeRegions"}, "AccessKeyId": {testID}, "SignatureNonce": {nonce},
		"Timestamp": {time.Now().UTC().Format("2006-01-02T15:04:05Z")}, "SignatureMethod": {"HMAC-SHA1"}, "SignatureVersion": {"1.0"},
		"SignatureType": {""}, "Version": {"2018-08-08"}, "Format": {"JSON"}, "RegionId": {"cn-hangzhou"}}
	q.Set("Signature", sign(testSecret, stringToSign(http.MethodPost, q)))
	return "http://" + endpoint + "/?" + q.Encode()
}

func post(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Post(u, "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Issue 12 item 6: seen nonces lived only in memory, so a captured request
// replayed after the emulator restarted was served again. ECI refuses it
// within the window; so does the emulator now, restart or not.
func TestReplayAfterRestartIsRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim", DataDir: dir}
	_, ep, stop := runEmulator(t, cfg)
	captured := signedURL(ep, "nonce-replayed-after-restart")
	if code, body := post(t, captured); code != http.StatusOK {
		t.Fatalf("first request: %d %s", code, body)
	}
	if code, body := post(t, captured); code != http.StatusBadRequest || !strings.Contains(body, "SignatureNonceUsed") {
		t.Fatalf("replay before the restart: %d %s", code, body)
	}
	stop()

	_, ep2, _ := runEmulator(t, cfg)
	replay := strings.Replace(captured, ep, ep2, 1) // the same signed query, at the new address
	if code, body := post(t, replay); code != http.StatusBadRequest || !strings.Contains(body, "SignatureNonceUsed") {
		t.Fatalf("replay after the restart: %d %s", code, body)
	}
	if code, body := post(t, signedURL(ep2, "a-fresh-nonce")); code != http.StatusOK {
		t.Fatalf("a new request after the restart: %d %s", code, body)
	}
	fi, err := os.Stat(filepath.Join(dir, nonceFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("journal: %v %v", fi, err)
	}
}

// The journal is appended to, never rewritten, and pruned by the window:
// a generation older than a window is renamed over the one before, and a
// restart forgets nonces older than the window.
func TestNonceJournalPrunesByWindow(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	n, err := openNonces(dir, t0)
	if err != nil {
		t.Fatal(err)
	}
	use := func(n *nonces, nonce string, at time.Time, want bool) {
		t.Helper()
		if ok, err := n.use(nonce, at); err != nil || ok != want {
			t.Fatalf("use(%s) at %v = %v, %v; want %v", nonce, at.Sub(t0), ok, err, want)
		}
	}
	use(n, "old", t0, true)
	use(n, "a b\nc", t0.Add(10*time.Minute), true) // any bytes a client sends
	size := func(name string) int64 {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return -1
		}
		return fi.Size()
	}
	before := size(nonceFile)
	use(n, "mid", t0.Add(20*time.Minute), true)
	if size(nonceFile) <= before {
		t.Fatal("a nonce was not appended")
	}
	// Past a window from the generation's first entry: a new generation.
	use(n, "new", t0.Add(nonceWindow+2*time.Minute), true)
	if size(nonceFile+".prev") < 0 {
		t.Fatal("no rotation after a window")
	}
	if err := n.close(); err != nil {
		t.Fatal(err)
	}

	// Restarted 25 minutes later: "old" (35 minutes old) has expired,
	// the others are remembered, from either generation.
	n2, err := openNonces(dir, t0.Add(35*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer n2.close()
	at := t0.Add(35 * time.Minute)
	use(n2, "old", at, true)
	use(n2, "a b\nc", at, false)
	use(n2, "mid", at, false)
	use(n2, "new", at, false)
}

// A data directory that does not exist yet is made, not an error: the
// local system hands the emulator a path under its own fresh directory.
func TestNewDataDirIsCreated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not", "yet")
	e, err := New(Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim", DataDir: dir})
	if err != nil {
		t.Fatalf("an emulator on a new data directory: %v", err)
	}
	defer e.Close()
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data directory: %v, mode %v; want 0700", err, fi.Mode())
	}
}
