package vnode

import (
	"context"
	"fmt"
	"time"

	vknode "github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// Per-pod retry backoff of virtual-kubelet's pod queues: client-go's
// controller default without its shared bucket.
const (
	podRetryBase = 5 * time.Millisecond
	podRetryMax  = 1000 * time.Second
)

// podQueueLimiter paces one of the pod controller's queues: each pod backs
// off on its own failures, and nothing else. nodeutil.NewNode leaves the
// queues on client-go's DefaultTypedControllerRateLimiter, whose shared
// bucket (10 a second, burst 100) virtual-kubelet's queue consults on every
// enqueue, not only on retries: a burst of 1,000 pods then reached CreatePod
// at 10 pods a second (the 90 s p99 of bind to create) and its status
// writes at 10 a second (each pod's Running write queued behind every
// other pod's earlier write), whatever the node's API budget. That budget
// is the API client's QPS and burst; a second, smaller one inside it only
// made pods wait.
func podQueueLimiter() workqueue.TypedRateLimiter[any] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[any](podRetryBase, podRetryMax)
}

// VKNode is virtual-kubelet's node and pod controllers over a provider,
// assembled as nodeutil.NewNode does (the same informers, node spec, lease
// and kubelet API routes) but with podQueueLimiter on the pod controller's
// queues, which nodeutil offers no option for, and without virtual-kubelet's
// success events. Exported for the scale benchmark's floor
// (integration/e2e/floorkubelet), which must stand on the same controllers.
type VKNode struct {
	nc        *vknode.NodeController
	pc        *vknode.PodController
	factories []informers.SharedInformerFactory
	workers   int
	ready     chan struct{}
}

// VKNodeConfig is what NewVKNode needs.
type VKNodeConfig struct {
	Name string
	// Client lists and watches for the informers and writes pods, events,
	// the node and its lease.
	Client kubernetes.Interface
	// InformerResync is the informers' resync period.
	InformerResync time.Duration
	// Workers is how many pods the pod controller handles at once.
	Workers int
	// Recorder records the pod controller's events; its success events
	// are dropped (podControllerRecorder).
	Recorder record.EventRecorder
	// Mux gets the kubelet API's pod routes (logs, exec, stats, pods).
	Mux api.ServeMux
	// SkipDownwardAPIResolution: the provider resolves env itself.
	SkipDownwardAPIResolution bool
}

// NewVKNode assembles the controllers; newProvider gets nodeutil's starting
// node and must return a node provider.
func NewVKNode(cfg VKNodeConfig, newProvider nodeutil.NewProviderFunc) (*VKNode, error) {
	podFactory := informers.NewSharedInformerFactoryWithOptions(cfg.Client, cfg.InformerResync, nodeutil.PodInformerFilter(cfg.Name))
	scmFactory := informers.NewSharedInformerFactoryWithOptions(cfg.Client, cfg.InformerResync)
	pods := podFactory.Core().V1().Pods()
	secrets := scmFactory.Core().V1().Secrets()
	configMaps := scmFactory.Core().V1().ConfigMaps()
	services := scmFactory.Core().V1().Services()

	// nodeutil's starting node; the provider's constructor fills it in.
	spec := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: cfg.Name, Labels: map[string]string{
			"type": "virtual-kubelet", "kubernetes.io/role": "agent", "kubernetes.io/hostname": cfg.Name,
		}},
		Status: corev1.NodeStatus{Phase: corev1.NodePending},
	}
	p, np, err := newProvider(nodeutil.ProviderConfig{
		Pods: pods.Lister(), ConfigMaps: configMaps.Lister(), Secrets: secrets.Lister(), Services: services.Lister(), Node: spec,
	})
	if err != nil {
		return nil, fmt.Errorf("creating the provider: %w", err)
	}
	if np == nil {
		return nil, fmt.Errorf("the provider gave no node provider")
	}
	if cfg.Mux != nil {
		podLister := pods.Lister()
		cfg.Mux.Handle("/", api.PodHandler(api.PodHandlerConfig{
			RunInContainer:    p.RunInContainer,
			AttachToContainer: p.AttachToContainer,
			GetContainerLogs:  p.GetContainerLogs,
			GetPods:           p.GetPods,
			GetPodsFromKubernetes: func(context.Context) ([]*corev1.Pod, error) {
				return podLister.List(labels.Everything())
			},
			GetStatsSummary:    p.GetStatsSummary,
			GetMetricsResource: p.GetMetricsResource,
			PortForward:        p.PortForward,
		}, true))
	}
	nc, err := vknode.NewNodeController(np, spec, cfg.Client.CoreV1().Nodes(),
		vknode.WithNodeEnableLeaseV1(nodeutil.NodeLeaseV1Client(cfg.Client), vknode.DefaultLeaseDuration))
	if err != nil {
		return nil, fmt.Errorf("creating the node controller: %w", err)
	}
	pc, err := vknode.NewPodController(vknode.PodControllerConfig{
		PodClient:                            cfg.Client.CoreV1(),
		EventRecorder:                        podControllerRecorder{cfg.Recorder},
		Provider:                             p,
		PodInformer:                          pods,
		SecretInformer:                       secrets,
		ConfigMapInformer:                    configMaps,
		ServiceInformer:                      services,
		SkipDownwardAPIResolution:            cfg.SkipDownwardAPIResolution,
		SyncPodsFromKubernetesRateLimiter:    podQueueLimiter(),
		DeletePodsFromKubernetesRateLimiter:  podQueueLimiter(),
		SyncPodStatusFromProviderRateLimiter: podQueueLimiter(),
	})
	if err != nil {
		return nil, fmt.Errorf("creating the pod controller: %w", err)
	}
	return &VKNode{nc: nc, pc: pc, factories: []informers.SharedInformerFactory{podFactory, scmFactory},
		workers: cfg.Workers, ready: make(chan struct{})}, nil
}

// Ready is closed once both controllers are ready.
func (n *VKNode) Ready() <-chan struct{} { return n.ready }

// Run runs the informers, the pod controller and, once it is ready, the
// node controller, until ctx ends or either controller stops; it returns
// after both have stopped.
func (n *VKNode) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, f := range n.factories {
		f.Start(ctx.Done())
	}
	go n.pc.Run(ctx, n.workers) //nolint:errcheck // its Err is read below
	defer func() { cancel(); <-n.pc.Done() }()
	select {
	case <-ctx.Done():
		return nil
	case <-n.pc.Ready():
	case <-n.pc.Done():
		return n.pc.Err()
	}
	go n.nc.Run(ctx) //nolint:errcheck // its Err is read below
	defer func() { cancel(); <-n.nc.Done() }()
	select {
	case <-ctx.Done():
		return nil
	case <-n.nc.Ready():
	case <-n.nc.Done():
		return n.nc.Err()
	}
	close(n.ready)
	select {
	case <-ctx.Done():
		return nil
	case <-n.nc.Done():
		return n.nc.Err()
	case <-n.pc.Done():
		return n.pc.Err()
	}
}
