package controlplane

import (
	"context"
	"strings"
)

// MetricsServerVersion is the metrics-server release `make run` serves the
// resource metrics API (kubectl top) with. It is pinned in
// k8sbuild/metrics-server; this constant stamps its version and names its
// folder of the cache.
const MetricsServerVersion = "v0.8.0"

// MetricsServer is metrics-server's binary name in its folder of the cache.
const MetricsServer = "metrics-server"

// metricsServerSet has a folder, stamp and lock of its own: building it
// the first time leaves a cached control plane as it is.
var metricsServerSet = buildSet{
	dir:     "metrics-server-" + MetricsServerVersion,
	modules: []string{"metrics-server"},
	ldflags: metricsServerLDFlags(),
	targets: []buildTarget{{MetricsServer, "metrics-server", "sigs.k8s.io/metrics-server/cmd/metrics-server", true}},
}

// EnsureMetricsServer builds metrics-server into the cache unless this
// exact build is there (as EnsureBinaries does for the control plane).
func EnsureMetricsServer(ctx context.Context, opts BuildOptions) (*Binaries, error) {
	return ensure(ctx, opts, metricsServerSet)
}

// metricsServerLDFlags stamp the version as metrics-server's own Makefile
// does (it reports client-go's version variables).
func metricsServerLDFlags() string {
	p := "k8s.io/client-go/pkg/version"
	return strings.Join([]string{"-s", "-w",
		"-X", p + ".gitVersion=" + MetricsServerVersion,
		"-X", p + ".gitTreeState=clean",
		"-X", p + ".buildDate=2025-06-01T00:00:00Z",
	}, " ")
}
