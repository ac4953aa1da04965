package kubeletapi

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	"k8s.io/utils/ptr"

	"github.com/vnode-project/vnode/eci/model"
)

// MaxMetricBatch is how many instances one DescribeMultiContainerGroupMetric
// call may name.
const MaxMetricBatch = 20

// MetricsSource reads the latest metrics of at most MaxMetricBatch
// instances; instances it has no data for are absent from the map.
type MetricsSource interface {
	InstanceMetrics(ctx context.Context, instanceIDs []string) (map[string]model.InstanceSample, error)
}

// RunningPod is a pod with its instance, for stats.
type RunningPod struct {
	Pod        *corev1.Pod
	InstanceID string
}

// Stats serves /stats/summary and /metrics/resource from instance metrics,
// batched (MaxMetricBatch ids a call, calls in parallel) and cached for TTL
// so that metrics-server and kubectl top cost one round per TTL.
type Stats struct {
	NodeName string
	Source   MetricsSource
	Pods     func() []RunningPod
	TTL      time.Duration
	// Started is when the node started: its CPU counter counts from then
	// (default: the first summary asked for).
	Started time.Time

	mu      sync.Mutex
	at      time.Time
	samples map[string]model.InstanceSample
	asked   map[string]bool // instances read in this TTL window
	nodeCPU nodeCPU
}

// collect returns the samples of the running pods and the node's
// cumulative CPU time. One collection at a time: callers in a burst share
// it, and the node's counter moves in the order the samples were taken.
func (s *Stats) collect(ctx context.Context) (map[string]model.InstanceSample, []RunningPod, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	samples, pods, err := s.sample(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	running := make([]string, 0, len(pods))
	sampled := make(map[string]uint64, len(pods))
	for _, p := range pods {
		running = append(running, p.InstanceID)
		if sm, ok := samples[p.InstanceID]; ok {
			sampled[p.InstanceID] = sm.CPUUsageCoreNanoSeconds
		}
	}
	return samples, pods, s.nodeCPU.total(running, sampled), nil
}

// sample reads the running pods' instances, or takes them from the cache.
// The caller holds s.mu.
func (s *Stats) sample(ctx context.Context) (map[string]model.InstanceSample, []RunningPod, error) {
	ttl := s.TTL
	if ttl <= 0 {
		ttl = 10 * time.Second
	}
	pods := s.Pods()
	ids := make([]string, 0, len(pods))
	for _, p := range pods {
		if p.InstanceID != "" {
			ids = append(ids, p.InstanceID)
		}
	}
	sort.Strings(ids)
	fresh := s.samples != nil && time.Since(s.at) < ttl
	want := ids
	if fresh {
		// Cached samples stand for TTL, but a pod that started since
		// must not be missing from the summary until then: read the
		// instances not read yet in this window (one without data yet
		// is not asked again until the next).
		want = nil
		for _, id := range ids {
			if !s.asked[id] {
				want = append(want, id)
			}
		}
		if len(want) == 0 {
			return s.samples, pods, nil
		}
	}
	got, err := s.fetch(ctx, want)
	if err != nil {
		return nil, nil, err
	}
	// A new map each time: callers read the one they got without the lock.
	merged := make(map[string]model.InstanceSample, len(ids))
	if fresh {
		for id, v := range s.samples {
			merged[id] = v
		}
	} else {
		s.at, s.asked = time.Now(), make(map[string]bool, len(ids))
	}
	for _, id := range want {
		s.asked[id] = true
	}
	for id, v := range got {
		merged[id] = v
	}
	s.samples = merged
	return merged, pods, nil
}

// fetch reads the metrics of ids, MaxMetricBatch a call, calls in parallel.
func (s *Stats) fetch(ctx context.Context, ids []string) (map[string]model.InstanceSample, error) {
	samples := make(map[string]model.InstanceSample, len(ids))
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, 4)
	for i := 0; i < len(ids); i += MaxMetricBatch {
		batch := ids[i:min(i+MaxMetricBatch, len(ids))]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			got, err := s.Source.InstanceMetrics(ctx, batch)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if first == nil {
					first = fmt.Errorf("reading metrics of %d instances: %w", len(batch), err)
				}
				return
			}
			for id, v := range got {
				samples[id] = v
			}
		}()
	}
	wg.Wait()
	return samples, first
}

// Summary builds the kubelet's /stats/summary.
func (s *Stats) Summary(ctx context.Context) (*statsv1alpha1.Summary, error) {
	samples, pods, cpuTotal, err := s.collect(ctx)
	if err != nil {
		return nil, err
	}
	now := metav1.Now()
	// The node's figures are as of its newest sample: metrics-server
	// divides the counter's increase by the time between two scrapes'
	// timestamps, so they must date the values, not the request.
	var newest time.Time
	var node model.Usage
	var rx, tx uint64
	out := &statsv1alpha1.Summary{}
	for _, p := range pods {
		sm, ok := samples[p.InstanceID]
		if !ok {
			continue
		}
		t := metav1.NewTime(sm.Time)
		ps := statsv1alpha1.PodStats{
			PodRef:    statsv1alpha1.PodReference{Name: p.Pod.Name, Namespace: p.Pod.Namespace, UID: string(p.Pod.UID)},
			StartTime: startTime(p.Pod),
			CPU:       cpuStats(t, sm.Usage),
			Memory:    memStats(t, sm.Usage),
			Network: &statsv1alpha1.NetworkStats{Time: t, InterfaceStats: statsv1alpha1.InterfaceStats{
				Name: "eth0", RxBytes: ptr.To(sm.RxBytes), TxBytes: ptr.To(sm.TxBytes), RxErrors: ptr.To(sm.RxErrors), TxErrors: ptr.To(sm.TxErrors)}},
		}
		ps.Network.Interfaces = []statsv1alpha1.InterfaceStats{ps.Network.InterfaceStats}
		for _, c := range p.Pod.Spec.Containers {
			u, ok := sm.Containers[c.Name]
			if !ok {
				continue
			}
			ps.Containers = append(ps.Containers, statsv1alpha1.ContainerStats{
				Name: c.Name, StartTime: containerStart(p.Pod, c.Name), CPU: cpuStats(t, u), Memory: memStats(t, u),
			})
		}
		out.Pods = append(out.Pods, ps)
		if sm.Time.After(newest) {
			newest = sm.Time
		}
		node.CPUUsageNanoCores += sm.CPUUsageNanoCores
		node.MemoryWorkingSetBytes += sm.MemoryWorkingSetBytes
		node.MemoryUsageBytes += sm.MemoryUsageBytes
		node.MemoryRSSBytes += sm.MemoryRSSBytes
		rx += sm.RxBytes
		tx += sm.TxBytes
	}
	node.CPUUsageCoreNanoSeconds = cpuTotal
	at := now
	if !newest.IsZero() {
		at = metav1.NewTime(newest)
	}
	out.Node = statsv1alpha1.NodeStats{
		NodeName:  s.NodeName,
		StartTime: metav1.NewTime(s.startedAt(now.Time)),
		CPU:       cpuStats(at, node),
		Memory:    memStats(at, node),
		Network:   &statsv1alpha1.NetworkStats{Time: at, InterfaceStats: statsv1alpha1.InterfaceStats{Name: "eth0", RxBytes: ptr.To(rx), TxBytes: ptr.To(tx)}},
	}
	return out, nil
}

func cpuStats(t metav1.Time, u model.Usage) *statsv1alpha1.CPUStats {
	return &statsv1alpha1.CPUStats{Time: t, UsageNanoCores: ptr.To(u.CPUUsageNanoCores), UsageCoreNanoSeconds: ptr.To(u.CPUUsageCoreNanoSeconds)}
}

func memStats(t metav1.Time, u model.Usage) *statsv1alpha1.MemoryStats {
	m := &statsv1alpha1.MemoryStats{Time: t, WorkingSetBytes: ptr.To(u.MemoryWorkingSetBytes), UsageBytes: ptr.To(u.MemoryUsageBytes), RSSBytes: ptr.To(u.MemoryRSSBytes)}
	if u.MemoryAvailableBytes > 0 {
		m.AvailableBytes = ptr.To(u.MemoryAvailableBytes)
	}
	return m
}

func startTime(p *corev1.Pod) metav1.Time {
	if p.Status.StartTime != nil {
		return *p.Status.StartTime
	}
	return p.CreationTimestamp
}

func containerStart(p *corev1.Pod, name string) metav1.Time {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == name && cs.State.Running != nil {
			return cs.State.Running.StartedAt
		}
	}
	return startTime(p)
}

// MetricsResource builds the kubelet's /metrics/resource families, the
// endpoint metrics-server scrapes.
func (s *Stats) MetricsResource(ctx context.Context) ([]*dto.MetricFamily, error) {
	sum, err := s.Summary(ctx)
	scrapeErr := 0.0
	if err != nil {
		scrapeErr = 1
		sum = &statsv1alpha1.Summary{}
	}
	gauge, counter := dto.MetricType_GAUGE.Enum(), dto.MetricType_COUNTER.Enum()
	fam := func(name, help string, typ *dto.MetricType) *dto.MetricFamily {
		return &dto.MetricFamily{Name: ptr.To(name), Help: ptr.To(help), Type: typ}
	}
	label := func(kv ...string) []*dto.LabelPair {
		var out []*dto.LabelPair
		for i := 0; i+1 < len(kv); i += 2 {
			out = append(out, &dto.LabelPair{Name: ptr.To(kv[i]), Value: ptr.To(kv[i+1])})
		}
		return out
	}
	ms := func(t metav1.Time) *int64 { return ptr.To(t.UnixMilli()) }
	nodeCPU := fam("node_cpu_usage_seconds_total", "Cumulative cpu time consumed by the node in core-seconds", counter)
	nodeMem := fam("node_memory_working_set_bytes", "Current working set of the node in bytes", gauge)
	podCPU := fam("pod_cpu_usage_seconds_total", "Cumulative cpu time consumed by the pod in core-seconds", counter)
	podMem := fam("pod_memory_working_set_bytes", "Current working set of the pod in bytes", gauge)
	cCPU := fam("container_cpu_usage_seconds_total", "Cumulative cpu time consumed by the container in core-seconds", counter)
	cMem := fam("container_memory_working_set_bytes", "Current working set of the container in bytes", gauge)
	cStart := fam("container_start_time_seconds", "Start time of the container since unix epoch in seconds", gauge)
	scrape := fam("scrape_error", "1 if there was an error while getting container metrics, 0 otherwise", gauge)
	scrape.Metric = []*dto.Metric{{Gauge: &dto.Gauge{Value: ptr.To(scrapeErr)}}}
	if n := sum.Node; n.CPU != nil {
		nodeCPU.Metric = append(nodeCPU.Metric, &dto.Metric{Counter: &dto.Counter{Value: ptr.To(float64(*n.CPU.UsageCoreNanoSeconds) / 1e9)}, TimestampMs: ms(n.CPU.Time)})
		nodeMem.Metric = append(nodeMem.Metric, &dto.Metric{Gauge: &dto.Gauge{Value: ptr.To(float64(*n.Memory.WorkingSetBytes))}, TimestampMs: ms(n.Memory.Time)})
	}
	for _, p := range sum.Pods {
		pl := label("namespace", p.PodRef.Namespace, "pod", p.PodRef.Name)
		podCPU.Metric = append(podCPU.Metric, &dto.Metric{Label: pl, Counter: &dto.Counter{Value: ptr.To(float64(*p.CPU.UsageCoreNanoSeconds) / 1e9)}, TimestampMs: ms(p.CPU.Time)})
		podMem.Metric = append(podMem.Metric, &dto.Metric{Label: pl, Gauge: &dto.Gauge{Value: ptr.To(float64(*p.Memory.WorkingSetBytes))}, TimestampMs: ms(p.Memory.Time)})
		for _, c := range p.Containers {
			// The text format gives label order no meaning, but
			// virtual-kubelet's e2e suite (after its mock provider)
			// reads the pod name as the second label of both pod and
			// container series, so pod comes second here too (the
			// kubelet declares container, pod, namespace).
			cl := label("container", c.Name, "pod", p.PodRef.Name, "namespace", p.PodRef.Namespace)
			cCPU.Metric = append(cCPU.Metric, &dto.Metric{Label: cl, Counter: &dto.Counter{Value: ptr.To(float64(*c.CPU.UsageCoreNanoSeconds) / 1e9)}, TimestampMs: ms(c.CPU.Time)})
			cMem.Metric = append(cMem.Metric, &dto.Metric{Label: cl, Gauge: &dto.Gauge{Value: ptr.To(float64(*c.Memory.WorkingSetBytes))}, TimestampMs: ms(c.Memory.Time)})
			cStart.Metric = append(cStart.Metric, &dto.Metric{Label: cl, Gauge: &dto.Gauge{Value: ptr.To(float64(c.StartTime.Unix()))}})
		}
	}
	return []*dto.MetricFamily{nodeCPU, nodeMem, podCPU, podMem, cCPU, cMem, cStart, scrape}, nil
}

// nodeCPU keeps the node's cumulative CPU time a counter, as
// node_cpu_usage_seconds_total (and the summary's usageCoreNanoSeconds)
// must be: the plain sum of its pods' counters falls when a pod goes or an
// instance's counter starts again, and metrics-server then drops the
// node's figures ("unexpected decrease in cumulative CPU usage value").
// The last counter of an instance that went stays in the total.
type nodeCPU struct {
	last map[string]uint64 // each running instance's counter when last sampled
	gone uint64            // the last counters of instances gone or restarted
}

// total is the node's counter, given the running instances and the
// counters sampled now; a running instance without a sample this time
// counts with its last one (it has not gone).
func (n *nodeCPU) total(running []string, sampled map[string]uint64) uint64 {
	next := make(map[string]uint64, len(running))
	for _, id := range running {
		v, ok := sampled[id]
		prev, seen := n.last[id]
		switch {
		case !ok && !seen:
			continue
		case !ok:
			v = prev
		case seen && v < prev:
			n.gone += prev // its counter started again
		}
		next[id] = v
	}
	for id, v := range n.last {
		if _, running := next[id]; !running {
			n.gone += v
		}
	}
	n.last = next
	sum := n.gone
	for _, v := range next {
		sum += v
	}
	return sum
}

// startedAt is the node's start time, fixed at the first call if Started
// was not given: a start time that moved with every scrape would tell a
// consumer the counters restarted.
func (s *Stats) startedAt(now time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Started.IsZero() {
		s.Started = now
	}
	return s.Started
}
