package local

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The local metrics-server runs with manifests/metrics-server's arguments,
// less the ones that only make sense in its pod, each flag said once; and
// the manifest verifies the kubelets' certificates.
func TestMetricsServerArgsFromTheManifest(t *testing.T) {
	args, err := deploymentArgs(filepath.Join("..", "..", "manifests", metricsServer, "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname", "--kubelet-use-node-status-port", "--metric-resolution=15s"} {
		if !slices.Contains(args, want) {
			t.Errorf("args %v lack the manifest's %s", args, want)
		}
	}
	for _, a := range args {
		if strings.HasPrefix(a, "--cert-dir") || strings.HasPrefix(a, "--secure-port") || strings.Contains(a, "insecure") {
			t.Errorf("args %v keep %s", args, a)
		}
	}

	bad := filepath.Join(t.TempDir(), "deployment.yaml")
	if err := os.WriteFile(bad, []byte("kind: Deployment\nspec:\n  replicaz: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := deploymentArgs(bad); err == nil || !strings.Contains(err.Error(), "replicaz") {
		t.Fatalf("a misspelt field: %v, want an error naming it", err)
	}
}
