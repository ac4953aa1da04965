package eciprofile

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vnode-project/vnode/eciprofile/webhook"
	"github.com/vnode-project/vnode/integration/controlplane"
)

const (
	benchNamespace = "bench"
	webhookName    = "eci-profile.vnode.io"
	apiserverHist  = "apiserver_admission_webhook_admission_duration_seconds"
)

// BenchmarkAdmissionLatency measures what eci-profile adds to pod creation
// at 100 creations a second: for each of 3 rounds, a phase without the
// webhook (its configuration's namespaceSelector excludes the benchmark's
// namespace) and a phase with it (every pod matches a ConfigMap selector
// and a Selector, so every pod is mutated). Per phase it reports the
// client-side pod-creation p50/p99 and, with the webhook, the API server's
// own apiserver_admission_webhook_admission_duration_seconds for the
// webhook (mean and p99 interpolated in its buckets, whose first bound is
// 5 ms) and the webhook's handler time (eci_profile_admission_duration_seconds).
// The scheduler is off: pods are only created.
//
//	go test -run '^$' -bench AdmissionLatency -benchtime 1x -timeout 20m ./integration/eciprofile
//
// VNODE_BENCH_SECONDS sets each phase's length (default 10 s: 1,000 pods).
func BenchmarkAdmissionLatency(b *testing.B) {
	ctx := context.Background()
	e := newEnv(ctx, b, controlplane.Options{WithoutScheduler: true})
	e.setConfigMap(ctx, b, map[string]string{"vSwitchIds": "vsw-bench", "securityGroupId": "sg-bench",
		"selectors": `[{"name":"bench-ns","namespaceSelector":{"matchLabels":{"eci":"true"}},"effect":{"annotations":{"k8s.aliyun.com/eci-use-specs":"2-4Gi"}}}]`})
	hook := e.startWebhook(ctx, b)
	for i := range 5 {
		e.applySelector(ctx, b, fmt.Sprintf("s%d", i), map[string]any{"priority": i, "objectLabels": map[string]any{"matchLabels": map[string]any{"app": "bench"}},
			"effect": map[string]any{"labels": map[string]any{"selected": "yes"}}})
	}
	e.createNamespace(ctx, b, benchNamespace, map[string]string{"eci": "true"})
	seconds := 10
	if v := os.Getenv("VNODE_BENCH_SECONDS"); v != "" {
		var err error
		if seconds, err = strconv.Atoi(v); err != nil || seconds < 1 {
			b.Fatalf("VNODE_BENCH_SECONDS=%q", v)
		}
	}
	cfg := rest.CopyConfig(e.cp.AdminConfig)
	cfg.QPS, cfg.Burst = 1000, 1000
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	labels := map[string]string{"app": "bench"}
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for round := 1; round <= 3; round++ {
			for _, on := range []bool{false, true} {
				e.setWebhookEnabled(ctx, b, on)
				before := e.apiserverHistogram(ctx, b)
				hookBefore := handlerHistogram(b, hook)
				lat := createAtRate(ctx, b, client, fmt.Sprintf("r%d-%t", round, on), labels, 100, seconds)
				after := e.apiserverHistogram(ctx, b)
				hookAfter := handlerHistogram(b, hook)
				name := "without-webhook"
				if on {
					name = "with-webhook"
				}
				p50, p99 := percentile(lat, 0.50), percentile(lat, 0.99)
				line := fmt.Sprintf("round %d %-15s pods %d  create p50 %6.2f ms  p99 %6.2f ms", round, name, len(lat), ms(p50), ms(p99))
				if on {
					d := diff(after, before)
					hd := diff(hookAfter, hookBefore)
					line += fmt.Sprintf("  | apiserver webhook admission: calls %d mean %.2f ms p99 %s  | handler: mean %.3f ms p99 %s",
						d.count, 1000*d.sum/float64(max(d.count, 1)), d.p99(), 1000*hd.sum/float64(max(hd.count, 1)), hd.p99())
				}
				b.Log(line)
				b.ReportMetric(ms(p99), fmt.Sprintf("ms-p99-%s-r%d", name, round))
			}
		}
	}
}

// setWebhookEnabled includes or excludes the benchmark's namespace in the
// webhook configuration and waits until admission follows.
func (e *env) setWebhookEnabled(ctx context.Context, tb testing.TB, on bool) {
	tb.Helper()
	api := e.client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	mwc, err := api.Get(ctx, webhook.DefaultWebhookConfig, metav1.GetOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	values := []string{"kube-system", ownNamespace}
	if !on {
		values = append(values, benchNamespace)
	}
	mwc.Webhooks[0].NamespaceSelector.MatchExpressions[0].Values = values
	if _, err := api.Update(ctx, mwc, metav1.UpdateOptions{}); err != nil {
		tb.Fatal(err)
	}
	waitFor(ctx, tb, fmt.Sprintf("the webhook to be called: %t", on), func(ctx context.Context) (bool, error) {
		p, err := e.dryRun(ctx, benchNamespace, newPod("probe", map[string]string{"app": "bench"}, ""))
		return err == nil && targetsVirtual(p) == on, err
	})
}

// createAtRate creates rate pods a second for seconds, each from its own
// goroutine so a slow create never delays the next, and returns each
// create's latency.
func createAtRate(ctx context.Context, tb testing.TB, client kubernetes.Interface, prefix string, labels map[string]string, rate, seconds int) []time.Duration {
	total := rate * seconds
	lat := make([]time.Duration, total)
	errs := make([]error, total)
	var wg sync.WaitGroup
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	for i := range total {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d) // pacing the load generator, not synchronisation
		}
		wg.Go(func() {
			t0 := time.Now()
			_, errs[i] = client.CoreV1().Pods(benchNamespace).Create(ctx, newPod(fmt.Sprintf("%s-%d", prefix, i), labels, ""), metav1.CreateOptions{})
			lat[i] = time.Since(t0)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			tb.Fatalf("creating a pod: %v", err)
		}
	}
	return lat
}

func percentile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(math.Ceil(q*float64(len(s))))-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// hist is a cumulative histogram: upper bound -> count.
type hist struct {
	bounds []float64
	counts []uint64
	count  uint64
	sum    float64
}

func diff(a, b hist) hist {
	d := hist{bounds: a.bounds, count: a.count - b.count, sum: a.sum - b.sum}
	for i := range a.counts {
		c := a.counts[i]
		if i < len(b.counts) {
			c -= b.counts[i]
		}
		d.counts = append(d.counts, c)
	}
	return d
}

// p99 interpolates linearly inside the bucket holding the 99th percentile,
// as histogram_quantile does.
func (h hist) p99() string {
	if h.count == 0 {
		return "n/a"
	}
	rank := 0.99 * float64(h.count)
	lower, prev := 0.0, uint64(0)
	for i, ub := range h.bounds {
		if float64(h.counts[i]) >= rank {
			frac := (rank - float64(prev)) / float64(h.counts[i]-prev)
			return fmt.Sprintf("%.2f ms (≤ %.1f ms: %.1f %%)", 1000*(lower+frac*(ub-lower)), 1000*h.bounds[0], 100*float64(h.counts[0])/float64(h.count))
		}
		lower, prev = ub, h.counts[i]
	}
	return fmt.Sprintf("> %.0f ms", 1000*lower)
}

func fromDTO(m *dto.Metric) hist {
	var h hist
	if m == nil {
		return h
	}
	for _, bk := range m.GetHistogram().GetBucket() {
		h.bounds = append(h.bounds, bk.GetUpperBound())
		h.counts = append(h.counts, bk.GetCumulativeCount())
	}
	h.count, h.sum = m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
	return h
}

// apiserverHistogram is the API server's admission-duration histogram for
// eci-profile's webhook (admitted pod creations).
func (e *env) apiserverHistogram(ctx context.Context, tb testing.TB) hist {
	tb.Helper()
	raw, err := e.client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		tb.Fatalf("reading the API server's /metrics: %v", err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		tb.Fatalf("parsing the API server's /metrics: %v", err)
	}
	var total *dto.Metric
	for _, m := range mfs[apiserverHist].GetMetric() {
		want := map[string]string{"name": webhookName, "operation": "CREATE", "type": "admit"}
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
				delete(want, l.GetName())
			}
		}
		if len(want) == 0 {
			total = m
		}
	}
	return fromDTO(total)
}

func handlerHistogram(tb testing.TB, h *runningHook) hist {
	mfs, err := h.registry.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var out hist
	for _, mf := range mfs {
		if mf.GetName() != "eci_profile_admission_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			hm := fromDTO(m)
			if out.bounds == nil {
				out = hm
				continue
			}
			for i := range out.counts {
				out.counts[i] += hm.counts[i]
			}
			out.count += hm.count
			out.sum += hm.sum
		}
	}
	return out
}
