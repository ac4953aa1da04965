package approver

import (
	"context"
	"fmt"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// SARReviewer answers AccessReviewer with SubjectAccessReviews.
type SARReviewer struct {
	Client kubernetes.Interface
}

// CanCreate implements AccessReviewer.
func (r SARReviewer) CanCreate(ctx context.Context, user UserInfo, subresource string) (bool, error) {
	extra := make(map[string]authorizationv1.ExtraValue, len(user.Extra))
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar := &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User:               user.Username,
			UID:                user.UID,
			Groups:             user.Groups,
			Extra:              extra,
			ResourceAttributes: sarAttributes(subresource),
		},
	}
	out, err := r.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("creating SubjectAccessReview for %s: %w", user.Username, err)
	}
	if out.Status.EvaluationError != "" && !out.Status.Allowed {
		// An authorizer failed to answer: not a "no".
		return false, fmt.Errorf("SubjectAccessReview for %s: %s", user.Username, out.Status.EvaluationError)
	}
	return out.Status.Allowed, nil
}

// SecretLister answers SecretGetter from a Secret lister and, for a Secret
// the cache has not seen, from the API server: a token used the moment it
// was made can reach the approver before its Secret reaches the cache, and
// a denial is final.
type SecretLister struct {
	Lister corelisters.SecretLister
	// Client, if set, confirms a cache miss. It lists by name (the
	// approver may list bootstrap-token Secrets, not get them).
	Client kubernetes.Interface
}

// GetSecret implements SecretGetter.
func (l SecretLister) GetSecret(namespace, name string) (*corev1.Secret, error) {
	s, err := l.Lister.Secrets(namespace).Get(name)
	if !apierrors.IsNotFound(err) || l.Client == nil {
		return s, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, lerr := l.Client.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{
		FieldSelector: fields.AndSelectors(fields.OneTermEqualSelector("metadata.name", name),
			fields.OneTermEqualSelector("type", string(corev1.SecretTypeBootstrapToken))).String()})
	if lerr != nil {
		return nil, fmt.Errorf("confirming that secret %s/%s does not exist: %w", namespace, name, lerr)
	}
	for i := range list.Items {
		if list.Items[i].Name == name {
			return &list.Items[i], nil
		}
	}
	return nil, err
}

// NodeIndexer answers NodeGetter from an informer's store of Nodes, full
// or metadata-only (*metav1.PartialObjectMetadata): only labels are read.
type NodeIndexer struct {
	Store cache.KeyGetter
}

// NodeLabels implements NodeGetter.
func (n NodeIndexer) NodeLabels(name string) (map[string]string, bool, error) {
	obj, exists, err := n.Store.GetByKey(name)
	if err != nil {
		return nil, false, fmt.Errorf("reading node %s from the cache: %w", name, err)
	}
	if !exists {
		return nil, false, nil
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, false, fmt.Errorf("node %s in the cache: %w", name, err)
	}
	return m.GetLabels(), true, nil
}

// NodeLister answers NodeReader from the API server, not a cache: a node
// asks for its serving certificate right after registering its Node, and a
// denial is final. It lists by name (the approver may list Nodes, not get
// them); serving CSRs are one per node and rotation, so the reads are few.
type NodeLister struct {
	Client kubernetes.Interface
}

// GetNode implements NodeReader.
func (l NodeLister) GetNode(ctx context.Context, name string) (*corev1.Node, error) {
	list, err := l.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()})
	if err != nil {
		return nil, fmt.Errorf("listing node %s: %w", name, err)
	}
	for i := range list.Items {
		if list.Items[i].Name == name {
			return &list.Items[i], nil
		}
	}
	return nil, apierrors.NewNotFound(corev1.Resource("nodes"), name)
}

// ListNodes implements NodeReader, from the API server's watch cache
// (resourceVersion 0): whether another Node claims an address changes
// rarely, and a full quorum read of every Node per serving CSR would cost
// a large cluster more than it gains.
func (l NodeLister) ListNodes(ctx context.Context) ([]corev1.Node, error) {
	list, err := l.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	return list.Items, nil
}
