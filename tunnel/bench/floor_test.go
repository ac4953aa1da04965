package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// floorEnv marks the re-executed test binary that runs the floor: the
// hops and TLS of our tunnel without its multiplexing. A CONNECT over TLS
// (mutual, 1.3) reaches a proxy, which opens a TLS connection of its own
// (mutual, 1.3) per request to an agent-side relay, which dials the
// target; both copy with a plain io.Copy each way. No yamux, no flow
// control, no metrics, no policy: what the path's TLS and copies cost on
// this machine. The proxy dials the relay (our agent dials the server and
// carries every stream in its one session); which end dials does not
// change the bytes each hop moves.
const floorEnv = "VNODE_BENCH_FLOOR_CHILD"

// runFloor serves the proxy on $PROXY_ADDR and the relay on a loopback
// port, prints "ready" and runs until SIGTERM.
func runFloor() error {
	env := os.Getenv
	pair, err := tls.LoadX509KeyPair(env("SERVER_CERT"), env("SERVER_KEY"))
	if err != nil {
		return err
	}
	agentPair, err := tls.LoadX509KeyPair(env("AGENT_CERT"), env("AGENT_KEY"))
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(env("CA"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("no CA in " + env("CA"))
	}
	serverTLS := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair},
		ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	relayL, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS)
	if err != nil {
		return err
	}
	defer relayL.Close()
	relayTLS := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{agentPair}, RootCAs: pool, ServerName: "127.0.0.1"}
	proxyL, err := tls.Listen("tcp", env("PROXY_ADDR"), serverTLS)
	if err != nil {
		return err
	}
	defer proxyL.Close()
	go serveFloor(relayL, func(c net.Conn) {
		target, err := readLine(c)
		if err != nil {
			return
		}
		t, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer t.Close()
		if _, err := io.WriteString(c, "ok\n"); err != nil {
			return
		}
		pipe(c, t)
	})
	go serveFloor(proxyL, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil || req.Method != http.MethodConnect {
			return
		}
		a, err := tls.Dial("tcp", relayL.Addr().String(), relayTLS)
		if err != nil {
			_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
			return
		}
		defer a.Close()
		ok := make([]byte, 3)
		if _, err := fmt.Fprintf(a, "%s\n", req.Host); err != nil {
			return
		}
		if _, err := io.ReadFull(a, ok); err != nil {
			return
		}
		if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
			return
		}
		var client net.Conn = c
		if n := br.Buffered(); n > 0 {
			client = &readerConn{Conn: c, r: io.MultiReader(io.LimitReader(br, int64(n)), c)}
		}
		pipe(client, a)
	})
	fmt.Println("ready")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
	return nil
}

// readLine reads up to a newline a byte at a time, so that nothing after
// it is taken from c.
func readLine(c net.Conn) (string, error) {
	var line []byte
	b := make([]byte, 1)
	for len(line) < 256 {
		if _, err := io.ReadFull(c, b); err != nil {
			return "", err
		}
		if b[0] == '\n' {
			return strings.TrimSpace(string(line)), nil
		}
		line = append(line, b[0])
	}
	return "", errors.New("line too long")
}

func serveFloor(l net.Listener, handle func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() { defer c.Close(); handle(c) }()
	}
}

// readerConn reads from r (bytes a bufio.Reader took, then the connection).
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c *readerConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// pipe copies both ways with io.Copy, half-closing each side as its
// source ends.
func pipe(a, b net.Conn) {
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(b, a)
		halfClose(b)
		close(done)
	}()
	_, _ = io.Copy(a, b)
	halfClose(a)
	<-done
}

func halfClose(c net.Conn) {
	if rc, ok := c.(*readerConn); ok {
		c = rc.Conn
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// floor runs this test binary as the floor's proxy and relay.
func floor(tb testing.TB, p *pki) *system {
	tb.Helper()
	sc, sk := p.issue(tb, "floor-proxy")
	ac, ak := p.issue(tb, "floor-agent")
	proxy := fmt.Sprintf("127.0.0.1:%d", freePort(tb))
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), floorEnv+"=1", "CA="+p.caFile, "SERVER_CERT="+sc, "SERVER_KEY="+sk,
		"AGENT_CERT="+ac, "AGENT_KEY="+ak, "PROXY_ADDR="+proxy)
	pid := startReady(tb, cmd, "floor")
	return &system{name: "floor", proxy: proxy, tls: p.clientTLS(tb, "bench-client"), pids: []int{pid},
		target: func(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }}
}

// startReady starts cmd and waits for it to print "ready".
func startReady(tb testing.TB, cmd *exec.Cmd, name string) int {
	tb.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	pid := start(tb, cmd)
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ready <- sc.Scan() && sc.Text() == "ready"
		for sc.Scan() {
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			tb.Fatalf("%s did not start: %s", name, cmd.Stderr)
		}
	case <-time.After(30 * time.Second):
		tb.Fatalf("%s not ready in 30s", name)
	}
	return pid
}
