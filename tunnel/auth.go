package tunnel

import (
	"context"
	"fmt"
	"slices"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// TokenAuthenticator admits a CONNECT requester by bearer token.
type TokenAuthenticator interface {
	AuthenticateToken(ctx context.Context, token string) (user string, err error)
}

// TokenReviewAuthenticator asks the API server (TokenReview) who a token
// belongs to, and admits only the listed users or groups: being
// authenticated to the cluster is not by itself a right to reach nodes.
type TokenReviewAuthenticator struct {
	Client        kubernetes.Interface
	Audiences     []string
	AllowedUsers  []string
	AllowedGroups []string
}

// AuthenticateToken implements TokenAuthenticator.
func (a *TokenReviewAuthenticator) AuthenticateToken(ctx context.Context, token string) (string, error) {
	tr, err := a.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: a.Audiences}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("reviewing the token: %w", err)
	}
	if !tr.Status.Authenticated {
		return "", fmt.Errorf("token not authenticated: %s", tr.Status.Error)
	}
	u := tr.Status.User
	if slices.Contains(a.AllowedUsers, u.Username) {
		return u.Username, nil
	}
	for _, g := range u.Groups {
		if slices.Contains(a.AllowedGroups, g) {
			return u.Username, nil
		}
	}
	return "", fmt.Errorf("user %q is not allowed to use the tunnel", u.Username)
}
