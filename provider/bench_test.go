package provider

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/vnode-project/vnode/eci/model"
	"github.com/vnode-project/vnode/provider/translate"
)

// BenchmarkHeldPerPod measures the heap the provider holds for each
// running pod (its entry, pod record, status, annotations and the events
// it was told of), as at 10,000 pods it is the provider's share of the
// node's memory: 2,000 pods created with a pod lister (as
// vnode-kubelet runs), their instances Running with two events each, one
// sync; the heap after a collection, less the cloud's instances and the
// pods themselves, over the pods.
//
//	go test -run '^$' -bench HeldPerPod -benchtime 3x ./provider/
func BenchmarkHeldPerPod(b *testing.B) {
	const n = 2000
	ctx := context.Background()
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	for b.Loop() {
		pods := make([]*corev1.Pod, n)
		idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
		for i := range pods {
			pods[i] = pod(fmt.Sprintf("p-%d", i))
			_ = idx.Add(pods[i])
		}
		cloud := newMemCloud()
		p := New(Config{Node: translate.NodeSettings{ClusterName: "c1", NodeName: "vn", VSwitchIDs: []string{"vsw-1"}, SecurityGroupID: "sg-1"}, Version: "test", Log: log},
			cloud, fake.NewClientset(), translate.Sources{Objects: noObjects{}}, &record.FakeRecorder{})
		p.SetPodLister(corev1listers.NewPodLister(idx))
		p.NotifyPods(ctx, func(*corev1.Pod) {})
		h := &harness{cloud: cloud, p: p}
		before := heap()
		for _, pd := range pods {
			if err := p.CreatePod(ctx, pd); err != nil {
				b.Fatal(err)
			}
		}
		h.drain(ctx)
		started := time.Now()
		for id := range cloud.insts {
			cloud.set(id, func(i *model.Instance) {
				i.Status, i.IntranetIP, i.Created = translate.StatusRunning, "192.168.1.5", started
				i.Containers = []model.ContainerStatus{{Name: "c", Image: "nginx", Ready: true, Current: model.ContainerState{State: "Running", Started: started}}}
				i.Events = []model.Event{
					{Type: "Normal", Reason: "Scheduled", Message: "Successfully assigned to cn-hangzhou-h", Name: id + ".1", Count: 1},
					{Type: "Normal", Reason: "Started", Message: "Started the container group", Name: id + ".2", Count: 1},
				}
			})
		}
		if err := p.Sync(ctx); err != nil {
			b.Fatal(err)
		}
		h.drain(ctx)
		if got := len(p.entries); got != n {
			b.Fatalf("%d entries, want %d", got, n)
		}
		cloud.mu.Lock()
		cloud.insts, cloud.groups, cloud.tokens, cloud.changed, cloud.fetched = nil, nil, nil, nil, nil
		cloud.mu.Unlock()
		after := heap()
		b.ReportMetric(float64(int64(after)-int64(before))/n, "held-B/pod")
		runtime.KeepAlive(pods)
		runtime.KeepAlive(p)
	}
}
