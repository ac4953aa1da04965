package vnodehost

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/vnode-project/vnode/eci"
	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/eci/emulator/emulatortest"
	"github.com/vnode-project/vnode/integration/netns"
)

const kubeconfig = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", certificate-authority-data: ` + "Y2E=" + `}}]
users: [{name: u, user: {token: abcdef.0123456789abcdef}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`

// script writes an executable shell script standing in for vnode-kubelet.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vnode-kubelet")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

func startHost(t *testing.T, em *emulator.Emulator, ep, bin, dir string) context.CancelFunc {
	t.Helper()
	return startHostWith(t, Config{Emulator: em, Endpoint: "http://" + ep, Binary: bin, Dir: dir})
}

func startHostWith(t *testing.T, cfg Config) context.CancelFunc {
	t.Helper()
	cfg.Interval = 20 * time.Millisecond
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func waitNode(t *testing.T, c *eci.Client, id string, cond func(eci.VirtualNode) bool) eci.VirtualNode {
	t.Helper()
	var got eci.VirtualNode
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		vs, err := c.ListVirtualNodes(ctx, eci.VirtualNodeFilter{IDs: []string{id}})
		if err != nil || len(vs) != 1 {
			return false, nil
		}
		got = vs[0]
		return cond(got), nil
	})
	if err != nil {
		t.Fatalf("virtual node %s: %+v", id, got)
	}
	return got
}

func create(t *testing.T, ep string) (*eci.Client, string) {
	t.Helper()
	return createWith(t, ep, []byte(kubeconfig), true, "t")
}

func createWith(t *testing.T, ep string, kc []byte, bootstrap bool, token string) (*eci.Client, string) {
	t.Helper()
	c, err := eci.New(eci.Config{RegionID: "cn-hangzhou", Endpoint: "http://" + ep, AccessKeyID: "AKID", AccessKeySecret: "SECRET"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.CreateVirtualNode(context.Background(), eci.VirtualNodeSpec{VSwitchID: "vsw-1", SecurityGroupID: "sg-1",
		KubeConfig: kc, TLSBootstrapEnabled: bootstrap, ClientToken: token})
	if err != nil {
		t.Fatal(err)
	}
	return c, id
}

// A node whose vnode-kubelet exits is Failed, with its last log line.
func TestExitedNodeIsFailed(t *testing.T) {
	em, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{"AKID": "SECRET"}, Runtime: "sim", Delays: emulator.Delays{VirtualNode: time.Hour}})
	startHost(t, em, ep, script(t, `echo "cannot reach the API server: $*"; exit 1`), t.TempDir())
	c, id := create(t, ep)
	v := waitNode(t, c, id, func(v eci.VirtualNode) bool { return v.Status == "Failed" })
	last := v.Events[len(v.Events)-1]
	if last.Reason != "NodeExited" || !strings.Contains(last.Message, "cannot reach the API server") || !strings.Contains(last.Message, "--bootstrap-kubeconfig") {
		t.Fatalf("events: %+v", v.Events)
	}
}

// A host on the emulator's state after a restart starts its nodes again;
// a deleted node's process is stopped.
func TestNodesRestartWithTheEmulatorAndStopOnDelete(t *testing.T) {
	data := t.TempDir()
	cfg := emulator.Config{Credentials: map[string]string{"AKID": "SECRET"}, Runtime: "sim", DataDir: data, Delays: emulator.Delays{VirtualNode: time.Hour}}
	marks := t.TempDir()
	bin := script(t, `touch "`+marks+`/started.$$"; trap 'touch "`+marks+`/stopped.$$"; exit 0' TERM; while :; do sleep 0.05; done`)
	count := func(prefix string) int {
		m, _ := filepath.Glob(filepath.Join(marks, prefix+".*"))
		return len(m)
	}
	em, ep, stopEm, err := emulator.StartLocal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stopHost := startHost(t, em, ep, bin, t.TempDir())
	c, id := create(t, ep)
	waitNode(t, c, id, func(v eci.VirtualNode) bool { return v.Status == "Pending" && len(v.Events) >= 2 })
	waitCount(t, func() bool { return count("started") == 1 })
	stopHost()
	stopEm()
	waitCount(t, func() bool { return count("stopped") == 1 })

	em, ep = emulatortest.StartForTest(t, cfg)
	startHost(t, em, ep, bin, t.TempDir())
	waitCount(t, func() bool { return count("started") == 2 })
	c, err = eci.New(eci.Config{RegionID: "cn-hangzhou", Endpoint: "http://" + ep, AccessKeyID: "AKID", AccessKeySecret: "SECRET"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteVirtualNode(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	waitCount(t, func() bool { return count("stopped") == 2 })
}

func waitCount(t *testing.T, cond func() bool) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return cond(), nil
	}); err != nil {
		t.Fatal("condition never held")
	}
}

// With a tunnel configured, a TLS-bootstrap node joins it with its own
// certificate; a ServiceAccount-mode node has none, runs without it, and
// its VirtualNode says so.
func TestHostedNodesJoinTheTunnel(t *testing.T) {
	em, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{"AKID": "SECRET"}, Runtime: "sim", Delays: emulator.Delays{VirtualNode: time.Hour}})
	argsDir := t.TempDir()
	bin := script(t, `echo "$*" > "`+argsDir+`/$$.args"; exec sleep 60`)
	h, err := New(Config{Emulator: em, Endpoint: "http://" + ep, Binary: bin, Dir: t.TempDir(), Interval: 20 * time.Millisecond,
		Tunnel: Tunnel{Server: "127.0.0.1:10262", ServerName: "edge-tunnel-server", CAFile: "/etc/tunnel-ca.crt"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	c, err := eci.New(eci.Config{RegionID: "cn-hangzhou", Endpoint: "http://" + ep, AccessKeyID: "AKID", AccessKeySecret: "SECRET"})
	if err != nil {
		t.Fatal(err)
	}
	bootstrapID, err := c.CreateVirtualNode(context.Background(), eci.VirtualNodeSpec{VSwitchID: "vsw-1", SecurityGroupID: "sg-1",
		KubeConfig: []byte(kubeconfig), TLSBootstrapEnabled: true, ClientToken: "bootstrap"})
	if err != nil {
		t.Fatal(err)
	}
	saID, err := c.CreateVirtualNode(context.Background(), eci.VirtualNodeSpec{VSwitchID: "vsw-1", SecurityGroupID: "sg-1",
		KubeConfig: []byte(kubeconfig), ClientToken: "serviceaccount"})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	if err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		files, _ := filepath.Glob(filepath.Join(argsDir, "*.args"))
		lines = lines[:0]
		for _, f := range files {
			b, _ := os.ReadFile(f)
			lines = append(lines, strings.TrimSpace(string(b)))
		}
		return len(lines) == 2, nil
	}); err != nil {
		t.Fatalf("%d hosted nodes started, want 2", len(lines))
	}
	for _, l := range lines {
		bootstrap := strings.Contains(l, "--bootstrap-kubeconfig")
		joins := strings.Contains(l, "--tunnel-server 127.0.0.1:10262 --tunnel-ca /etc/tunnel-ca.crt --tunnel-server-name edge-tunnel-server")
		if bootstrap != joins || strings.Contains(l, "--tunnel-server") != joins {
			t.Errorf("a node (bootstrap %v) ran with: %s", bootstrap, l)
		}
	}
	v := waitNode(t, c, saID, func(v eci.VirtualNode) bool { return len(v.Events) > 0 })
	skipped := false
	for _, ev := range v.Events {
		skipped = skipped || ev.Reason == "TunnelSkipped"
	}
	if !skipped {
		t.Errorf("the ServiceAccount-mode node's events do not say it runs without the tunnel: %+v", v.Events)
	}
	if v := waitNode(t, c, bootstrapID, func(v eci.VirtualNode) bool { return len(v.Events) > 0 }); len(v.Events) > 0 {
		for _, ev := range v.Events {
			if ev.Reason == "TunnelSkipped" {
				t.Errorf("the bootstrap node skipped the tunnel: %+v", v.Events)
			}
		}
	}
}

// With a network namespace configured, a node's vnode-kubelet runs inside
// it and registers and serves on the namespace's address, not loopback.
func TestHostedNodesRunInTheNetwork(t *testing.T) {
	ns := netns.New(t, 57)
	em, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{"AKID": "SECRET"}, Runtime: "sim", Delays: emulator.Delays{VirtualNode: time.Hour}})
	if _, err := New(Config{Emulator: em, Endpoint: "http://" + ep, Binary: "/bin/true", Dir: t.TempDir(),
		Network: Network{Namespace: ns.Name, IP: "127.0.0.1"}}); err == nil {
		t.Fatal("a loopback node address in a network namespace was accepted")
	}
	argsDir := t.TempDir()
	bin := script(t, `echo "$(ip netns identify $$) $*" > "`+argsDir+`/$$.args"; exec sleep 60`)
	startHostWith(t, Config{Emulator: em, Endpoint: "http://" + ep, Binary: bin, Dir: t.TempDir(),
		Network: Network{Namespace: ns.Name, IP: ns.IP.String()}})
	create(t, ep)
	var line string
	waitCount(t, func() bool {
		files, _ := filepath.Glob(filepath.Join(argsDir, "*.args"))
		if len(files) == 0 {
			return false
		}
		b, _ := os.ReadFile(files[0])
		line = strings.TrimSpace(string(b))
		return line != ""
	})
	if !strings.HasPrefix(line, ns.Name+" ") || !strings.Contains(line, "--node-ip "+ns.IP.String()+" ") ||
		!strings.Contains(line, "--listen "+ns.IP.String()+":") {
		t.Fatalf("the node ran as (namespace, then arguments): %s; want namespace %s and address %s", line, ns.Name, ns.IP)
	}
}
