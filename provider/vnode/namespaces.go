package vnode

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// namespaceCache reads Namespaces from an informer: translation looks at a
// pod's namespace (its vnode.io/allowed-pod-annotations) whenever the pod
// sets a guarded annotation the node alone does not allow.
type namespaceCache struct {
	factory informers.SharedInformerFactory
	lister  corev1listers.NamespaceLister
	synced  cache.InformerSynced
}

func newNamespaceCache(kube kubernetes.Interface) *namespaceCache {
	f := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithTransform(func(o any) (any, error) {
		if ro, ok := o.(runtime.Object); ok {
			trimObject(ro, nil)
		}
		return o, nil
	}))
	inf := f.Core().V1().Namespaces()
	return &namespaceCache{factory: f, lister: inf.Lister(), synced: inf.Informer().HasSynced}
}

// Namespace returns the named Namespace. Until the informer has synced it
// errs (a retry, not a refusal): an empty cache would refuse what a
// namespace allows.
func (n *namespaceCache) Namespace(name string) (*corev1.Namespace, error) {
	if !n.synced() {
		return nil, errors.New("the namespace cache has not synced yet (the node needs get, list and watch on namespaces: see manifests/vnode)")
	}
	ns, err := n.lister.Get(name)
	if err != nil {
		return nil, fmt.Errorf("reading namespace %s from the cache: %w", name, err)
	}
	return ns, nil
}
