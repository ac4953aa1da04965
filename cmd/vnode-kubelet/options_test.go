package main

import (
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/vnode-project/vnode/internal/config"
)

func TestTunnelOptions(t *testing.T) {
	dir := t.TempDir()
	cc := &config.Context{Kubeconfig: filepath.Join(dir, "kubeconfig")}
	files := &rest.Config{TLSClientConfig: rest.TLSClientConfig{CertFile: "/pki/node.crt", KeyFile: "/pki/node.key"}}

	if got, err := tunnelOptions(options{}, cc, files); err != nil || got != nil {
		t.Fatalf("without --tunnel-server: %+v %v, want no tunnel", got, err)
	}
	if _, err := tunnelOptions(options{tunnelCA: "/ca.crt"}, cc, files); err == nil {
		t.Fatal("--tunnel-ca without --tunnel-server accepted")
	}
	if _, err := tunnelOptions(options{tunnelServer: "tunnel:10262"}, cc, files); err == nil || !strings.Contains(err.Error(), "--tunnel-ca") {
		t.Fatalf("--tunnel-server without --tunnel-ca: %v", err)
	}
	got, err := tunnelOptions(options{tunnelServer: "tunnel:10262", tunnelCA: "/ca.crt"}, cc, files)
	if err != nil || got.CertFile != "/pki/node.crt" || got.KeyFile != "/pki/node.key" || got.Server != "tunnel:10262" || got.CAFile != "/ca.crt" {
		t.Fatalf("with a kubeconfig's certificate files: %+v %v", got, err)
	}
	// TLS bootstrap: the rotating pair in the certificate directory.
	got, err = tunnelOptions(options{tunnelServer: "tunnel:10262", tunnelCA: "/ca.crt", bootstrapKubeconfig: "/boot"}, cc, &rest.Config{})
	if err != nil || got.CertFile != filepath.Join(dir, "pki", "vnode-client-current.pem") || got.KeyFile != "" {
		t.Fatalf("with TLS bootstrap: %+v %v", got, err)
	}
	// A token-only kubeconfig has no certificate to name the node.
	if _, err := tunnelOptions(options{tunnelServer: "tunnel:10262", tunnelCA: "/ca.crt"}, cc, &rest.Config{BearerToken: "x"}); err == nil {
		t.Fatal("a kubeconfig without certificate files accepted")
	}
}

func TestAPIRateFlags(t *testing.T) {
	cmd := newCommand()
	cmd.SetArgs([]string{"--kube-api-qps=0", "--config=/nonexistent"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--kube-api-qps") {
		t.Fatalf("a zero QPS: %v", err)
	}
	if q, _ := newCommand().Flags().GetFloat32("kube-api-qps"); q != 100 {
		t.Fatalf("default QPS %v, want 100", q)
	}
}

func TestECIRateLimitsFlag(t *testing.T) {
	cmd := newCommand()
	cmd.SetArgs([]string{"--eci-rate-limits=create=1000", "--config=/nonexistent"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--eci-rate-limits") || !strings.Contains(err.Error(), "CreateContainerGroup=") {
		t.Fatalf("a per-class limit: %v", err)
	}
	cmd = newCommand()
	cmd.SetArgs([]string{"--eci-rate-limits=CreateContainerGroup=500,DeleteContainerGroup=-1", "--config=/nonexistent"})
	if err := cmd.Execute(); err == nil || strings.Contains(err.Error(), "--eci-rate-limits") {
		t.Fatalf("per-action limits were refused (or the missing config was not what failed): %v", err)
	}
}

func TestMemoryLimitFlag(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	cmd := newCommand()
	cmd.SetArgs([]string{"--memory-limit=lots", "--config=/nonexistent"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--memory-limit") {
		t.Fatalf("a bad --memory-limit: %v", err)
	}
	if v, _ := newCommand().Flags().GetString("memory-limit"); v != "auto" {
		t.Fatalf("default --memory-limit %q, want auto", v)
	}
}

// The serving certificate's source is checked before anything else (TLS
// bootstrap may wait long): files or a CSR, not both, not neither.
func TestRotateServerCertificatesFlag(t *testing.T) {
	for args, want := range map[string]string{
		"--rotate-server-certificates --tls-cert-file=c --tls-private-key-file=k": "not both",
		"": "--rotate-server-certificates",
	} {
		cmd := newCommand()
		cmd.SetArgs(append(strings.Fields(args), "--client-ca-file=ca", "--config=/nonexistent"))
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error naming %q", args, err, want)
		}
	}
	if v, _ := newCommand().Flags().GetBool("rotate-server-certificates"); v {
		t.Fatal("--rotate-server-certificates is on by default; like the kubelet's, it is off")
	}
}
