package eci

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	rtmetrics "runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"

	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/provider/kubeletapi"
)

// emulatorChildEnv makes this test binary serve an emulator instead of
// running tests, so a benchmark can measure the node's process alone.
const emulatorChildEnv = "VNODE_BENCH_EMULATOR_DATADIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(emulatorChildEnv); dir != "" {
		serveEmulatorChild(dir)
		return
	}
	os.Exit(m.Run())
}

// serveEmulatorChild serves an emulator, prints its address and runs
// until its stdin closes (the parent ended).
func serveEmulatorChild(dir string) {
	_, addr, stop, err := emulator.StartLocal(emulator.Config{Credentials: map[string]string{id: secret}, Runtime: "process", DataDir: dir,
		Quota: emulator.Quota{Off: true}}) // the quota is not what the benchmarks measure
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("ADDR " + addr)
	_, _ = io.Copy(io.Discard, os.Stdin)
	stop()
}

// startEmulatorProcess runs an emulator in a child process.
func startEmulatorProcess(b *testing.B) string {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), emulatorChildEnv+"="+b.TempDir())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ADDR ") {
		b.Fatalf("the emulator process said %q (%v)", line, err)
	}
	return strings.TrimSpace(strings.TrimPrefix(line, "ADDR "))
}

// heapObjects is the heap's allocated objects, live or not yet swept:
// what the process holds between collections.
func heapObjects() uint64 { return readMetric("/memory/classes/heap/objects:bytes") }

// heapLive is the heap marked live by the last collection: what the
// process kept, garbage aside.
func heapLive() uint64 { return readMetric("/gc/heap/live:bytes") }

func readMetric(name string) uint64 {
	s := []rtmetrics.Sample{{Name: name}}
	rtmetrics.Read(s)
	return s[0].Value.Uint64()
}

const benchLogBytes = 256 << 20

// BenchmarkLogStream256MiB streams a 256 MiB container log through the
// node's side of kubectl logs (kubeletapi.Logs over this ECI client, the
// real SDK) from an emulator in another process, and reports the heap
// growth of this process while it streams: the peak of the heap's objects
// (live or awaiting collection) over the level before, sampled every
// millisecond (heap-growth-MiB), and the same for the heap the collector
// found live (live-growth-MiB). Issue 12 item 4 wants the first under
// 16 MiB; the benchmark fails above.
//
//	go test -run '^$' -bench LogStream256MiB -benchtime 1x -count 3 ./eci
func BenchmarkLogStream256MiB(b *testing.B) {
	ep := startEmulatorProcess(b)
	// ECI's quota of 500 DescribeContainerLog calls a minute would make
	// this a benchmark of the rate limiter.
	c := newClient(&testing.T{}, ep, func(cfg *Config) {
		cfg.RateLimits = map[string]int{"DescribeContainerLog": -1, "DescribeContainerGroups": -1}
	})
	ctx := context.Background()
	g := group("biglog", "tok-biglog", "/bin/sh", "-c", fmt.Sprintf("head -c %d /dev/zero | tr '\\0' x | fold -w 99", benchLogBytes))
	gid, _, err := c.CreateContainerGroup(ctx, g)
	if err != nil {
		b.Fatal(err)
	}
	for {
		insts, err := listAll(ctx, c, g.Tags)
		if err != nil {
			b.Fatal(err)
		}
		if len(insts) == 1 && (insts[0].Status == "Succeeded" || insts[0].Status == "Failed") {
			if insts[0].Status != "Succeeded" {
				b.Fatalf("the log writer ended %s", insts[0].Status)
			}
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, tc := range []struct {
		name string
		opts api.ContainerLogOpts
		min  int64
	}{
		{"all", api.ContainerLogOpts{}, benchLogBytes},
		{"tail-100000", api.ContainerLogOpts{Tail: 100000}, 99999 * 100},
	} {
		b.Run(tc.name, func(b *testing.B) {
			logs := &kubeletapi.Logs{Source: c}
			var worst, worstLive uint64
			for range b.N {
				runtime.GC()
				base, baseLive := heapObjects(), heapLive()
				var peak, peakLive atomic.Uint64
				stop := make(chan struct{})
				sampled := make(chan struct{})
				go func() {
					defer close(sampled)
					t := time.NewTicker(time.Millisecond)
					defer t.Stop()
					for {
						if h := heapObjects(); h > peak.Load() {
							peak.Store(h)
						}
						if h := heapLive(); h > peakLive.Load() {
							peakLive.Store(h)
						}
						select {
						case <-stop:
							return
						case <-t.C:
						}
					}
				}()
				rc, err := logs.Stream(ctx, gid, "app", tc.opts)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, rc)
				rc.Close()
				close(stop)
				<-sampled
				if err != nil || n < tc.min {
					b.Fatalf("streamed %d bytes (%v), want at least %d", n, err, tc.min)
				}
				b.SetBytes(n)
				if p := peak.Load(); p > base && p-base > worst {
					worst = p - base
				}
				if p := peakLive.Load(); p > baseLive && p-baseLive > worstLive {
					worstLive = p - baseLive
				}
				b.Logf("heap objects before %.1f MiB, peak %.1f MiB", float64(base)/(1<<20), float64(peak.Load())/(1<<20))
			}
			b.ReportMetric(float64(worst)/(1<<20), "heap-growth-MiB")
			b.ReportMetric(float64(worstLive)/(1<<20), "live-growth-MiB")
			if worst >= 16<<20 {
				b.Errorf("the heap grew by %.1f MiB while streaming, over 16 MiB", float64(worst)/(1<<20))
			}
		})
	}
}
