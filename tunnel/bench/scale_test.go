package bench

import (
	"context"
	"crypto/ecdsa"
	crand "crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"

	"github.com/vnode-project/vnode/internal/certs"
	"github.com/vnode-project/vnode/tunnel"
)

// The scale benchmark (issue 18): many agent sessions held by one server,
// each a real mTLS session with its own node identity. Three processes,
// as in a cluster: the server (this test binary re-executed, scaleServerEnv),
// the agents (all in one re-executed process, scaleAgentsEnv) and the
// requester (the benchmark). ANP's server runs with as many agents of
// ANP's agent package, driven from one process of their own
// (anpagents_test.go). Run:
//
//	go test -run '^$' -bench Scale -benchtime 1x -timeout 60m ./tunnel/bench/
//
// VNODE_BENCH_SESSIONS (default 1,1000,10000) picks the session counts;
// VNODE_BENCH_HEAPPROFILE=DIR saves the server's heap profile with all
// sessions idle, per count.
const (
	scaleServerEnv = "VNODE_BENCH_SCALE_SERVER"
	scaleAgentsEnv = "VNODE_BENCH_SCALE_AGENTS"
)

func scaleNode(i int) string { return "node-" + strconv.Itoa(i) }

// raiseNoFile lifts the soft descriptor limit to the hard one (children
// inherit it): 10,000 sessions are 10,000 descriptors on each side.
func raiseNoFile() error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return err
	}
	l.Cur = l.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
}

// childStart readies a scale child: descriptors raised, $N read.
func childStart() (int, error) {
	if err := raiseNoFile(); err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(os.Getenv("N"))
	if err != nil {
		return 0, fmt.Errorf("N: %w", err)
	}
	return n, nil
}

// runScaleServer serves $N nodes (node-<i>, all at 127.0.0.1) on
// $AGENT_ADDR and $PROXY_ADDR, and the benchmark's view of it on
// $STATUS_ADDR (loopback): /count (nodes with a session), /pick (a random
// node with a session), /heap (a heap profile). Prints "ready" once it
// accepts.
func runScaleServer() error {
	n, err := childStart()
	if err != nil {
		return err
	}
	env := os.Getenv
	port, err := strconv.Atoi(env("PORT"))
	if err != nil {
		return fmt.Errorf("PORT: %w", err)
	}
	log := logrus.New()
	log.SetLevel(logrus.ErrorLevel)
	pair, err := certs.NewKeyPair(env("SERVER_CERT"), env("SERVER_KEY"))
	if err != nil {
		return err
	}
	ca, err := certs.NewCABundle(env("CA"))
	if err != nil {
		return err
	}
	nodes := tunnel.StaticNodes{}
	for i := range n {
		nodes[scaleNode(i)] = tunnel.Target{Node: scaleNode(i), IP: "127.0.0.1", Virtual: true}
	}
	m := tunnel.NewMetrics(nil)
	srv, err := tunnel.NewServer(tunnel.ServerConfig{AgentCert: pair, AgentCA: ca, ProxyCert: pair, ProxyCA: ca,
		Nodes: nodes, Ports: tunnel.NewPortPolicy(tunnel.Ports{HTTPS: []int{port}}), Log: logrus.NewEntry(log), Metrics: m})
	if err != nil {
		return err
	}
	defer srv.Close()
	ls := map[string]net.Listener{}
	for _, a := range []string{"AGENT_ADDR", "PROXY_ADDR", "STATUS_ADDR"} {
		if ls[a], err = net.Listen("tcp", env(a)); err != nil {
			return err
		}
	}
	go func() { _ = srv.ServeAgents(ls["AGENT_ADDR"]) }()
	go func() { _ = srv.ServeProxy(ls["PROXY_ADDR"]) }()
	mux := http.NewServeMux()
	mux.HandleFunc("/count", func(w http.ResponseWriter, _ *http.Request) {
		c := 0
		for i := range n {
			if srv.HasSession(scaleNode(i)) {
				c++
			}
		}
		fmt.Fprint(w, c)
	})
	mux.HandleFunc("/rejected", func(w http.ResponseWriter, _ *http.Request) {
		for _, r := range []string{"deferred", "handshake"} {
			fmt.Fprintf(w, "%s=%v ", r, testutil.ToFloat64(m.AgentRejected.WithLabelValues(r)))
		}
	})
	mux.HandleFunc("/pick", func(w http.ResponseWriter, _ *http.Request) {
		for range 4 * n {
			if name := scaleNode(rand.N(n)); srv.HasSession(name) {
				fmt.Fprint(w, name)
				return
			}
		}
		http.Error(w, "no session", http.StatusNotFound)
	})
	mux.HandleFunc("/heap", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		_ = pprof.WriteHeapProfile(w)
	})
	mux.HandleFunc("/goroutines", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, runtime.NumGoroutine()) })
	mux.HandleFunc("/mem", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Fprintf(w, "heap-inuse=%dMiB stacks=%dMiB sys=%dMiB", ms.HeapInuse>>20, ms.StackInuse>>20, ms.Sys>>20)
	})
	go func() { _ = http.Serve(ls["STATUS_ADDR"], mux) }()
	fmt.Println("ready")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
	return nil
}

// runScaleAgents runs $N agents, node-<i> with $CERT_DIR/<i>.crt and the
// shared $KEY, against $AGENT_ADDR, each dialing from its own loopback
// address (127.0.0.2-201, so that 10,000 sessions do not run out of source
// ports), with the default backoff (1s to 30s) unless $MAX_BACKOFF says.
func runScaleAgents() error {
	n, err := childStart()
	if err != nil {
		return err
	}
	env := os.Getenv
	maxBackoff, _ := time.ParseDuration(env("MAX_BACKOFF"))
	log := logrus.New()
	log.SetLevel(logrus.ErrorLevel)
	ca, err := certs.NewCABundle(env("CA"))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fmt.Println("ready") // the benchmark counts sessions at the server
	var wg sync.WaitGroup
	for i := range n {
		pair, err := certs.NewKeyPair(filepath.Join(env("CERT_DIR"), strconv.Itoa(i)+".crt"), env("KEY"))
		if err != nil {
			return err
		}
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%200))}}
		a, err := tunnel.NewAgent(tunnel.AgentConfig{Server: env("AGENT_ADDR"), ServerName: "127.0.0.1", Cert: pair, CA: ca,
			Dial: d.DialContext, MaxBackoff: maxBackoff, DrainTimeout: time.Second, Log: logrus.NewEntry(log)})
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = a.Run(ctx) }()
	}
	wg.Wait()
	return nil
}

// issueNodes writes n agent certificates (CN system:vnode:node-<i>, group
// system:vnodes) into a directory, all for one ECDSA key: every session
// still does its own full mTLS handshake with its own certificate, and
// 10,000 certificates take a second instead of 10,000 key generations.
func (p *pki) issueNodes(tb testing.TB, n int) (dir, keyFile string) {
	tb.Helper()
	dir = filepath.Join(p.dir, "nodes")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	_, keyFile = p.issue(tb, "node-key-holder")
	pemKey, err := os.ReadFile(keyFile)
	if err != nil {
		tb.Fatal(err)
	}
	blk, _ := pem.Decode(pemKey)
	key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	pub := key.(*ecdsa.PrivateKey).Public()
	for i := range n {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(1_000_000 + i)),
			Subject:   pkix.Name{CommonName: "system:vnode:" + scaleNode(i), Organization: []string{"system:vnodes"}},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(crand.Reader, tmpl, p.ca, pub, p.key)
		if err != nil {
			tb.Fatal(err)
		}
		p.write(tb, filepath.Join(dir, strconv.Itoa(i)+".crt"), "CERTIFICATE", der)
	}
	return dir, keyFile
}

// scaleServer is one run of the server child.
type scaleServer struct {
	pid                int
	agentAddr, proxy   string
	status             string
	serverCert, srvKey string
	echo               int
	n                  int
	p                  *pki
	cmd                *exec.Cmd
}

func (s *scaleServer) start(tb testing.TB) {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), scaleServerEnv+"=1", "CA="+s.p.caFile, "SERVER_CERT="+s.serverCert, "SERVER_KEY="+s.srvKey,
		"AGENT_ADDR="+s.agentAddr, "PROXY_ADDR="+s.proxy, "STATUS_ADDR="+s.status, "N="+strconv.Itoa(s.n), "PORT="+strconv.Itoa(s.echo))
	s.cmd = cmd
	s.pid = startReady(tb, cmd, "scale server")
}

// get reads one status value of the server.
func (s *scaleServer) get(path string) (string, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + s.status + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", path, b)
	}
	return string(b), err
}

func (s *scaleServer) count(tb testing.TB) int {
	v, err := s.get("/count")
	if err != nil {
		return -1
	}
	n, _ := strconv.Atoi(v)
	return n
}

// waitCount polls until the server holds want sessions.
func waitCount(tb testing.TB, what string, want int, timeout time.Duration, count func() int) time.Duration {
	tb.Helper()
	start := time.Now()
	for count() < want {
		if time.Since(start) > timeout {
			tb.Fatalf("%s: %d of %d sessions after %s", what, count(), want, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// waitExit waits until pid is gone (start reaps it): its sockets are
// closed then. A zombie leader is not enough, its other threads may still
// hold the descriptors.
func waitExit(tb testing.TB, pid int) {
	tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("process %d still there a minute after SIGKILL", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func rssOf(tb testing.TB, pid int) int64 { return (&system{pids: []int{pid}}).rss(tb) }

func load() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func BenchmarkScale(b *testing.B) {
	if err := raiseNoFile(); err != nil {
		b.Fatal(err)
	}
	counts := []int{1, 1000, 10000}
	if v := os.Getenv("VNODE_BENCH_SESSIONS"); v != "" {
		counts = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				b.Fatalf("VNODE_BENCH_SESSIONS: %v", err)
			}
			counts = append(counts, n)
		}
	}
	o := startOrigins(b)
	p := newPKI(b)
	certDir, key := p.issueNodes(b, slices.Max(counts))
	for _, n := range counts {
		b.Run("vnode/sessions="+strconv.Itoa(n), func(b *testing.B) { scaleOurs(b, p, o, n, certDir, key) })
	}
	bin, err := buildANP(b)
	if err == nil {
		var agents string
		if agents, err = buildANPAgents(b, bin); err == nil {
			for _, n := range counts {
				b.Run("anp/sessions="+strconv.Itoa(n), func(b *testing.B) { scaleANP(b, bin, agents, p, n) })
			}
		}
	}
	if err != nil {
		b.Logf("no ANP comparison: building apiserver-network-proxy v0.36.0 from the module proxy failed: %v", err)
	}
}

// scaleOurs: n idle sessions on one server (RSS per session), CONNECT
// latency through them, then a restart of the server and the storm of
// every agent reconnecting.
func scaleOurs(b *testing.B, p *pki, o origins, n int, certDir, key string) {
	b.Logf("load before: %s", load())
	sc, sk := p.issue(b, "edge-tunnel-server")
	s := &scaleServer{p: p, serverCert: sc, srvKey: sk, echo: o.echo, n: n,
		agentAddr: fmt.Sprintf("127.0.0.1:%d", freePort(b)), proxy: fmt.Sprintf("127.0.0.1:%d", freePort(b)),
		status: fmt.Sprintf("127.0.0.1:%d", freePort(b))}
	s.start(b)
	time.Sleep(time.Second)
	before := rssOf(b, s.pid)

	agents := exec.Command(os.Args[0], "-test.run=^$")
	agents.Env = append(os.Environ(), scaleAgentsEnv+"=1", "CA="+p.caFile, "CERT_DIR="+certDir, "KEY="+key,
		"AGENT_ADDR="+s.agentAddr, "N="+strconv.Itoa(n))
	started := time.Now()
	startReady(b, agents, "agents")
	waitCount(b, "connecting", n, 10*time.Minute, func() int { return s.count(b) })
	connect := time.Since(started)
	time.Sleep(3 * time.Second) // past the handshakes' garbage
	after := rssOf(b, s.pid)
	b.ReportMetric(float64(after)/(1<<20), "server-RSS-MiB")
	b.ReportMetric(float64(after-before)/float64(n)/1024, "KiB/session")
	b.ReportMetric(connect.Seconds(), "connect-all-s")
	if g, err := s.get("/goroutines"); err == nil {
		gs, _ := strconv.Atoi(g)
		b.ReportMetric(float64(gs), "server-goroutines")
	}
	if m, err := s.get("/mem"); err == nil {
		b.Logf("server memory with %d idle sessions: %s", n, m)
	}
	if dir := os.Getenv("VNODE_BENCH_HEAPPROFILE"); dir != "" {
		if h, err := s.get("/heap"); err == nil {
			_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("heap-%d.pprof", n)), []byte(h), 0o644)
		}
	}

	// CONNECT latency: a new requester connection, CONNECT to a random
	// node and a 64-byte round trip, one at a time.
	sys := &system{name: "vnode", proxy: s.proxy, tls: p.clientTLS(b, "bench-client"),
		target: func(port int) string { return scaleNode(rand.N(n)) + ":" + strconv.Itoa(port) }}
	ds := make([]time.Duration, 0, 1000)
	for range 1000 {
		d, err := request(sys, o.echo)
		if err != nil {
			b.Fatal(err)
		}
		ds = append(ds, d)
	}
	report(b, ds)
	if n < 1000 {
		b.Logf("load after: %s", load())
		return
	}

	// The storm: kill the server, start a new one on the same addresses,
	// and from the moment it accepts, time until every session is back
	// while four requesters, each pausing 100ms between requests, keep
	// asking for nodes already back.
	_ = syscall.Kill(s.pid, syscall.SIGKILL)
	waitExit(b, s.pid)
	s.start(b)
	stop := make(chan struct{})
	var mu sync.Mutex
	var during []time.Duration
	var failed, asked int
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				node, err := s.get("/pick")
				if err != nil {
					time.Sleep(10 * time.Millisecond) // none back yet
					continue
				}
				d, err := request(&system{name: "vnode", proxy: s.proxy, tls: sys.tls,
					target: func(port int) string { return node + ":" + strconv.Itoa(port) }}, o.echo)
				mu.Lock()
				asked++
				if err != nil {
					failed++
				} else {
					during = append(during, d)
				}
				mu.Unlock()
				time.Sleep(100 * time.Millisecond) // at most 40 requests a second in all
			}
		}()
	}
	last := time.Now()
	back := waitCount(b, "the storm", n, 10*time.Minute, func() int {
		c := s.count(b)
		if time.Since(last) > 2*time.Second {
			last = time.Now()
			r, _ := s.get("/rejected")
			b.Logf("storm: %d back, agents refused: %s, load %s", c, r, load())
		}
		return c
	})
	close(stop)
	wg.Wait()
	b.ReportMetric(back.Seconds(), "storm-all-back-s")
	b.ReportMetric(float64(asked), "storm-requests")
	b.ReportMetric(float64(failed), "storm-failed")
	if len(during) > 0 {
		slices.Sort(during)
		b.ReportMetric(float64(during[int(float64(len(during)-1)*0.99)])/1e6, "storm-p99-ms")
	}
	b.ReportMetric(float64(rssOf(b, s.pid))/(1<<20), "after-storm-RSS-MiB")
	b.Logf("load after: %s", load())
}

// request times one CONNECT and a 64-byte round trip on a new connection.
func request(s *system, port int) (time.Duration, error) {
	msg, got := make([]byte, 64), make([]byte, 64)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := s.dial(ctx, port)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if err := roundTrip(c, msg, got); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// scaleANP: ANP's server with n idle agents of ANP's agent package.
func scaleANP(b *testing.B, bin, agentsBin string, p *pki, n int) {
	b.Logf("load before: %s", load())
	sc, sk := p.issue(b, "anp-server")
	ac, ak := p.issue(b, "anp-agent")
	front, agentPort, health := freePort(b), freePort(b), freePort(b)
	server := exec.Command(filepath.Join(bin, "server"), "--mode=http-connect", "--uds-name=",
		"--server-bind-address=127.0.0.1", fmt.Sprintf("--server-port=%d", front),
		"--agent-bind-address=127.0.0.1", fmt.Sprintf("--agent-port=%d", agentPort),
		fmt.Sprintf("--admin-port=%d", freePort(b)), fmt.Sprintf("--health-port=%d", health),
		"--server-cert="+sc, "--server-key="+sk, "--server-ca-cert="+p.caFile,
		"--cluster-cert="+sc, "--cluster-key="+sk, "--cluster-ca-cert="+p.caFile,
		"--proxy-strategies=destHost,default", "--server-count=1", "--v=0")
	spid := start(b, server)
	backends := func() int {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", health))
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, "konnectivity_network_proxy_server_ready_backend_connections "); ok {
				f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				return int(f)
			}
		}
		return 0
	}
	waitCount(b, "ANP's server up", 0, time.Minute, backends)
	time.Sleep(time.Second)
	before := rssOf(b, spid)
	agents := exec.Command(agentsBin)
	agents.Env = append(os.Environ(), "N="+strconv.Itoa(n), "CA="+p.caFile, "AGENT_CERT="+ac, "AGENT_KEY="+ak,
		"ADDR="+net.JoinHostPort("127.0.0.1", strconv.Itoa(agentPort)), "SYNC_INTERVAL=5s")
	started := time.Now()
	startReady(b, agents, "ANP agents")
	waitCount(b, "ANP agents connecting", n, 10*time.Minute, backends)
	connect := time.Since(started)
	time.Sleep(3 * time.Second)
	after := rssOf(b, spid)
	b.ReportMetric(float64(after)/(1<<20), "server-RSS-MiB")
	b.ReportMetric(float64(after-before)/float64(n)/1024, "KiB/session")
	b.ReportMetric(connect.Seconds(), "connect-all-s")
	b.Logf("load after: %s", load())
}
