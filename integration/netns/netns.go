// Package netns makes test hosts: a network namespace joined to this one by
// a veth pair with private test addresses, and listeners opened inside it.
// Traffic between the two stays on this machine. Tests use it where
// loopback will not do: kube-apiserver refuses to proxy to a node whose
// address is loopback, as a real cluster's nodes never are.
package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Host is a network namespace with one address reachable from here.
type Host struct {
	Name   string
	IP     net.IP // inside the namespace
	HostIP net.IP // this side of the veth pair
	veth   string
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// New creates a namespace reachable at 10.231.<subnet>.2 from this
// namespace's 10.231.<subnet>.1, and removes it when t ends. It needs root
// and iproute2 (CI runs as root and installs it).
func New(t testing.TB, subnet int) *Host {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("network namespace tests need root (CI runs as root)")
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	h := &Host{Name: "vn-" + id, veth: "vv" + id,
		HostIP: net.IPv4(10, 231, byte(subnet), 1).To4(), IP: net.IPv4(10, 231, byte(subnet), 2).To4()}
	steps := [][]string{
		{"netns", "add", h.Name},
		{"link", "add", h.veth + "a", "type", "veth", "peer", "name", h.veth + "b"},
		{"link", "set", h.veth + "b", "netns", h.Name},
		{"addr", "add", h.HostIP.String() + "/30", "dev", h.veth + "a"},
		{"link", "set", h.veth + "a", "up"},
		{"-n", h.Name, "addr", "add", h.IP.String() + "/30", "dev", h.veth + "b"},
		{"-n", h.Name, "link", "set", h.veth + "b", "up"},
		{"-n", h.Name, "link", "set", "lo", "up"},
	}
	t.Cleanup(h.remove)
	for _, s := range steps {
		if err := ip(s...); err != nil {
			t.Fatalf("making test host %s: %v", h.Name, err)
		}
	}
	return h
}

func (h *Host) remove() {
	_ = ip("link", "del", h.veth+"a") // takes its peer with it
	_ = ip("netns", "del", h.Name)
}

// Listen opens a TCP listener inside the namespace. The socket stays in the
// namespace; this process accepts on it as usual.
func (h *Host) Listen(port int) (net.Listener, error) {
	return h.ListenOn(h.IP.String(), port)
}

// ListenOn opens a TCP listener on ip:port inside the namespace (an
// address added with AddAddress, or 127.0.0.1).
func (h *Host) ListenOn(ip string, port int) (net.Listener, error) {
	var l net.Listener
	err := h.Do(func() (err error) {
		l, err = net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
		return err
	})
	return l, err
}

// Dial connects from inside the namespace, as a process on that host
// would; the connection works from any goroutine afterwards.
func (h *Host) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() (err error) {
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// AddAddress adds cidr to the namespace's loopback device: an address of
// the host that, without a route to it, nothing outside can reach.
func (h *Host) AddAddress(cidr string) error {
	return ip("-n", h.Name, "addr", "add", cidr, "dev", "lo")
}

// Do runs f on a thread inside the namespace. Sockets f opens stay there.
func (h *Host) Do(f func() error) error {
	ch := make(chan error, 1)
	go func() {
		// setns applies to this thread only: lock it while it is in the
		// other namespace, and bring it back before unlocking. The thread
		// must not die: a child process started earlier from this thread
		// (with Pdeathsig, as the control plane's are) would be killed
		// with it. Only if it cannot come back is it left locked, to die.
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("opening this thread's namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open("/var/run/netns/" + h.Name)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("opening namespace %s: %w", h.Name, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("entering namespace %s: %w", h.Name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		}
		ch <- ferr
	}()
	return <-ch
}
