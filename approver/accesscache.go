package approver

import (
	"context"
	"encoding/json"
	"sync"
	"time"
)

// DefaultAccessReviewCacheTTL is how long an allowed SubjectAccessReview is
// reused for the same requestor identity.
const DefaultAccessReviewCacheTTL = 5 * time.Second

// defaultAccessReviewCacheEntries bounds CachedReviewer's memory.
const defaultAccessReviewCacheEntries = 4096

// CachedReviewer is an AccessReviewer that reuses an allowed answer of
// Reviewer for TTL. It never makes a decision the uncached path would not:
//
//   - the key is the whole requestor identity as the API server recorded it
//     (username, UID, groups in order, every extra key and value) and the
//     subresource, so a changed identity asks again;
//   - only "allowed" is cached, timed from when its review was sent: a
//     denial or an error is never reused (a denial is final for the CSR, and
//     a binding granted a moment ago must be seen at once);
//   - concurrent calls for the same key share one review while it is in
//     flight, but only its "allowed": when it says no, or fails, each
//     waiter reviews for itself.
//
// So revoking a requestor's RBAC takes effect within TTL; a bootstrap
// token's Secret is checked on every CSR, outside this cache.
type CachedReviewer struct {
	Reviewer AccessReviewer
	// TTL is how long an allow is reused; <= 0 disables the cache.
	TTL time.Duration
	// MaxEntries bounds the cache (default 4096); when it is full of
	// unexpired entries, new answers are not cached.
	MaxEntries int
	// Now defaults to time.Now (monotonic).
	Now func() time.Time
	// Observe, if set, is told whether each call was answered from the
	// cache (including a shared in-flight review).
	Observe func(cached bool)

	mu       sync.Mutex
	allowed  map[string]time.Time // key -> expiry
	inflight map[string]*review
}

// review is a SubjectAccessReview in flight; done closes once allowed is set.
type review struct {
	done    chan struct{}
	allowed bool
}

var _ AccessReviewer = (*CachedReviewer)(nil)

// CanCreate implements AccessReviewer.
func (c *CachedReviewer) CanCreate(ctx context.Context, user UserInfo, subresource string) (bool, error) {
	if c.TTL <= 0 {
		return c.Reviewer.CanCreate(ctx, user, subresource)
	}
	key, err := accessKey(user, subresource)
	if err != nil {
		// Unreachable for strings; never guess.
		return c.Reviewer.CanCreate(ctx, user, subresource)
	}
	c.mu.Lock()
	if c.allowed == nil {
		c.allowed = map[string]time.Time{}
		c.inflight = map[string]*review{}
	}
	now := c.now()
	if exp, ok := c.allowed[key]; ok {
		if now.Before(exp) {
			c.mu.Unlock()
			c.observe(true)
			return true, nil
		}
		delete(c.allowed, key)
	}
	if r, ok := c.inflight[key]; ok {
		c.mu.Unlock()
		select {
		case <-r.done:
			if r.allowed {
				c.observe(true)
				return true, nil
			}
		case <-ctx.Done():
			return false, ctx.Err()
		}
		// Not an allow: ask for ourselves.
		c.observe(false)
		return c.Reviewer.CanCreate(ctx, user, subresource)
	}
	r := &review{done: make(chan struct{})}
	c.inflight[key] = r
	c.mu.Unlock()
	c.observe(false)

	sent := c.now()
	ok, err := c.Reviewer.CanCreate(ctx, user, subresource)
	allowed := err == nil && ok

	c.mu.Lock()
	delete(c.inflight, key)
	if allowed {
		c.store(key, sent.Add(c.TTL), sent)
	}
	r.allowed = allowed
	close(r.done)
	c.mu.Unlock()
	return ok, err
}

// store caches key until exp, sweeping expired entries when full. Called
// with c.mu held.
func (c *CachedReviewer) store(key string, exp, now time.Time) {
	limit := c.MaxEntries
	if limit <= 0 {
		limit = defaultAccessReviewCacheEntries
	}
	if _, ok := c.allowed[key]; !ok && len(c.allowed) >= limit {
		for k, e := range c.allowed {
			if !now.Before(e) {
				delete(c.allowed, k)
			}
		}
		if len(c.allowed) >= limit {
			return
		}
	}
	c.allowed[key] = exp
}

func (c *CachedReviewer) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *CachedReviewer) observe(cached bool) {
	if c.Observe != nil {
		c.Observe(cached)
	}
}

// accessKey encodes the whole identity and the subresource unambiguously
// (JSON; map keys sorted).
func accessKey(user UserInfo, subresource string) (string, error) {
	b, err := json.Marshal(struct {
		Username    string              `json:"u"`
		UID         string              `json:"i"`
		Groups      []string            `json:"g"`
		Extra       map[string][]string `json:"e"`
		Subresource string              `json:"s"`
	}{user.Username, user.UID, user.Groups, extraMap(user), subresource})
	return string(b), err
}

func extraMap(user UserInfo) map[string][]string {
	if user.Extra == nil {
		return nil
	}
	m := make(map[string][]string, len(user.Extra))
	for k, v := range user.Extra {
		m[k] = v
	}
	return m
}
