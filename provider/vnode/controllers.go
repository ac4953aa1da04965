package vnode

import (
	"context"
	"fmt"
	"time"

	vknode "github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"
)

// controllers are virtual-kubelet's pod and node controllers, wired like
// nodeutil.NewNode does it but on informers that drop managedFields
// (nodeutil offers no hook for a transform; at 10,000 pods the fields
// cost a third of the cache) and without its cluster-wide Service
// informer, which only resolves env that vnode resolves itself.
type controllers struct {
	pods    informers.SharedInformerFactory // this node's pods
	objects informers.SharedInformerFactory // secrets and configMaps
	pc      *vknode.PodController
	nc      *vknode.NodeController
	workers int
	ready   chan struct{}
}

// podSource is what the provider and the node status are built from.
type podSource struct {
	Pods       corev1listers.PodLister
	ConfigMaps corev1listers.ConfigMapLister
	Secrets    corev1listers.SecretLister
}

// dropManagedFields is an informer transform: nothing in vnode reads
// managedFields, and an update without them keeps the server's.
func dropManagedFields(obj any) (any, error) {
	if a, err := meta.Accessor(obj); err == nil {
		a.SetManagedFields(nil)
	}
	return obj, nil
}

// controllerConfig holds what newControllers needs besides the provider.
type controllerConfig struct {
	name     string
	kube     kubernetes.Interface
	recorder record.EventRecorder
	workers  int
	resync   time.Duration
	// node is the Node object to register; newProvider may change it.
	node *corev1.Node
	// mux gets virtual-kubelet's kubelet API routes.
	mux api.ServeMux
}

// newControllers builds the informers, calls newProvider with their
// listers, and builds the controllers around what it returns.
func newControllers(cfg controllerConfig, newProvider func(podSource) (nodeutil.Provider, vknode.NodeProvider, error)) (*controllers, error) {
	c := &controllers{
		pods: informers.NewSharedInformerFactoryWithOptions(cfg.kube, cfg.resync,
			nodeutil.PodInformerFilter(cfg.name), informers.WithTransform(dropManagedFields)),
		objects: informers.NewSharedInformerFactoryWithOptions(cfg.kube, cfg.resync, informers.WithTransform(dropManagedFields)),
		workers: cfg.workers,
		ready:   make(chan struct{}),
	}
	podInformer := c.pods.Core().V1().Pods()
	secrets := c.objects.Core().V1().Secrets()
	configMaps := c.objects.Core().V1().ConfigMaps()
	// Never started: the pod controller requires a Service informer but
	// reads it only to resolve env, which SkipDownwardAPIResolution skips.
	services := informers.NewSharedInformerFactory(cfg.kube, 0).Core().V1().Services()

	p, np, err := newProvider(podSource{Pods: podInformer.Lister(), ConfigMaps: configMaps.Lister(), Secrets: secrets.Lister()})
	if err != nil {
		return nil, fmt.Errorf("creating the provider: %w", err)
	}
	pods := podInformer.Lister()
	cfg.mux.Handle("/", api.PodHandler(api.PodHandlerConfig{
		RunInContainer:    p.RunInContainer,
		AttachToContainer: p.AttachToContainer,
		GetContainerLogs:  p.GetContainerLogs,
		GetPods:           p.GetPods,
		GetPodsFromKubernetes: func(context.Context) ([]*corev1.Pod, error) {
			return pods.List(labels.Everything())
		},
		GetStatsSummary:    p.GetStatsSummary,
		GetMetricsResource: p.GetMetricsResource,
		PortForward:        p.PortForward,
	}, true))

	c.nc, err = vknode.NewNodeController(np, cfg.node, cfg.kube.CoreV1().Nodes(),
		vknode.WithNodeEnableLeaseV1(nodeutil.NodeLeaseV1Client(cfg.kube), vknode.DefaultLeaseDuration))
	if err != nil {
		return nil, fmt.Errorf("creating the node controller: %w", err)
	}
	c.pc, err = vknode.NewPodController(vknode.PodControllerConfig{
		PodClient:         cfg.kube.CoreV1(),
		EventRecorder:     cfg.recorder,
		Provider:          p,
		PodInformer:       podInformer,
		SecretInformer:    secrets,
		ConfigMapInformer: configMaps,
		ServiceInformer:   services,
		// vnode resolves env itself: virtual-kubelet cannot resolve
		// status.podIP or resourceFieldRef (ECI resolves the IP).
		SkipDownwardAPIResolution: true,
	})
	if err != nil {
		return nil, fmt.Errorf("creating the pod controller: %w", err)
	}
	return c, nil
}

// newNodeObject is the Node virtual-kubelet registers before the provider
// adds its own labels, taints, capacity and addresses.
func newNodeObject(name string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			"type": "virtual-kubelet", "kubernetes.io/role": "agent", "kubernetes.io/hostname": name,
		}},
		Status: corev1.NodeStatus{Phase: corev1.NodePending, Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady}, {Type: corev1.NodeDiskPressure}, {Type: corev1.NodeMemoryPressure},
			{Type: corev1.NodePIDPressure}, {Type: corev1.NodeNetworkUnavailable},
		}},
	}
}

// Ready is closed once the pod controller has synced and the node is
// registered.
func (c *controllers) Ready() <-chan struct{} { return c.ready }

// Run starts the informers and the controllers, in nodeutil's order (the
// pod controller first, so the node is registered only once pods are
// handled), and returns when either controller stops or ctx ends.
func (c *controllers) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.pods.Start(ctx.Done())
	c.objects.Start(ctx.Done())
	defer c.pods.Shutdown()
	defer c.objects.Shutdown()

	go c.pc.Run(ctx, c.workers) //nolint:errcheck // its Err is read below
	defer func() { cancel(); <-c.pc.Done() }()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-c.pc.Ready():
	case <-c.pc.Done():
		return fmt.Errorf("pod controller: %w", c.pc.Err())
	}

	go c.nc.Run(ctx) //nolint:errcheck // its Err is read below
	defer func() { cancel(); <-c.nc.Done() }()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-c.nc.Ready():
	case <-c.nc.Done():
		return fmt.Errorf("node controller: %w", c.nc.Err())
	}
	close(c.ready)

	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-c.nc.Done():
		return fmt.Errorf("node controller: %w", c.nc.Err())
	case <-c.pc.Done():
		return fmt.Errorf("pod controller: %w", c.pc.Err())
	}
}
