package tunnel

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
)

// ListenUnix opens the CONNECT unix socket at path. Whoever can connect to
// it reaches every node, so the socket's file mode is its access control,
// and there must be no moment it is wider: the socket's directory must be
// a directory of its own, owned by this user with no group or other
// access (it is created 0700 if missing; one that is shared is refused,
// not changed), and the socket is bound under a temporary name in it,
// made 0600 and only then renamed into place. The process umask is never
// touched (it is process-wide). Closing the listener removes the socket.
func ListenUnix(path string) (net.Listener, error) {
	dir, base := filepath.Split(filepath.Clean(path))
	if base == "" || base == "." || base == ".." || base == string(filepath.Separator) {
		return nil, fmt.Errorf("unix socket %q: not a file path", path)
	}
	dir = filepath.Clean(dir)
	if err := privateDir(dir); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() != fs.ModeSocket {
		return nil, fmt.Errorf("unix socket %s: something that is not a socket (%s) is already there; refusing to replace it", path, fi.Mode())
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("unix socket %s: %w", path, err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	tmp := filepath.Join(dir, ".tmp-"+hex.EncodeToString(b)+".sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("unix socket %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false) // it is renamed; Close removes the final name
	fail := func(err error) (net.Listener, error) {
		_ = l.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("unix socket %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	// Atomic, and it replaces a stale socket of an earlier run.
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return &unixSocket{UnixListener: l, path: path, file: fi}, nil
}

// privateDir makes dir 0700 if it is missing, and checks that it is a
// directory (not a link) owned by this user with no group or other access.
func privateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating the unix socket's directory %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("unix socket directory %s: %w", dir, err)
	}
	uid := os.Geteuid()
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != uid || fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("unix socket directory %s (%s) must be a directory of its own with mode 0700 owned by uid %d: "+
			"anyone who can reach the socket reaches every node (a missing directory is created so)", dir, fi.Mode(), uid)
	}
	return nil
}

// unixSocket removes its final name on Close, if that is still its
// socket (a later server may have replaced it).
type unixSocket struct {
	*net.UnixListener
	path string
	file fs.FileInfo
}

func (u *unixSocket) Addr() net.Addr { return &net.UnixAddr{Name: u.path, Net: "unix"} }

func (u *unixSocket) Close() error {
	err := u.UnixListener.Close()
	if fi, serr := os.Lstat(u.path); serr == nil && os.SameFile(fi, u.file) {
		if rerr := os.Remove(u.path); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}
