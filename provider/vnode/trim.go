package vnode

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/util/watchlist"

	"github.com/vnode-project/vnode/provider"
)

// trimmedClient is the client virtual-kubelet's informers list and watch
// through: it drops managedFields from the pods, secrets, configMaps and
// services they cache. Nothing on the node reads them, nodeutil offers no
// informer transform, and at 10,000 pods they are megabytes held twice (in
// the informer and in virtual-kubelet's last-synced copy of each pod).
// Pods also lose dropAnnotations, the provider's own (see newTrimmedClient).
// Writes and reads of single objects pass through unchanged.
type trimmedClient struct {
	kubernetes.Interface
	dropAnnotations []string
}

// newTrimmedClient is the virtual node's: its pods also lose the
// provider's own annotations. They are the provider's output, written by
// its status writes; shown to virtual-kubelet's pod controller, each pod's
// first one would make it re-sync the whole pod (a go-cmp of the pod with
// its previous version, GetPod, UpdatePod) and keep that version besides
// the informer's: at 10,000 pods the largest single part of the node's CPU
// (BENCHMARKS.md).
func newTrimmedClient(c kubernetes.Interface) trimmedClient {
	return trimmedClient{Interface: c, dropAnnotations: provider.OwnAnnotations()}
}

// TrimManagedFields returns c with the managedFields trimming the virtual
// node's informers get (for benchmarks that measure virtual-kubelet alone).
func TrimManagedFields(c kubernetes.Interface) kubernetes.Interface {
	return trimmedClient{Interface: c}
}

// IsWatchListSemanticsUnSupported answers for the wrapped client: the
// informers ask, and a wrapper must not hide a client's limits.
func (c trimmedClient) IsWatchListSemanticsUnSupported() bool {
	return watchlist.DoesClientNotSupportWatchListSemantics(c.Interface)
}

func (c trimmedClient) CoreV1() typedcorev1.CoreV1Interface {
	return trimmedCore{c.Interface.CoreV1(), c.dropAnnotations}
}

type trimmedCore struct {
	typedcorev1.CoreV1Interface
	dropAnnotations []string
}

func (c trimmedCore) Pods(ns string) typedcorev1.PodInterface {
	return trimmedPods{c.CoreV1Interface.Pods(ns), c.dropAnnotations}
}

func (c trimmedCore) Secrets(ns string) typedcorev1.SecretInterface {
	return trimmedSecrets{c.CoreV1Interface.Secrets(ns)}
}

func (c trimmedCore) ConfigMaps(ns string) typedcorev1.ConfigMapInterface {
	return trimmedConfigMaps{c.CoreV1Interface.ConfigMaps(ns)}
}

func (c trimmedCore) Services(ns string) typedcorev1.ServiceInterface {
	return trimmedServices{c.CoreV1Interface.Services(ns)}
}

type trimmedPods struct {
	typedcorev1.PodInterface
	dropAnnotations []string
}

func (c trimmedPods) List(ctx context.Context, o metav1.ListOptions) (*corev1.PodList, error) {
	l, err := c.PodInterface.List(ctx, o)
	return trimList(l, err, c.dropAnnotations...)
}

func (c trimmedPods) Watch(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	w, err := c.PodInterface.Watch(ctx, o)
	return trimWatch(w, err, c.dropAnnotations...)
}

type trimmedSecrets struct{ typedcorev1.SecretInterface }

func (c trimmedSecrets) List(ctx context.Context, o metav1.ListOptions) (*corev1.SecretList, error) {
	l, err := c.SecretInterface.List(ctx, o)
	return trimList(l, err)
}

func (c trimmedSecrets) Watch(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return trimWatch(c.SecretInterface.Watch(ctx, o))
}

type trimmedConfigMaps struct{ typedcorev1.ConfigMapInterface }

func (c trimmedConfigMaps) List(ctx context.Context, o metav1.ListOptions) (*corev1.ConfigMapList, error) {
	l, err := c.ConfigMapInterface.List(ctx, o)
	return trimList(l, err)
}

func (c trimmedConfigMaps) Watch(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return trimWatch(c.ConfigMapInterface.Watch(ctx, o))
}

type trimmedServices struct{ typedcorev1.ServiceInterface }

func (c trimmedServices) List(ctx context.Context, o metav1.ListOptions) (*corev1.ServiceList, error) {
	l, err := c.ServiceInterface.List(ctx, o)
	return trimList(l, err)
}

func (c trimmedServices) Watch(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return trimWatch(c.ServiceInterface.Watch(ctx, o))
}

func trimList[L runtime.Object](l L, err error, drop ...string) (L, error) {
	if err != nil {
		return l, err
	}
	// Only typed lists come here, whose items always have metadata.
	_ = meta.EachListItem(l, func(o runtime.Object) error {
		trimObject(o, drop)
		return nil
	})
	return l, nil
}

func trimWatch(w watch.Interface, err error, drop ...string) (watch.Interface, error) {
	if err != nil {
		return nil, err
	}
	return watch.Filter(w, func(ev watch.Event) (watch.Event, bool) {
		trimObject(ev.Object, drop)
		return ev, true
	}), nil
}

// trimObject drops o's managedFields and the annotations named in drop.
// The objects are the client's own decodes, not yet shared.
func trimObject(o runtime.Object, drop []string) {
	m, err := meta.Accessor(o)
	if err != nil {
		return
	}
	m.SetManagedFields(nil)
	if ann := m.GetAnnotations(); len(ann) > 0 && len(drop) > 0 {
		for _, k := range drop {
			delete(ann, k)
		}
		if len(ann) == 0 {
			// As the pod was before the provider annotated it: the API
			// sends no empty map, and virtual-kubelet's go-cmp tells a
			// nil map from an empty one (a re-sync of every pod).
			m.SetAnnotations(nil)
		}
	}
}
