package tunnel

import (
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// withUmask runs the test under a permissive umask, as a process started
// carelessly would have: nothing may rely on the umask to keep the socket
// private.
func withUmask(t *testing.T, mask int) {
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

// Under umask 0, the old code bound the socket 0777 (reachable by every
// local user, into every node) and chmod-ed it after, in a directory it
// did not check. Now the directory is made 0700 before the socket exists,
// and the socket's name appears already 0600.
func TestUnixSocketPrivateUnderPermissiveUmask(t *testing.T) {
	withUmask(t, 0)
	dir := filepath.Join(t.TempDir(), "edge-tunnel")
	path := filepath.Join(dir, "connect.sock")
	l, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		di, err := os.Lstat(dir)
		if err != nil || !di.IsDir() || di.Mode().Perm() != 0o700 {
			t.Fatalf("socket directory: %v, mode %v; want a 0700 directory", err, di.Mode())
		}
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Fatalf("socket: %v, mode %v; want a 0600 socket", err, fi.Mode())
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Fatalf("directory holds %d entries, want the socket alone", len(entries))
		}
	}
	check()
	if l.Addr().Network() != "unix" || l.Addr().String() != path {
		t.Fatalf("listener address %s %s", l.Addr().Network(), l.Addr())
	}
	go func(l net.Listener) {
		if c, err := l.Accept(); err == nil {
			_ = c.Close()
		}
	}(l)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dialing the socket: %v", err)
	}
	_ = c.Close()

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket left behind after Close: %v", err)
	}

	// A stale socket of an earlier run (a server that crashed) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	_ = stale.Close()
	again, err := ListenUnix(path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	check()
	_ = again.Close()
}

// A socket directory others can reach is refused, not changed: the old
// code made its socket in any directory, /tmp included.
func TestUnixSocketRefusesSharedDirectory(t *testing.T) {
	withUmask(t, 0)
	base := t.TempDir()
	shared := filepath.Join(base, "shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	private := filepath.Join(base, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(private, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(private, "not-a-socket")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(shared, "connect.sock"), filepath.Join(link, "connect.sock"), file,
		filepath.Join(base, "missing", "deeper", "connect.sock")} {
		l, err := ListenUnix(path)
		if err == nil {
			_ = l.Close()
			t.Errorf("%s: accepted", path)
			continue
		}
		t.Logf("%s: %v", path, err)
	}
	if fi, _ := os.Stat(shared); fi.Mode().Perm() != 0o755 {
		t.Errorf("the shared directory was changed to %v", fi.Mode())
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Error("the file in the socket's place was replaced")
	}
}
