package kubeletapi

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ecimodel "github.com/vnode-project/vnode/eci/model"
)

// cpuSource answers each instance's CPU counter as the test sets it.
type cpuSource struct {
	mu  sync.Mutex
	cpu map[string]uint64 // core-nanoseconds; an absent instance has no sample
	at  time.Time
}

func (c *cpuSource) set(at time.Time, cpu map[string]uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at, c.cpu = at, cpu
}

func (c *cpuSource) InstanceMetrics(_ context.Context, ids []string) (map[string]ecimodel.InstanceSample, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]ecimodel.InstanceSample{}
	for _, id := range ids {
		if v, ok := c.cpu[id]; ok {
			out[id] = ecimodel.InstanceSample{Time: c.at, Usage: ecimodel.Usage{CPUUsageCoreNanoSeconds: v, MemoryWorkingSetBytes: 1 << 20},
				Containers: map[string]ecimodel.Usage{"app": {CPUUsageCoreNanoSeconds: v, MemoryWorkingSetBytes: 1 << 20}}}
		}
	}
	return out, nil
}

func runningPod(id, name string) RunningPod {
	return RunningPod{InstanceID: id, Pod: &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}}
}

// The node's CPU counter never falls: not when a pod goes, not when an
// instance's counter starts again, not when an instance has no sample
// this time. metrics-server discards a node whose counter falls, so
// kubectl top node showed nothing for a window after every scale-down.
func TestNodeCPUIsACounter(t *testing.T) {
	src := &cpuSource{}
	var pods []RunningPod
	s := &Stats{NodeName: "vn", Source: src, Pods: func() []RunningPod { return pods }, TTL: time.Nanosecond}
	nodeCPU := func() float64 {
		t.Helper()
		sum, err := s.Summary(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return float64(*sum.Node.CPU.UsageCoreNanoSeconds) / 1e9
	}
	steps := []struct {
		what string
		pods []RunningPod
		cpu  map[string]uint64
		want float64
	}{
		{"two pods", []RunningPod{runningPod("eci-a", "a"), runningPod("eci-b", "b")}, map[string]uint64{"eci-a": 5e9, "eci-b": 3e9}, 8},
		{"a went", []RunningPod{runningPod("eci-b", "b")}, map[string]uint64{"eci-b": 4e9}, 9},
		{"b started again", []RunningPod{runningPod("eci-b", "b")}, map[string]uint64{"eci-b": 1e9}, 10},
		{"b has no sample", []RunningPod{runningPod("eci-b", "b")}, map[string]uint64{}, 10},
		{"b back, c new", []RunningPod{runningPod("eci-b", "b"), runningPod("eci-c", "c")}, map[string]uint64{"eci-b": 2e9, "eci-c": 1e9}, 12},
	}
	for i, st := range steps {
		pods = st.pods
		src.set(t0.Add(time.Duration(i)*time.Minute), st.cpu)
		if got := nodeCPU(); got != st.want {
			t.Fatalf("%s: node CPU %vs, want %vs", st.what, got, st.want)
		}
	}
}

// /metrics/resource as virtual-kubelet serves it (its own handler), read
// with the Prometheus text parser: the series metrics-server reads
// (node_cpu_usage_seconds_total, node_memory_working_set_bytes,
// container_cpu_usage_seconds_total, container_memory_working_set_bytes)
// carry the samples' time as their timestamp, the node's too: metrics-server
// divides a counter's increase by the time between two timestamps, so a
// node stamped with the request's time would show a wrong rate.
func TestMetricsResourceAsMetricsServerReadsIt(t *testing.T) {
	src := &cpuSource{}
	src.set(t0, map[string]uint64{"eci-a": 1500e6, "eci-b": 500e6})
	pods := []RunningPod{runningPod("eci-a", "a"), runningPod("eci-b", "b")}
	s := &Stats{NodeName: "vn", Source: src, Pods: func() []RunningPod { return pods }}
	srv := httptest.NewServer(api.HandlePodMetricsResource(s.MetricsResource))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; version=0.0.4" {
		t.Fatalf("content type %q", ct)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"node_cpu_usage_seconds_total 2":                            nil,
		"node_memory_working_set_bytes 2.097152e+06":                nil,
		"container_cpu_usage_seconds_total{a ns app} 1.5":           nil,
		"container_cpu_usage_seconds_total{b ns app} 0.5":           nil,
		"container_memory_working_set_bytes{a ns app} 1.048576e+06": nil,
		"container_memory_working_set_bytes{b ns app} 1.048576e+06": nil,
		"pod_cpu_usage_seconds_total{a ns} 1.5":                     nil,
		"pod_memory_working_set_bytes{b ns} 1.048576e+06":           nil,
	}
	got := map[string]bool{}
	for name, f := range fams {
		for _, m := range f.Metric {
			labels := map[string]string{}
			for _, l := range m.Label {
				labels[l.GetName()] = l.GetValue()
			}
			key := name
			switch {
			case labels["container"] != "":
				key += fmt.Sprintf("{%s %s %s}", labels["pod"], labels["namespace"], labels["container"])
			case labels["pod"] != "":
				key += fmt.Sprintf("{%s %s}", labels["pod"], labels["namespace"])
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			key += " " + fmt.Sprint(v)
			got[key] = true
			if _, wanted := want[key]; wanted && m.GetTimestampMs() != t0.UnixMilli() {
				t.Errorf("%s: timestamp %d, want the samples' %d", key, m.GetTimestampMs(), t0.UnixMilli())
			}
		}
	}
	for key := range want {
		if !got[key] {
			t.Errorf("no series %s; got %v", key, got)
		}
	}
}
