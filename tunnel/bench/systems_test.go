package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// system is one way to reach the origins: directly, or through a tunnel's
// CONNECT endpoint (TLS with a client certificate).
type system struct {
	name   string
	proxy  string
	tls    *tls.Config
	target func(port int) string
	pids   []int
}

// dial reaches 127.0.0.1:port through the system.
func (s *system) dial(ctx context.Context, port int) (net.Conn, error) {
	if s.proxy == "" {
		return (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	}
	c, err := (&tls.Dialer{Config: s.tls}).DialContext(ctx, "tcp", s.proxy)
	if err != nil {
		return nil, fmt.Errorf("dialing %s's proxy: %w", s.name, err)
	}
	target := s.target(port)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		_ = c.Close()
		return nil, err
	}
	var hdr []byte
	b := make([]byte, 1)
	for !bytes.HasSuffix(hdr, []byte("\r\n\r\n")) {
		if _, err := c.Read(b); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("reading %s's CONNECT answer: %w", s.name, err)
		}
		hdr = append(hdr, b[0])
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(hdr)), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		_ = c.Close()
		return nil, fmt.Errorf("%s: CONNECT %s: %v %v", s.name, target, resp, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// rss is the tunnel processes' resident memory in bytes.
func (s *system) rss(tb testing.TB) int64 {
	var total int64
	for _, pid := range s.pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			tb.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				total += kb << 10
			}
		}
	}
	return total
}

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start runs cmd until the benchmark ends: SIGTERM, then SIGKILL after 3s
// (ANP's agent drains on SIGTERM and stays up).
func start(tb testing.TB, cmd *exec.Cmd) int {
	tb.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if cmd.Stderr == nil {
		cmd.Stderr = &bytes.Buffer{}
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting %s: %v", cmd.Path, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return cmd.Process.Pid
}

// ours runs this test binary as our tunnel's server and agent.
func ours(tb testing.TB, p *pki, o origins) *system {
	tb.Helper()
	sc, sk := p.issue(tb, "edge-tunnel-server")
	ac, ak := p.issue(tb, "system:vnode:n1", "system:vnodes")
	proxy := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(tb)))
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "CA="+p.caFile, "SERVER_CERT="+sc, "SERVER_KEY="+sk,
		"AGENT_CERT="+ac, "AGENT_KEY="+ak, "PROXY_ADDR="+proxy, "AGENT_ADDR=127.0.0.1:0",
		fmt.Sprintf("PORTS=%d,%d,%d", o.source, o.sink, o.echo))
	pid := startReady(tb, cmd, "our tunnel")
	return &system{name: "vnode", proxy: proxy, tls: p.clientTLS(tb, "bench-client"), pids: []int{pid},
		target: func(port int) string { return "n1:" + strconv.Itoa(port) }}
}

// buildANP builds ANP v0.36.0's server and agent in a scratch module
// outside the repository (cached by the Go build cache after the first
// time) and returns the directory holding them.
func buildANP(tb testing.TB) (string, error) {
	tb.Helper()
	dir := filepath.Join(os.TempDir(), "vnode-bench-anp-v0.36.0")
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return "", err
	}
	run := func(args ...string) error { return goIn(dir, args...) }
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		if err := run("mod", "init", "vnodebench/anp"); err != nil {
			return "", err
		}
	}
	if err := run("get", "sigs.k8s.io/apiserver-network-proxy@v0.36.0"); err != nil {
		return "", err
	}
	for _, c := range []string{"server", "agent"} {
		if err := run("build", "-o", filepath.Join("bin", c), "sigs.k8s.io/apiserver-network-proxy/cmd/"+c); err != nil {
			return "", err
		}
	}
	return filepath.Join(dir, "bin"), nil
}

// goIn runs the go command in the scratch module dir.
func goIn(dir string, args ...string) error {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOSUMDB=off", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// anp runs ANP's proxy-server (HTTP-CONNECT, mTLS frontend and agents) and
// agent, with default channel sizes and destHost routing.
func anp(tb testing.TB, bin string, p *pki) *system {
	tb.Helper()
	sc, sk := p.issue(tb, "anp-server")
	ac, ak := p.issue(tb, "anp-agent")
	front, agentPort := freePort(tb), freePort(tb)
	server := exec.Command(filepath.Join(bin, "server"), "--mode=http-connect", "--uds-name=",
		"--server-bind-address=127.0.0.1", fmt.Sprintf("--server-port=%d", front),
		"--agent-bind-address=127.0.0.1", fmt.Sprintf("--agent-port=%d", agentPort),
		fmt.Sprintf("--admin-port=%d", freePort(tb)), fmt.Sprintf("--health-port=%d", freePort(tb)),
		"--server-cert="+sc, "--server-key="+sk, "--server-ca-cert="+p.caFile,
		"--cluster-cert="+sc, "--cluster-key="+sk, "--cluster-ca-cert="+p.caFile,
		"--proxy-strategies=destHost,default", "--server-count=1", "--v=0")
	spid := start(tb, server)
	agent := exec.Command(filepath.Join(bin, "agent"), "--proxy-server-host=127.0.0.1", fmt.Sprintf("--proxy-server-port=%d", agentPort),
		"--agent-cert="+ac, "--agent-key="+ak, "--ca-cert="+p.caFile, "--agent-id=bench", "--agent-identifiers=ipv4=127.0.0.1",
		fmt.Sprintf("--admin-server-port=%d", freePort(tb)), fmt.Sprintf("--health-server-port=%d", freePort(tb)), "--v=0")
	apid := start(tb, agent)
	return &system{name: "anp", proxy: net.JoinHostPort("127.0.0.1", strconv.Itoa(front)), tls: p.clientTLS(tb, "bench-client"),
		pids: []int{spid, apid}, target: func(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }}
}
