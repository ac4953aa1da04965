package controlplane

import (
	"context"
	"testing"
	"time"
)

// BenchmarkStartToReady measures a full control plane's start, from exec of
// etcd to a healthy scheduler, the API server's exec-to-/readyz, and each
// component's RSS a few seconds after start.
//
//	go test -run '^$' -bench StartToReady -benchtime 3x ./integration/controlplane
func BenchmarkStartToReady(b *testing.B) {
	ctx := context.Background()
	bins, err := EnsureBinaries(ctx, BuildOptions{})
	if err != nil {
		b.Fatal(err)
	}
	var apiserver time.Duration
	rss := map[string]int64{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cp, err := Start(ctx, Options{Binaries: bins, Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		apiserver += cp.ReadyAfter[KubeAPIServer]
		time.Sleep(5 * time.Second) // let informers fill their caches
		for name, v := range cp.RSS() {
			rss[name] += v
		}
		cp.Stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(apiserver.Milliseconds())/float64(b.N), "apiserver-ready-ms")
	for name, v := range rss {
		b.ReportMetric(float64(v)/float64(b.N)/(1<<20), name+"-rss-MiB")
	}
}
