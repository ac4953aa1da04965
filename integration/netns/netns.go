// Package netns makes test hosts: a network namespace joined to this one by
// a veth pair with private test addresses, and listeners opened inside it.
// `make run` makes one the same way (Create) for its virtual node.
// Traffic between the two stays on this machine. Tests use it where
// loopback will not do: kube-apiserver refuses to proxy to a node whose
// address is loopback, as a real cluster's nodes never are.
package netns

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
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
	// Veth is this side's end of the pair (its peer, in the namespace,
	// is Veth with its last letter "b").
	Veth string
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
	h, err := Create("vn", net.IPv4(10, 231, byte(subnet), 0), nil)
	if h != nil {
		t.Cleanup(func() { _ = h.Remove() })
	}
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// Create makes a namespace named <prefix>-<random> joined to this one by
// a veth pair on the /30 at subnet: this side takes its first address,
// the namespace its second. On error, what was made is removed (the Host
// returned with an error only names it). It needs root and iproute2.
// The caller removes the namespace with Remove. Each command it runs is
// written to show ("$ ip ..."), if not nil.
func Create(prefix string, subnet net.IP, show io.Writer) (*Host, error) {
	base := subnet.To4()
	if base == nil || base[3]%4 != 0 {
		return nil, fmt.Errorf("making a network namespace: %v is not the start of an IPv4 /30", subnet)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("making a network namespace needs root")
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	h := &Host{Name: prefix + "-" + id, Veth: "vv" + id + "a",
		HostIP: net.IPv4(base[0], base[1], base[2], base[3]+1).To4(), IP: net.IPv4(base[0], base[1], base[2], base[3]+2).To4()}
	peer := h.peer()
	steps := [][]string{
		{"netns", "add", h.Name},
		{"link", "add", h.Veth, "type", "veth", "peer", "name", peer},
		{"link", "set", peer, "netns", h.Name},
		{"addr", "add", h.HostIP.String() + "/30", "dev", h.Veth},
		{"link", "set", h.Veth, "up"},
		{"-n", h.Name, "addr", "add", h.IP.String() + "/30", "dev", peer},
		{"-n", h.Name, "link", "set", peer, "up"},
		{"-n", h.Name, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if show != nil {
			fmt.Fprintf(show, "$ ip %s\n", strings.Join(s, " "))
		}
		if err := ip(s...); err != nil {
			_ = h.Remove()
			return nil, fmt.Errorf("making network namespace %s: %w", h.Name, err)
		}
	}
	return h, nil
}

// FreeSubnet returns the first /30 in the range within that overlaps no
// address of an interface here: a veth pair placed there clashes with no
// other (a second `make run`, a test's namespace).
func FreeSubnet(within *net.IPNet) (net.IP, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing this host's addresses: %w", err)
	}
	base := within.IP.To4()
	ones, bits := within.Mask.Size()
	if base == nil || bits != 32 || ones > 30 {
		return nil, fmt.Errorf("%v is no IPv4 range of at least a /30", within)
	}
	used := func(subnet net.IP) bool {
		n := &net.IPNet{IP: subnet, Mask: net.CIDRMask(30, 32)}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && (n.Contains(ipn.IP) || ipn.Contains(subnet)) {
				return true
			}
		}
		return false
	}
	start := binary.BigEndian.Uint32(base.Mask(within.Mask))
	for i := uint32(0); i < 1<<(32-ones); i += 4 {
		subnet := make(net.IP, 4)
		binary.BigEndian.PutUint32(subnet, start+i)
		if !used(subnet) {
			return subnet, nil
		}
	}
	return nil, fmt.Errorf("every /30 of %v is in use here", within)
}

func (h *Host) peer() string { return strings.TrimSuffix(h.Veth, "a") + "b" }

// Remove deletes the veth pair and the namespace. What is already gone
// is no error.
func (h *Host) Remove() error {
	var errs []error
	if _, err := net.InterfaceByName(h.Veth); err == nil {
		errs = append(errs, ip("link", "del", h.Veth)) // takes its peer with it
	}
	if _, err := os.Stat("/var/run/netns/" + h.Name); err == nil {
		errs = append(errs, ip("netns", "del", h.Name))
	}
	return errors.Join(errs...)
}

// Exists says whether the namespace or this side of its veth pair is still
// there.
func (h *Host) Exists() bool {
	_, err := net.InterfaceByName(h.Veth)
	_, serr := os.Stat("/var/run/netns/" + h.Name)
	return err == nil || serr == nil
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
