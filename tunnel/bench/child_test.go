package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vnode-project/vnode/internal/certs"
	"github.com/vnode-project/vnode/tunnel"
)

// childEnv marks the re-executed test binary that runs our tunnel (server
// and agent in one process, as ANP's two processes are summed).
const childEnv = "VNODE_BENCH_TUNNEL_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(floorEnv) != "" {
		if err := runFloor(); err != nil {
			fmt.Fprintln(os.Stderr, "floor child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	for env, run := range map[string]func() error{scaleServerEnv: runScaleServer, scaleAgentsEnv: runScaleAgents} {
		if os.Getenv(env) != "" {
			if err := run(); err != nil {
				fmt.Fprintln(os.Stderr, env, err)
				os.Exit(1)
			}
			os.Exit(0)
		}
	}
	if os.Getenv(childEnv) != "" {
		if err := runChild(); err != nil {
			fmt.Fprintln(os.Stderr, "tunnel child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChild serves a server on $PROXY_ADDR (CONNECT, mTLS) and $AGENT_ADDR,
// with an agent for node n1 (127.0.0.1) allowed $PORTS, prints "ready"
// once the agent's session is up, and runs until SIGTERM.
func runChild() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	env := os.Getenv
	// VNODE_BENCH_CPUPROFILE=FILE profiles the tunnel's process until it stops.
	if f := env("VNODE_BENCH_CPUPROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(out); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); _ = out.Close() }()
	}
	log := logrus.New()
	log.SetLevel(logrus.ErrorLevel)
	var ports []int
	for _, p := range strings.Split(env("PORTS"), ",") {
		n, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("PORTS: %w", err)
		}
		ports = append(ports, n)
	}
	serverPair, err := certs.NewKeyPair(env("SERVER_CERT"), env("SERVER_KEY"))
	if err != nil {
		return err
	}
	ca, err := certs.NewCABundle(env("CA"))
	if err != nil {
		return err
	}
	srv, err := tunnel.NewServer(tunnel.ServerConfig{AgentCert: serverPair, AgentCA: ca, ProxyCert: serverPair, ProxyCA: ca,
		Nodes: tunnel.StaticNodes{"n1": {Node: "n1", IP: "127.0.0.1", Virtual: true}}, Ports: tunnel.NewPortPolicy(tunnel.Ports{HTTPS: ports}),
		MaxPendingDials: 4096, Log: logrus.NewEntry(log)})
	if err != nil {
		return err
	}
	al, err := net.Listen("tcp", env("AGENT_ADDR"))
	if err != nil {
		return err
	}
	pl, err := net.Listen("tcp", env("PROXY_ADDR"))
	if err != nil {
		return err
	}
	go func() { _ = srv.ServeAgents(al) }()
	go func() { _ = srv.ServeProxy(pl) }()
	defer srv.Close()
	agentPair, err := certs.NewKeyPair(env("AGENT_CERT"), env("AGENT_KEY"))
	if err != nil {
		return err
	}
	a, err := tunnel.NewAgent(tunnel.AgentConfig{Server: al.Addr().String(), ServerName: "127.0.0.1", Cert: agentPair, CA: ca,
		MinBackoff: 50 * time.Millisecond, DrainTimeout: time.Second, Log: logrus.NewEntry(log)})
	if err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	for !srv.HasSession("n1") {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(10 * time.Millisecond):
		}
	}
	fmt.Println("ready")
	<-done
	return nil
}
