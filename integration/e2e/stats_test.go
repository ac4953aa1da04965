package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/vnode-project/vnode/integration/netns"
	"github.com/vnode-project/vnode/provider/vnode"
)

// /stats/summary and /metrics/resource reach the virtual node through the
// API server's node proxy, as metrics-server's and kubectl's requests do;
// the API server verifies the node's serving certificate and the node
// authorises the API server by SubjectAccessReview.
func TestStatsThroughAPIServer(t *testing.T) {
	e := newEnv(t, "process")
	host := netns.New(t, 41)
	n := e.startNodeWith(t, "vn-stats", host, func(o *vnode.Options) { o.Profiling = true })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := e.cp.CreateNamespace(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "busy", Namespace: "s", Labels: map[string]string{"app": "busy"}},
		Spec: corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{Name: "spin", Image: "busybox",
			Command: []string{"/bin/sh", "-c", "x=0; while true; do x=$((x+1)); done"}}}}}
	if _, err := e.cp.Client.CoreV1().Pods("s").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPods(ctx, t, e.cp.Client, "s", "app=busy", time.Minute, allRunning(1))
	time.Sleep(2 * time.Second) // let the spinning container accumulate CPU time

	out, err := e.cp.Kubectl(ctx, "get", "--raw", "/api/v1/nodes/"+n.name+"/proxy/stats/summary").Output()
	if err != nil {
		t.Fatalf("stats/summary through the API server: %v", err)
	}
	var sum statsv1alpha1.Summary
	if err := json.Unmarshal(out, &sum); err != nil {
		t.Fatalf("decoding the summary: %v\n%s", err, out)
	}
	if sum.Node.NodeName != n.name || len(sum.Pods) != 1 || sum.Pods[0].PodRef.Name != "busy" {
		t.Fatalf("summary: %s", out)
	}
	c := sum.Pods[0].Containers
	if len(c) != 1 || c[0].CPU == nil || *c[0].CPU.UsageCoreNanoSeconds == 0 || *c[0].Memory.WorkingSetBytes == 0 {
		t.Fatalf("container stats: %s", out)
	}
	out, err = e.cp.Kubectl(ctx, "get", "--raw", "/api/v1/nodes/"+n.name+"/proxy/metrics/resource").Output()
	if err != nil {
		t.Fatalf("metrics/resource: %v", err)
	}
	for _, want := range []string{`container_cpu_usage_seconds_total{container="spin",pod="busy",namespace="s"}`, "node_memory_working_set_bytes", "scrape_error 0"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("metrics/resource lacks %s:\n%s", want, out)
		}
	}
	out, err = e.cp.Kubectl(ctx, "get", "--raw", "/api/v1/nodes/"+n.name+"/proxy/pods").Output()
	if err != nil || !strings.Contains(string(out), `"name":"busy"`) {
		t.Fatalf("/pods: %v %s", err, out)
	}
	// Profiles, like the kubelet's, for whoever may use nodes/proxy.
	out, err = e.cp.Kubectl(ctx, "get", "--raw", "/api/v1/nodes/"+n.name+"/proxy/debug/pprof/heap?debug=1").Output()
	if err != nil || !strings.HasPrefix(string(out), "heap profile:") {
		t.Fatalf("/debug/pprof/heap: %v %.200s", err, out)
	}
}
