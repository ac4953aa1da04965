package netns

import (
	"net"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// A child started with a parent-death signal (as the control plane's
// processes are) is tied to the thread that forked it. Entering a
// namespace must not cost that thread its life, or the child dies with
// it: kube-apiserver did, at random, when a test opened a listener in a
// test host.
func TestDoKeepsThreadsAlive(t *testing.T) {
	h := New(t, 59)
	var children []*exec.Cmd
	for range 8 {
		cmd := exec.Command("sleep", "60")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		children = append(children, cmd)
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	for range 100 {
		l, err := h.Listen(0)
		if err != nil {
			t.Fatal(err)
		}
		_ = l.Close()
	}
	time.Sleep(100 * time.Millisecond) // a parent-death signal is delivered at once; allow for scheduling
	for i, c := range children {
		if err := c.Process.Signal(syscall.Signal(0)); err != nil {
			t.Fatalf("child %d died: %v", i, err)
		}
		var ws syscall.WaitStatus
		if pid, _ := syscall.Wait4(c.Process.Pid, &ws, syscall.WNOHANG, nil); pid == c.Process.Pid {
			t.Fatalf("child %d exited: %v", i, ws)
		}
	}
}

// Create takes the first free /30 of a range, a second namespace the next
// one; Remove leaves neither the namespace nor the veth pair.
func TestCreateFreeSubnetRemove(t *testing.T) {
	_, within, _ := net.ParseCIDR("198.19.255.0/24")
	var hosts []*Host
	for range 2 {
		subnet, err := FreeSubnet(within)
		if err != nil {
			t.Fatal(err)
		}
		h, err := Create("vntest", subnet, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Remove() })
		hosts = append(hosts, h)
	}
	a, b := hosts[0], hosts[1]
	if a.HostIP.Equal(b.HostIP) || !within.Contains(a.IP) || !within.Contains(b.IP) {
		t.Fatalf("two namespaces on %v/%v and %v/%v, want distinct /30s of %v", a.HostIP, a.IP, b.HostIP, b.IP, within)
	}
	// The namespace's address answers from here: the veth pair is up.
	l, err := a.Listen(0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("dialing into the namespace: %v", err)
	}
	c.Close()
	for _, h := range hosts {
		if err := h.Remove(); err != nil {
			t.Fatal(err)
		}
		if h.Exists() {
			t.Fatalf("%s or %s is left after Remove", h.Name, h.Veth)
		}
		if err := h.Remove(); err != nil {
			t.Fatalf("removing twice: %v", err)
		}
	}
	if _, err := Create("vntest", net.ParseIP("198.19.255.1"), nil); err == nil {
		t.Fatal("a subnet not on a /30 boundary was accepted")
	}
}
