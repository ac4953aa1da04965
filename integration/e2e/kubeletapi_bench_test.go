package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/vnode-project/vnode/eci"
	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/eci/model"
	"github.com/vnode-project/vnode/provider/vnode"
)

// BenchmarkKubeletAPI measures kubectl logs and exec through the real API
// server to a virtual node whose ECI is the emulator's process runtime:
// round-trip latency (p50/p99 over a fixed sample count, so -benchtime 1x
// gives meaningful percentiles) and throughput. The requests go through
// client-go (the pods/log API and remotecommand's SPDY and WebSocket
// executors, as kubectl does) so the figures are not dominated by forking
// kubectl; the kubectl-* sub-benchmarks are the same requests with the
// binary, for comparison. Measurements only, never assertions.
//
//	go test -run '^$' -bench KubeletAPI -benchtime 1x -timeout 20m ./integration/e2e/
//
// The node's ECI client normally holds exec and log calls to ECI's
// published 500 a minute (one per 120 ms after a burst of 8), which would
// be all that back-to-back requests measure; the benchmark lifts that
// limit to measure the path itself. VNODE_BENCH_ECI_LIMITS=default keeps
// it. VNODE_BENCH_SAMPLES (default 50), VNODE_BENCH_EXEC_MIB (64) and
// VNODE_BENCH_LOG_MIB (32) shrink the benchmark for local tries.
func BenchmarkKubeletAPI(b *testing.B) {
	samples := kapiEnvInt(b, "VNODE_BENCH_SAMPLES", 50)
	execMiB := kapiEnvInt(b, "VNODE_BENCH_EXEC_MIB", 64)
	logMiB := kapiEnvInt(b, "VNODE_BENCH_LOG_MIB", 32)
	const (
		ns          = "kapi"
		podName     = "kapi"
		kubectlRuns = 10 // forking kubectl is slow; fewer samples
		tputRuns    = 3  // throughput runs; the median is reported
	)

	e := newEnv(b, "process")
	n := kapiStartNode(b, e, "vn-kapi")
	ctx, cancel := context.WithTimeout(context.Background(), 18*time.Minute)
	defer cancel()
	cfg := rest.CopyConfig(e.cp.AdminConfig)
	cfg.QPS, cfg.Burst = -1, 0 // the benchmark's own client must not throttle it
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := e.cp.CreateNamespace(ctx, ns); err != nil {
		b.Fatal(err)
	}
	// 128-byte numbered lines (127 characters and the newline).
	logLines := logMiB << 20 / 128
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: ns, Labels: map[string]string{"app": podName}},
		Spec: corev1.PodSpec{NodeName: n.name, RestartPolicy: corev1.RestartPolicyNever, Tolerations: []corev1.Toleration{vkToleration()},
			Containers: []corev1.Container{
				{Name: "main", Image: "busybox", Command: []string{"/bin/sh", "-c", "seq -f 'line %g' 1 100; exec sleep 3600"}},
				{Name: "biglog", Image: "busybox", Command: []string{"/bin/sh", "-c",
					fmt.Sprintf("seq -f '%%0127.0f' 1 %d; exec sleep 3600", logLines)}},
			}}}
	if _, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	kapiWaitRunning(ctx, b, c, ns, podName)

	tail10 := int64(10)
	getLogs := func(ctx context.Context, container string, opts corev1.PodLogOptions) (int64, error) {
		opts.Container = container
		rc, err := c.CoreV1().Pods(ns).GetLogs(podName, &opts).Stream(ctx)
		if err != nil {
			return 0, err
		}
		defer rc.Close()
		return io.Copy(io.Discard, rc)
	}
	// The big log must be whole before it is read: its last line is there.
	lastLine := fmt.Sprintf("%0127d\n", logLines)
	start := time.Now()
	err = wait.PollUntilContextTimeout(ctx, time.Second, 10*time.Minute, true, func(ctx context.Context) (bool, error) {
		one := int64(1)
		out, err := c.CoreV1().Pods(ns).GetLogs(podName, &corev1.PodLogOptions{Container: "biglog", TailLines: &one}).DoRaw(ctx)
		return err == nil && string(out) == lastLine, nil
	})
	if err != nil {
		b.Fatalf("the %d MiB log was not whole in 10 minutes", logMiB)
	}
	fmt.Printf("the %d MiB log (%d lines) was whole %s after the pod ran\n", logMiB, logLines, time.Since(start).Round(time.Millisecond))

	execURL := func(container string, command ...string) *rest.Request {
		return c.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(podName).SubResource("exec").
			VersionedParams(&corev1.PodExecOptions{Container: container, Command: command, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	}
	execWith := func(ctx context.Context, proto string, stdout io.Writer, command ...string) error {
		req := execURL("main", command...)
		var ex remotecommand.Executor
		var err error
		switch proto {
		case "spdy":
			ex, err = remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
		default:
			ex, err = remotecommand.NewWebSocketExecutor(cfg, "GET", req.URL().String())
		}
		if err != nil {
			return err
		}
		var stderr bytes.Buffer
		if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: stdout, Stderr: &stderr}); err != nil {
			return fmt.Errorf("%w (stderr %q)", err, stderr.String())
		}
		return nil
	}
	kubectl := func(ctx context.Context, args ...string) error {
		cmd := e.cp.Kubectl(ctx, append([]string{"-n", ns}, args...)...)
		var errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = io.Discard, &errb
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, errb.String())
		}
		return nil
	}

	var table []kapiRow
	latency := func(name string, count int, op func(ctx context.Context) error) {
		b.Run(name, func(b *testing.B) {
			for i := 0; i < 3; i++ { // warm up: connections, caches, the first describe
				if err := op(ctx); err != nil {
					b.Fatalf("warm-up: %v", err)
				}
			}
			var d []time.Duration
			for i := 0; i < count; i++ {
				t0 := time.Now()
				if err := op(ctx); err != nil {
					b.Fatalf("request %d: %v", i, err)
				}
				d = append(d, time.Since(t0))
			}
			sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
			r := kapiRow{name: name, n: count, p50: kapiPct(d, 0.50), p99: kapiPct(d, 0.99), max: d[len(d)-1]}
			b.ReportMetric(kapiMS(r.p50), "p50-ms")
			b.ReportMetric(kapiMS(r.p99), "p99-ms")
			table = append(table, r)
		})
	}
	throughput := func(name string, runs int, want int64, op func(ctx context.Context) (int64, error)) {
		b.Run(name, func(b *testing.B) {
			var rates []float64
			var took []time.Duration
			for i := 0; i < runs; i++ {
				t0 := time.Now()
				got, err := op(ctx)
				el := time.Since(t0)
				if err != nil {
					b.Fatalf("run %d: %v", i, err)
				}
				if got != want {
					b.Fatalf("run %d read %d bytes, want %d", i, got, want)
				}
				rates = append(rates, float64(got)/(1<<20)/el.Seconds())
				took = append(took, el)
			}
			sort.Float64s(rates)
			sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
			r := kapiRow{name: name, n: runs, mib: float64(want) / (1 << 20), rate: rates[len(rates)/2], p50: took[len(took)/2], max: took[len(took)-1]}
			b.ReportMetric(r.rate, "MiB/s")
			b.ReportMetric(kapiMS(r.p50), "p50-ms")
			table = append(table, r)
		})
	}

	latency("logs-tail10", samples, func(ctx context.Context) error {
		got, err := getLogs(ctx, "main", corev1.PodLogOptions{TailLines: &tail10})
		if err == nil && got != int64(len("line 91\n")*9+len("line 100\n")) {
			err = fmt.Errorf("tail 10 read %d bytes", got)
		}
		return err
	})
	latency("exec-true-websocket", samples, func(ctx context.Context) error { return execWith(ctx, "websocket", io.Discard, "true") })
	latency("exec-true-spdy", samples, func(ctx context.Context) error { return execWith(ctx, "spdy", io.Discard, "true") })
	latency("kubectl-logs-tail10", kubectlRuns, func(ctx context.Context) error {
		return kubectl(ctx, "logs", podName, "-c", "main", "--tail=10")
	})
	latency("kubectl-exec-true", kubectlRuns, func(ctx context.Context) error {
		return kubectl(ctx, "exec", podName, "-c", "main", "--", "true")
	})
	execBytes := int64(execMiB) << 20
	for _, proto := range []string{"websocket", "spdy"} {
		throughput("exec-stdout-"+proto, tputRuns, execBytes, func(ctx context.Context) (int64, error) {
			var cw kapiCounter
			err := execWith(ctx, proto, &cw, "head", "-c", strconv.FormatInt(execBytes, 10), "/dev/zero")
			return cw.n, err
		})
	}
	logBytes := int64(logLines) * 128
	// One run: the node pages the log 1 MiB per ECI call and the emulator
	// reads the whole file for each, so a full read is slow and quadratic.
	throughput("logs-full", 1, logBytes, func(ctx context.Context) (int64, error) {
		return getLogs(ctx, "biglog", corev1.PodLogOptions{})
	})
	// kubectl logs --limit-bytes pages only from the start (the API has no
	// offset), so one 1 MiB page is the paged read's unit: its latency.
	throughput("logs-limitbytes-1MiB", tputRuns, 1<<20, func(ctx context.Context) (int64, error) {
		lim := int64(1 << 20)
		return getLogs(ctx, "biglog", corev1.PodLogOptions{LimitBytes: &lim})
	})

	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%-22s %4s %10s %10s %10s %9s %9s\n", "kubelet API", "n", "p50 ms", "p99 ms", "max ms", "MiB", "MiB/s")
	for _, r := range table {
		if r.mib > 0 {
			fmt.Fprintf(&sb, "%-22s %4d %10.1f %10s %10.1f %9.1f %9.1f\n", r.name, r.n, kapiMS(r.p50), "-", kapiMS(r.max), r.mib, r.rate)
		} else {
			fmt.Fprintf(&sb, "%-22s %4d %10.1f %10.1f %10.1f %9s %9s\n", r.name, r.n, kapiMS(r.p50), kapiMS(r.p99), kapiMS(r.max), "-", "-")
		}
	}
	fmt.Fprintf(&sb, "ECI client limits: %s\n", map[bool]string{true: "default (operate 500/min)", false: "lifted"}[os.Getenv("VNODE_BENCH_ECI_LIMITS") == "default"])
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(&sb, "load average: %s", la)
	}
	// Printed as well as logged: a parent benchmark's log is not always shown.
	b.Log(sb.String())
	fmt.Print(sb.String())
}

// kapiRow is one line of BenchmarkKubeletAPI's table; for a throughput row
// p50 and max are the run durations.
type kapiRow struct {
	name          string
	n             int
	p50, p99, max time.Duration
	mib, rate     float64
}

// kapiCounter counts and discards what is written to it.
type kapiCounter struct{ n int64 }

func (c *kapiCounter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// kapiPct is the nearest-rank percentile q (0-1] of sorted durations.
func kapiPct(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func kapiMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func kapiEnvInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// kapiStartNode is startNode for a benchmark: the node's ECI rate limits
// are lifted unless VNODE_BENCH_ECI_LIMITS=default, so the figures measure
// the path, not the limiter.
func kapiStartNode(b *testing.B, e *env, name string) *node {
	b.Helper()
	var limits map[string]int
	switch v := os.Getenv("VNODE_BENCH_ECI_LIMITS"); v {
	case "default":
	case "":
		// Lifted on both sides: the client's buckets and the emulator's
		// quotas (the create and delete quotas stay).
		limits = map[string]int{}
		for action := range model.Quotas {
			if action != "CreateContainerGroup" && action != "DeleteContainerGroup" {
				limits[action] = -1
			}
		}
		e.emu.SetQuota(emulator.Quota{PerMinute: limits})
	default:
		b.Fatalf("VNODE_BENCH_ECI_LIMITS=%q: want empty or default", v)
	}
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	client, err := eci.New(eci.Config{RegionID: "cn-hangzhou", Endpoint: "http://" + e.ep, AccessKeyID: akID, AccessKeySecret: akSecret, Logger: logger,
		RateLimits: limits})
	if err != nil {
		b.Fatal(err)
	}
	n := e.startNodeWith(b, name, nil, func(o *vnode.Options) { o.Cloud, o.Checker = client, client })
	n.client = client
	return n
}

// kapiWaitRunning waits for the pod to run on the virtual node.
func kapiWaitRunning(ctx context.Context, b *testing.B, c kubernetes.Interface, ns, name string) {
	b.Helper()
	var last *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := c.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = p
		return p.Status.Phase == corev1.PodRunning, nil
	})
	if err != nil {
		phase := "unknown"
		if last != nil {
			phase = string(last.Status.Phase) + "/" + last.Status.Reason
		}
		b.Fatalf("pod %s/%s not running in 2 minutes: %s", ns, name, phase)
	}
}
