package kubeletapi

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vnode-project/vnode/eci/model"
)

type countingSource struct {
	mu      sync.Mutex
	batches [][]string
	fail    bool
}

func (c *countingSource) InstanceMetrics(_ context.Context, ids []string) (map[string]model.InstanceSample, error) {
	c.mu.Lock()
	c.batches = append(c.batches, append([]string(nil), ids...))
	fail := c.fail
	c.mu.Unlock()
	if fail {
		return nil, errors.New("Throttling.User")
	}
	out := map[string]model.InstanceSample{}
	for _, id := range ids {
		if id == "eci-missing" {
			continue
		}
		out[id] = model.InstanceSample{Time: t0, Usage: model.Usage{CPUUsageNanoCores: 100, CPUUsageCoreNanoSeconds: 2e9, MemoryWorkingSetBytes: 1 << 20},
			RxBytes: 10, Containers: map[string]model.Usage{"app": {CPUUsageCoreNanoSeconds: 1e9, MemoryWorkingSetBytes: 512}}}
	}
	return out, nil
}

func TestStatsBatchedAndCached(t *testing.T) {
	src := &countingSource{}
	var pods []RunningPod
	for i := 0; i < 45; i++ {
		pods = append(pods, RunningPod{InstanceID: fmt.Sprintf("eci-%02d", i), Pod: &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: "ns", UID: types.UID(fmt.Sprint(i))},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}})
	}
	pods = append(pods, RunningPod{InstanceID: "eci-missing", Pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "gone"}}})
	s := &Stats{NodeName: "vn", Source: src, Pods: func() []RunningPod { return pods }, TTL: time.Hour}
	sum, err := s.Summary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(src.batches) != 3 {
		t.Fatalf("%d calls for 46 instances, want 3", len(src.batches))
	}
	for _, b := range src.batches {
		if len(b) > MaxMetricBatch {
			t.Fatalf("batch of %d", len(b))
		}
	}
	if len(sum.Pods) != 45 || sum.Node.NodeName != "vn" || *sum.Node.CPU.UsageCoreNanoSeconds != 90e9 {
		t.Fatalf("summary: %d pods, node %+v", len(sum.Pods), sum.Node.CPU)
	}
	if c := sum.Pods[0].Containers; len(c) != 1 || *c[0].Memory.WorkingSetBytes != 512 {
		t.Fatalf("container stats %+v", c)
	}
	// The node's start time stays put from one summary to the next.
	again, err := s.Summary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !again.Node.StartTime.Equal(&sum.Node.StartTime) {
		t.Fatalf("node start time moved: %v, then %v", sum.Node.StartTime, again.Node.StartTime)
	}
	fams, err := s.MetricsResource(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(src.batches) != 3 {
		t.Fatalf("cached scrape called the cloud again (%d calls)", len(src.batches))
	}
	byName := map[string]int{}
	for _, f := range fams {
		byName[f.GetName()] = len(f.Metric)
	}
	if byName["container_cpu_usage_seconds_total"] != 45 || byName["node_memory_working_set_bytes"] != 1 || byName["scrape_error"] != 1 {
		t.Fatalf("families %v", byName)
	}
	for _, f := range fams {
		if f.GetName() == "node_cpu_usage_seconds_total" && f.Metric[0].Counter.GetValue() != 90 {
			t.Fatalf("node cpu seconds %v", f.Metric[0].Counter.GetValue())
		}
	}
}

func TestStatsErrorIsAScrapeError(t *testing.T) {
	src := &countingSource{fail: true}
	s := &Stats{NodeName: "vn", Source: src, Pods: func() []RunningPod {
		return []RunningPod{{InstanceID: "eci-1", Pod: &corev1.Pod{}}}
	}}
	if _, err := s.Summary(context.Background()); err == nil {
		t.Fatal("summary hid a cloud error")
	}
	fams, err := s.MetricsResource(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "scrape_error" && f.Metric[0].Gauge.GetValue() != 1 {
			t.Fatal("scrape_error not set")
		}
	}
}

// A pod that starts while samples are cached shows up at the next scrape,
// at the cost of one call for its instance alone; a deleted one drops out.
func TestStatsCacheTakesNewPods(t *testing.T) {
	src := &countingSource{}
	pod := func(i int) RunningPod {
		return RunningPod{InstanceID: fmt.Sprintf("eci-%02d", i), Pod: &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: "ns", UID: types.UID(fmt.Sprint(i))},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}}
	}
	pods := []RunningPod{pod(0), pod(1)}
	s := &Stats{NodeName: "vn", Source: src, Pods: func() []RunningPod { return pods }, TTL: time.Hour}
	names := func() []string {
		t.Helper()
		sum, err := s.Summary(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range sum.Pods {
			out = append(out, p.PodRef.Name)
		}
		return out
	}
	if got := fmt.Sprint(names()); got != "[p0 p1]" {
		t.Fatalf("pods %s", got)
	}
	pods = []RunningPod{pod(1), pod(2)}
	if got := fmt.Sprint(names()); got != "[p1 p2]" {
		t.Fatalf("after p2 started and p0 went: pods %s", got)
	}
	if got := fmt.Sprint(src.batches); got != "[[eci-00 eci-01] [eci-02]]" {
		t.Fatalf("calls %s, want the new instance read alone", got)
	}
	names()
	if len(src.batches) != 2 {
		t.Fatalf("%d calls: a fully cached scrape called the cloud", len(src.batches))
	}
}
