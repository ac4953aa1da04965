package local

import (
	"context"
	"time"

	"k8s.io/utils/clock"

	"github.com/vnode-project/vnode/internal/config"
)

// A local add-on runs under a ServiceAccount token, as its pod would; a
// pod's projected token is renewed by the kubelet before it expires, so
// make run renews these the same way: a short-lived token in a file its
// kubeconfig names (tokenFile, which client-go re-reads), replaced at
// 80% of its life. A run left up for days keeps working.

// tokenRequest asks the API server for a token and when it expires.
type tokenRequest func(ctx context.Context) (token string, expires time.Time, err error)

// renewAfter is when a token issued at now and expiring at expires is
// replaced: at 80% of its life, as the kubelet does.
func renewAfter(now, expires time.Time) time.Duration {
	return expires.Sub(now) * 8 / 10
}

// writeToken replaces path's content atomically, 0600 (a secret): a
// reader sees the old token or the new one, never a part.
func writeToken(path, token string) error {
	return config.WriteSecretFile(path, []byte(token))
}

// renewToken keeps path holding a valid token until ctx ends. The token
// first written, which expires at expires, was issued at issued. A failed
// request is retried every retry until the token in place expires.
func renewToken(ctx context.Context, clk clock.Clock, path string, request tokenRequest, issued, expires time.Time, retry time.Duration, warn func(error)) {
	wait := renewAfter(issued, expires)
	for {
		select {
		case <-ctx.Done():
			return
		case <-clk.After(wait):
		}
		token, exp, err := request(ctx)
		if err == nil {
			err = writeToken(path, token)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			warn(err)
			wait = retry
			continue
		}
		now := clk.Now()
		wait = renewAfter(now, exp)
	}
}
