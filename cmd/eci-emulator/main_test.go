package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdkeci "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"
)

// start runs the command with args until the test ends or stop is called,
// and returns the address of its ready line.
func start(t *testing.T, args ...string) (addr string, stop func()) {
	t.Helper()
	cmd := newCommand()
	cmd.SetArgs(args)
	r, w := io.Pipe()
	cmd.SetOut(w)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx); w.Close() }()
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		cancel()
		t.Fatalf("no ready line: %v (command: %v)", err, <-done)
	}
	go func() { _, _ = io.Copy(io.Discard, r) }()
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on https://")
	if !ok {
		cancel()
		t.Fatalf("ready line %q", line)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("the command ended with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("the command did not stop")
		}
	}
	t.Cleanup(stop)
	return addr, stop
}

// trustingClient is an SDK client for https://addr that trusts only the
// certificate the emulator made, verification on.
func trustingClient(t *testing.T, addr, certFile string) *sdkeci.Client {
	t.Helper()
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", certFile)
	}
	c, err := sdkeci.NewClientWithAccessKey("cn-hangzhou", "id", "secret")
	if err != nil {
		t.Fatal(err)
	}
	c.Domain = addr
	c.SetTransport(&http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}})
	return c
}

// --tls serves https with a certificate made in the data directory; the
// ready line says https; a group created before a restart of the command
// is there after it.
func TestTLSAndRestart(t *testing.T) {
	dir := t.TempDir()
	args := []string{"--listen", "127.0.0.1:0", "--access-key-id", "id", "--access-key-secret", "secret", "--runtime", "sim",
		"--data-dir", dir, "--tls", "--scheduling-delay", "0s", "--pending-delay", "0s"}
	addr, stop := start(t, args...)
	c := trustingClient(t, addr, filepath.Join(dir, "tls", "cert.pem"))
	req := sdkeci.CreateCreateContainerGroupRequest()
	req.Scheme, req.RegionId, req.SecurityGroupId, req.VSwitchId, req.ContainerGroupName = "HTTPS", "cn-hangzhou", "sg-1", "vsw-1", "kept"
	req.Container = &[]sdkeci.CreateContainerGroupContainer{{Name: "app", Image: "busybox"}}
	created, err := c.CreateContainerGroup(req)
	if err != nil {
		t.Fatalf("create over https: %v", err)
	}
	stop()

	addr, _ = start(t, args...)
	c = trustingClient(t, addr, filepath.Join(dir, "tls", "cert.pem"))
	d := sdkeci.CreateDescribeContainerGroupsRequest()
	d.Scheme, d.RegionId, d.ContainerGroupIds = "HTTPS", "cn-hangzhou", `["`+created.ContainerGroupId+`"]`
	got, err := c.DescribeContainerGroups(d)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.ContainerGroups) != 1 || got.ContainerGroups[0].ContainerGroupName != "kept" {
		t.Fatalf("after the restart: %+v", got.ContainerGroups)
	}
}

// --tls-cert without --tls-key is refused before serving.
func TestTLSCertNeedsKey(t *testing.T) {
	cmd := newCommand()
	cmd.SetArgs([]string{"--listen", "127.0.0.1:0", "--access-key-id", "id", "--access-key-secret", "secret", "--runtime", "sim",
		"--data-dir", t.TempDir(), "--tls-cert", filepath.Join(t.TempDir(), "cert.pem")})
	cmd.SetOut(io.Discard)
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("got %v", err)
	}
}

func TestVNodeTunnelServerNeedsCA(t *testing.T) {
	cmd := newCommand()
	cmd.SetArgs([]string{"--listen", "127.0.0.1:0", "--access-key-id", "id", "--access-key-secret", "secret", "--runtime", "sim",
		"--data-dir", t.TempDir(), "--vnode-tunnel-server", "127.0.0.1:10262"})
	cmd.SetOut(io.Discard)
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--vnode-tunnel-ca") {
		t.Fatalf("got %v", err)
	}
}

func TestVNodeNetnsNeedsIP(t *testing.T) {
	for _, ip := range []string{"", "127.0.0.1", "nonsense"} {
		cmd := newCommand()
		cmd.SetArgs([]string{"--listen", "127.0.0.1:0", "--access-key-id", "id", "--access-key-secret", "secret", "--runtime", "sim",
			"--data-dir", t.TempDir(), "--vnode-netns", "vnode-test", "--vnode-ip", ip})
		cmd.SetOut(io.Discard)
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--vnode-ip") {
			t.Fatalf("--vnode-ip %q: got %v", ip, err)
		}
	}
}
