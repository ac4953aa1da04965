package approver

import (
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// A token Secret the cache has not seen yet is found in the API server; one
// that exists nowhere stays NotFound.
func TestSecretListerConfirmsCacheMisses(t *testing.T) {
	fresh := tokenSecret("fresh1", nil)
	other := tokenSecret("other1", nil)
	l := SecretLister{
		Lister: corelisters.NewSecretLister(cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})),
		Client: fake.NewClientset(other, fresh),
	}
	got, err := l.GetSecret(fresh.Namespace, fresh.Name)
	if err != nil || got.Name != fresh.Name {
		t.Fatalf("fresh token: %v, %v", got, err)
	}
	if _, err := l.GetSecret(fresh.Namespace, "bootstrap-token-gone00"); !apierrors.IsNotFound(err) {
		t.Fatalf("missing token: %v", err)
	}
	cacheOnly := SecretLister{Lister: l.Lister}
	if _, err := cacheOnly.GetSecret(fresh.Namespace, fresh.Name); !apierrors.IsNotFound(err) {
		t.Fatalf("without a client the cache decides: %v", err)
	}
}
