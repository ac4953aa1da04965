package bench

import (
	"os"
	"path/filepath"
	"testing"
)

// anpAgentsMain drives ANP v0.36.0's agent package from one process: $N
// agents, each its own ClientSet (agent ID bench-<i>, identifier
// host=node-<i>) with its own gRPC connection and mTLS handshake, as
// cmd/agent builds them (util.GetClientTLSConfig, keepalive 1h, counting
// servers from their responses). The agents share one certificate: ANP
// tells agents apart by their ID, not their certificate. Each dials from
// its own loopback address (127.0.0.2-201), so that 10,000 connections
// do not run out of source ports. Prints "ready" once all are started and
// runs until SIGTERM.
const anpAgentsMain = `package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"sigs.k8s.io/apiserver-network-proxy/pkg/agent"
	"sigs.k8s.io/apiserver-network-proxy/pkg/util"
)

func main() {
	n, err := strconv.Atoi(os.Getenv("N"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "N:", err)
		os.Exit(1)
	}
	interval, _ := time.ParseDuration(os.Getenv("SYNC_INTERVAL"))
	stop, drain := make(chan struct{}), make(chan struct{})
	for i := 0; i < n; i++ {
		tcfg, err := util.GetClientTLSConfig(os.Getenv("CA"), os.Getenv("AGENT_CERT"), os.Getenv("AGENT_KEY"), "127.0.0.1", nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%200))}
		dial := func(ctx context.Context, addr string) (net.Conn, error) {
			return (&net.Dialer{LocalAddr: local}).DialContext(ctx, "tcp", addr)
		}
		cc := &agent.ClientSetConfig{
			Address: os.Getenv("ADDR"), AgentID: fmt.Sprintf("bench-%d", i), AgentIdentifiers: fmt.Sprintf("host=node-%d", i),
			SyncInterval: interval, ProbeInterval: interval, SyncIntervalCap: 10 * time.Second,
			DialOptions: []grpc.DialOption{
				grpc.WithTransportCredentials(credentials.NewTLS(tcfg)),
				grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: time.Hour, PermitWithoutStream: true}),
				grpc.WithContextDialer(dial),
			},
			XfrChannelSize: 150, ServerCountSource: "default",
		}
		cs := cc.NewAgentClientSet(drain, stop)
		cs.SetServerCounter(agent.NewAggregateServerCounter(nil, agent.NewResponseBasedCounter(cs), "default"))
		cs.Serve()
	}
	fmt.Println("ready")
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer cancel()
	<-ctx.Done()
	close(stop)
}
`

// buildANPAgents builds anpAgentsMain in buildANP's scratch module (after
// buildANP) and returns the binary's path.
func buildANPAgents(tb testing.TB, bin string) (string, error) {
	tb.Helper()
	dir := filepath.Dir(bin)
	src := filepath.Join(dir, "manyagents")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(anpAgentsMain), 0o644); err != nil {
		return "", err
	}
	out := filepath.Join(bin, "manyagents")
	if err := goIn(dir, "build", "-o", out, "./manyagents"); err != nil {
		return "", err
	}
	return out, nil
}
