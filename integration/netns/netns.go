// Package netns makes test hosts: a network namespace joined to this one by
// a veth pair with private test addresses, and listeners opened inside it.
// Traffic between the two stays on this machine. Tests use it where
// loopback will not do: kube-apiserver refuses to proxy to a node whose
// address is loopback, as a real cluster's nodes never are.
package netns

import (
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
	type result struct {
		l   net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// setns applies to this thread only: lock it, and let it die with
		// the goroutine rather than return it to the pool in the other
		// namespace.
		runtime.LockOSThread()
		target, err := os.Open("/var/run/netns/" + h.Name)
		if err != nil {
			ch <- result{err: fmt.Errorf("opening namespace %s: %w", h.Name, err)}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("entering namespace %s: %w", h.Name, err)}
			return
		}
		l, err := net.Listen("tcp", net.JoinHostPort(h.IP.String(), fmt.Sprint(port)))
		ch <- result{l, err}
	}()
	r := <-ch
	return r.l, r.err
}
