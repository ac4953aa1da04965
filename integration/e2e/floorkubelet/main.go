// Command floorkubelet is the memory and CPU floor of
// BenchmarkScaleKubeletRSS: virtual-kubelet's node and pod controllers,
// assembled as vnode-kubelet assembles them (vnode.NewVKNode: nodeutil's
// informers, node and lease, the pod queues paced by per-pod backoff only,
// no success events; vnode-kubelet's API client rate and workers) over a
// provider that runs nothing and keeps only what it must to report a pod:
// its metadata, container names and status. Whatever it uses at 10,000
// pods, any provider on these controllers uses at least.
//
// By default its creates are paced as any provider's on ECI must be:
// CreatePod only queues the pod, and a worker makes its "instance" Running
// as ECI's published CreateContainerGroup quota and burst allow
// (-eci-create-quota=false runs every pod at once, the unpaced floor). It
// takes vnode-kubelet's --memory-limit (default auto), so that both run
// under the same soft limit in a memory cgroup.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	vknode "github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"

	"github.com/vnode-project/vnode/eci/model"
	"github.com/vnode-project/vnode/internal/config"
	"github.com/vnode-project/vnode/internal/memlimit"
	vnodeprovider "github.com/vnode-project/vnode/provider"
	"github.com/vnode-project/vnode/provider/vnode"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the node's identity")
	name := flag.String("nodename", "floor", "node name")
	pods := flag.Int("pods", 10000, "pods capacity")
	trim := flag.Bool("trim-managed-fields", false, "give virtual-kubelet's informers the client vnode-kubelet gives them, which drops managedFields")
	paced := flag.Bool("eci-create-quota", true, "pace creates at ECI's published CreateContainerGroup quota and burst, as on ECI; false runs every pod at once")
	memLimit := flag.String("memory-limit", memlimit.Auto, memlimit.Usage)
	annotate := flag.Bool("annotate", false, "PATCH each pod's instance-id annotation once it runs, as vnode-kubelet writes its annotations: the floor of a provider that annotates its pods")
	heapProfile := flag.String("heap-profile", "", "on SIGUSR1, write a heap profile (after a collection) to this file: the benchmark's VNODE_BENCH_HEAP_PROFILE, as vnode-kubelet serves it on /debug/pprof/heap")
	flag.Parse()
	if *heapProfile != "" {
		go writeHeapOnSignal(*heapProfile)
	}
	if err := memlimit.Set(*memLimit, logrus.New()); err != nil {
		fmt.Fprintln(os.Stderr, "floorkubelet:", err)
		os.Exit(1)
	}
	if err := run(*kubeconfig, *name, *pods, *trim, *paced, *annotate); err != nil {
		fmt.Fprintln(os.Stderr, "floorkubelet:", err)
		os.Exit(1)
	}
}

func run(kubeconfig, name string, pods int, trim, paced, annotate bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 100, 200 // vnode-kubelet's defaults (--kube-api-qps, --kube-api-burst)
	var kube kubernetes.Interface
	if kube, err = kubernetes.NewForConfig(vnode.Protobuf(cfg)); err != nil { // as vnode-kubelet's client
		return err
	}
	if trim {
		kube = vnode.TrimManagedFields(kube)
	}
	// As nodeutil.NewNode and vnode-kubelet do: events to the API server.
	eb := record.NewBroadcaster()
	eb.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events(corev1.NamespaceAll)})
	defer eb.Shutdown()
	var limiter *rate.Limiter
	if paced {
		limiter = createLimiter()
	}
	p := newProvider(limiter, clock.RealClock{})
	if annotate {
		p.kube = kube
	}
	n, err := vnode.NewVKNode(vnode.VKNodeConfig{
		Name: name, Client: kube, InformerResync: time.Minute, // nodeutil's default resync
		Workers:  20, // vnode-kubelet's default
		Recorder: eb.NewRecorder(scheme.Scheme, corev1.EventSource{Component: name + "/pod-controller"}),
	}, func(pc nodeutil.ProviderConfig) (nodeutil.Provider, vknode.NodeProvider, error) {
		p.lister = pc.Pods
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
		return p, vknode.NewNaiveNodeProvider(), nil
	})
	if err != nil {
		return err
	}
	if p.creates != nil {
		go p.run(ctx)
	}
	return n.Run(ctx)
}

// createLimiter is ECI's published CreateContainerGroup quota and the
// burst assumed with it (model.QuotaBurst): what paces any provider's
// creates on ECI, vnode's included.
func createLimiter() *rate.Limiter {
	perMin := model.Quotas["CreateContainerGroup"]
	return rate.NewLimiter(rate.Limit(float64(perMin)/60), model.QuotaBurst(perMin))
}

// provider runs every pod it is given and keeps a skeleton of it. Paced
// (a limiter), CreatePod only queues the pod, Pending, and run makes it
// Running as the limiter's tokens allow; unpaced, CreatePod makes it
// Running at once. The floor starts no kubelet API (no TLS configured),
// so the API's methods, left to the nil embedded interface, are never
// called.
type provider struct {
	nodeutil.Provider
	limiter *rate.Limiter                    // nil: unpaced
	clock   clock.Clock                      // the limiter's time
	creates workqueue.TypedInterface[string] // pods waiting for a create token; nil: unpaced
	kube    kubernetes.Interface             // set: annotate each pod once it runs
	lister  corev1listers.PodLister          // virtual-kubelet's informer, to wait for the PATCH
	mu      sync.Mutex
	pods    map[string]*corev1.Pod
	notify  func(*corev1.Pod)
}

func newProvider(limiter *rate.Limiter, clk clock.Clock) *provider {
	p := &provider{limiter: limiter, clock: clk, pods: map[string]*corev1.Pod{}}
	if limiter != nil {
		p.creates = workqueue.NewTyped[string]()
	}
	return p
}

func key(ns, name string) string { return ns + "/" + name }

func (p *provider) CreatePod(_ context.Context, pod *corev1.Pod) error {
	sk := &corev1.Pod{ObjectMeta: *pod.ObjectMeta.DeepCopy()}
	sk.ManagedFields = nil
	sk.Status = corev1.PodStatus{Phase: corev1.PodPending, QOSClass: pod.Status.QOSClass}
	for _, c := range pod.Spec.Containers {
		sk.Spec.Containers = append(sk.Spec.Containers, corev1.Container{Name: c.Name, Image: c.Image})
	}
	k := key(pod.Namespace, pod.Name)
	p.mu.Lock()
	p.pods[k] = sk
	p.mu.Unlock()
	if p.creates == nil {
		p.start(k)
		return nil
	}
	p.creates.Add(k)
	return nil
}

// run makes the queued pods Running, one create token each, until ctx
// ends. One worker is enough: a create here costs nothing but its token.
func (p *provider) run(ctx context.Context) {
	go func() { <-ctx.Done(); p.creates.ShutDown() }()
	for {
		k, shutdown := p.creates.Get()
		if shutdown {
			return
		}
		var err error
		if p.pending(k) { // a pod deleted while queued takes no token
			if err = p.token(ctx); err == nil {
				p.start(k)
			}
		}
		p.creates.Done(k)
		if err != nil {
			return
		}
	}
}

func (p *provider) pending(k string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	sk, ok := p.pods[k]
	return ok && sk.Status.Phase == corev1.PodPending
}

// token waits for one create token on p's clock.
func (p *provider) token(ctx context.Context) error {
	now := p.clock.Now()
	r := p.limiter.ReserveN(now, 1)
	if !r.OK() {
		return fmt.Errorf("create limiter allows no create (burst %d)", p.limiter.Burst())
	}
	d := r.DelayFrom(now)
	if d <= 0 {
		return nil
	}
	t := p.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		r.CancelAt(p.clock.Now())
		return ctx.Err()
	}
}

// start makes pod k's "instance" Running, unless it was deleted first,
// and reports it.
func (p *provider) start(k string) {
	p.mu.Lock()
	sk, ok := p.pods[k]
	if !ok || sk.Status.Phase != corev1.PodPending { // deleted, or started already
		p.mu.Unlock()
		return
	}
	now := metav1.Now()
	sk.Status = corev1.PodStatus{Phase: corev1.PodRunning, StartTime: &now, QOSClass: sk.Status.QOSClass,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}}}
	for _, c := range sk.Spec.Containers {
		sk.Status.ContainerStatuses = append(sk.Status.ContainerStatuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image, Ready: true,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}})
	}
	if p.kube != nil {
		// The pod reported carries the annotation, as vnode's do:
		// virtual-kubelet writes the status with the reported metadata,
		// which would otherwise erase it.
		if sk.Annotations == nil {
			sk.Annotations = map[string]string{}
		}
		sk.Annotations[vnodeprovider.AnnotationInstanceID] = "floor-" + sk.Name
	}
	notify, out := p.notify, sk.DeepCopy()
	p.mu.Unlock()
	if p.kube != nil {
		// Beside the create worker, as vnode's PATCHes are beside its
		// creates.
		go func() {
			p.annotate(out)
			if notify != nil {
				notify(out)
			}
		}()
		return
	}
	if notify != nil {
		notify(out)
	}
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

// writeHeapOnSignal writes a heap profile to path at each SIGUSR1. The
// floor serves no HTTP, so a signal asks for it.
func writeHeapOnSignal(path string) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	for range sig {
		runtime.GC()
		var buf bytes.Buffer
		err := pprof.WriteHeapProfile(&buf)
		if err == nil {
			err = config.WriteSecretFile(path, buf.Bytes())
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "floorkubelet: heap profile:", err)
		}
	}
}

// annotate PATCHes out's instance-id annotation, as vnode-kubelet writes
// its annotations, and waits for virtual-kubelet's informer to have it.
func (p *provider) annotate(out *corev1.Pod) {
	// One PATCH a pod, as vnode-kubelet's instance annotations.
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, vnodeprovider.AnnotationInstanceID, "floor-"+out.Name)
	if _, err := p.kube.CoreV1().Pods(out.Namespace).Patch(context.Background(), out.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, "floorkubelet: annotating", out.Namespace+"/"+out.Name, err)
	}
	// As vnode's provider: the status goes out once virtual-kubelet's
	// informer has the PATCH (up to 5 s), or its write conflicts.
	for range 250 {
		if l, err := p.lister.Pods(out.Namespace).Get(out.Name); err != nil || l.Annotations[vnodeprovider.AnnotationInstanceID] != "" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
}
