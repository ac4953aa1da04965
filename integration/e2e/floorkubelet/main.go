// Command floorkubelet is the memory and CPU floor of
// BenchmarkScaleKubeletRSS: virtual-kubelet's node and pod controllers,
// assembled as vnode-kubelet assembles them (vnode.NewVKNode: nodeutil's
// informers, node and lease, the pod queues paced by per-pod backoff only,
// no success events; vnode-kubelet's API client rate and workers) over a
// provider that runs nothing and keeps only what it must to report a pod:
// its metadata, container names and status. Whatever it uses at 10,000
// pods, any provider on these controllers uses at least.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	vknode "github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"github.com/vnode-project/vnode/provider/vnode"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the node's identity")
	name := flag.String("nodename", "floor", "node name")
	pods := flag.Int("pods", 10000, "pods capacity")
	trim := flag.Bool("trim-managed-fields", false, "give virtual-kubelet's informers the client vnode-kubelet gives them, which drops managedFields")
	flag.Parse()
	if err := run(*kubeconfig, *name, *pods, *trim); err != nil {
		fmt.Fprintln(os.Stderr, "floorkubelet:", err)
		os.Exit(1)
	}
}

func run(kubeconfig, name string, pods int, trim bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 100, 200 // vnode-kubelet's defaults (--kube-api-qps, --kube-api-burst)
	var kube kubernetes.Interface
	if kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	if trim {
		kube = vnode.TrimManagedFields(kube)
	}
	// As nodeutil.NewNode and vnode-kubelet do: events to the API server.
	eb := record.NewBroadcaster()
	eb.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events(corev1.NamespaceAll)})
	defer eb.Shutdown()
	n, err := vnode.NewVKNode(vnode.VKNodeConfig{
		Name: name, Client: kube, InformerResync: time.Minute, // nodeutil's default resync
		Workers:  20, // vnode-kubelet's default
		Recorder: eb.NewRecorder(scheme.Scheme, corev1.EventSource{Component: name + "/pod-controller"}),
	}, func(pc nodeutil.ProviderConfig) (nodeutil.Provider, vknode.NodeProvider, error) {
		capacity := corev1.ResourceList{
			corev1.ResourcePods:   resource.MustParse(strconv.Itoa(pods)),
			corev1.ResourceCPU:    resource.MustParse("100000"),
			corev1.ResourceMemory: resource.MustParse("100000Gi"),
		}
		pc.Node.Status.Capacity, pc.Node.Status.Allocatable = capacity, capacity
		// Ready from the start, as nodeutil marks a node with no node
		// provider of its own.
		pc.Node.Status.Phase = corev1.NodeRunning
		pc.Node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
			Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		return &provider{pods: map[string]*corev1.Pod{}}, vknode.NewNaiveNodeProvider(), nil
	})
	if err != nil {
		return err
	}
	return n.Run(ctx)
}

// provider runs every pod at once and keeps a skeleton of it. The floor
// starts no kubelet API (no TLS configured), so the API's methods, left to
// the nil embedded interface, are never called.
type provider struct {
	nodeutil.Provider
	mu     sync.Mutex
	pods   map[string]*corev1.Pod
	notify func(*corev1.Pod)
}

func key(ns, name string) string { return ns + "/" + name }

func (p *provider) CreatePod(_ context.Context, pod *corev1.Pod) error {
	sk := &corev1.Pod{ObjectMeta: *pod.ObjectMeta.DeepCopy()}
	sk.ManagedFields = nil
	now := metav1.Now()
	sk.Status = corev1.PodStatus{Phase: corev1.PodRunning, StartTime: &now, QOSClass: pod.Status.QOSClass,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}}}
	for _, c := range pod.Spec.Containers {
		sk.Spec.Containers = append(sk.Spec.Containers, corev1.Container{Name: c.Name, Image: c.Image})
		sk.Status.ContainerStatuses = append(sk.Status.ContainerStatuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image, Ready: true,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}})
	}
	p.mu.Lock()
	p.pods[key(pod.Namespace, pod.Name)] = sk
	notify := p.notify
	p.mu.Unlock()
	if notify != nil {
		notify(sk.DeepCopy())
	}
	return nil
}

func (p *provider) UpdatePod(context.Context, *corev1.Pod) error { return nil }

func (p *provider) DeletePod(_ context.Context, pod *corev1.Pod) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := key(pod.Namespace, pod.Name)
	if _, ok := p.pods[k]; !ok {
		return errdefs.NotFound("no such pod")
	}
	delete(p.pods, k)
	return nil
}

func (p *provider) GetPod(_ context.Context, ns, name string) (*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pod, ok := p.pods[key(ns, name)]; ok {
		return pod.DeepCopy(), nil
	}
	return nil, errdefs.NotFound("no such pod")
}

func (p *provider) GetPodStatus(ctx context.Context, ns, name string) (*corev1.PodStatus, error) {
	pod, err := p.GetPod(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

func (p *provider) GetPods(context.Context) ([]*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*corev1.Pod, 0, len(p.pods))
	for _, pod := range p.pods {
		out = append(out, pod.DeepCopy())
	}
	return out, nil
}

func (p *provider) NotifyPods(_ context.Context, f func(*corev1.Pod)) {
	p.mu.Lock()
	p.notify = f
	p.mu.Unlock()
}
