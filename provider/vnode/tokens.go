package vnode

import (
	"context"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// tokenIssuer asks the TokenRequest API for service-account tokens bound to
// the pod, as the kubelet does for projected volumes.
type tokenIssuer struct{ kube kubernetes.Interface }

func (t tokenIssuer) ServiceAccountToken(ctx context.Context, pod *corev1.Pod, audience string, exp int64) (string, time.Time, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &exp,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if audience != "" {
		req.Spec.Audiences = []string{audience}
	}
	tr, err := t.kube.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("token request for %s/%s: %w", pod.Namespace, sa, err)
	}
	return tr.Status.Token, tr.Status.ExpirationTimestamp.Time, nil
}
