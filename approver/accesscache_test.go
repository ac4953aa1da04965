package approver

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/vnode-project/vnode/internal/identity"
)

// fakeClock is a settable clock for CachedReviewer.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Step(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// scriptedAccess answers with allow/err and counts calls; block, if set,
// holds each call until it is closed; during, if set, runs inside each call.
type scriptedAccess struct {
	mu     sync.Mutex
	allow  bool
	err    error
	calls  int
	block  chan struct{}
	during func()
}

func (s *scriptedAccess) set(allow bool, err error) {
	s.mu.Lock()
	s.allow, s.err = allow, err
	s.mu.Unlock()
}

func (s *scriptedAccess) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *scriptedAccess) CanCreate(ctx context.Context, _ UserInfo, _ string) (bool, error) {
	s.mu.Lock()
	s.calls++
	block, during := s.block, s.during
	s.mu.Unlock()
	if during != nil {
		during()
	}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.allow, s.err
}

func newCached(ttl time.Duration) (*CachedReviewer, *scriptedAccess, *fakeClock) {
	inner := &scriptedAccess{allow: true}
	clock := &fakeClock{t: testNow}
	return &CachedReviewer{Reviewer: inner, TTL: ttl, Now: clock.Now}, inner, clock
}

func mustCheck(t *testing.T, c AccessReviewer, u UserInfo, sub string, want bool) {
	t.Helper()
	got, err := c.CanCreate(context.Background(), u, sub)
	if err != nil {
		t.Fatalf("CanCreate(%+v, %s): %v", u, sub, err)
	}
	if got != want {
		t.Fatalf("CanCreate(%+v, %s) = %v, want %v", u, sub, got, want)
	}
}

func bootstrapRequestor() UserInfo {
	return UserInfo{
		Username: bootstrapUserPrefix + "abcdef",
		UID:      "uid-1",
		Groups:   []string{"system:bootstrappers", identity.BootstrapGroup, "system:authenticated"},
		Extra:    map[string]certificatesv1.ExtraValue{"k": {"a", "b"}},
	}
}

func TestCachedReviewerReusesAnAllowWithinTTL(t *testing.T) {
	c, inner, clock := newCached(5 * time.Second)
	u := bootstrapRequestor()
	for i := 0; i < 3; i++ {
		mustCheck(t, c, u, BootstrapSubresource, true)
		clock.Step(time.Second)
	}
	if n := inner.count(); n != 1 {
		t.Fatalf("%d reviews for one identity within the TTL, want 1", n)
	}
}

func TestCachedReviewerExpiredEntryReviewsAgain(t *testing.T) {
	c, inner, clock := newCached(5 * time.Second)
	u := bootstrapRequestor()
	mustCheck(t, c, u, BootstrapSubresource, true)
	clock.Step(5 * time.Second) // expiry is exclusive
	inner.set(false, nil)       // RBAC revoked meanwhile
	mustCheck(t, c, u, BootstrapSubresource, false)
	if n := inner.count(); n != 2 {
		t.Fatalf("%d reviews, want 2 (the entry expired)", n)
	}
}

// An allow is timed from when its review was sent, not when it answered.
func TestCachedReviewerTTLStartsWhenTheReviewIsSent(t *testing.T) {
	c, inner, clock := newCached(5 * time.Second)
	inner.during = func() { clock.Step(4 * time.Second) }
	u := bootstrapRequestor()
	mustCheck(t, c, u, BootstrapSubresource, true) // sent at 0, answered at 4
	inner.during = nil
	clock.Step(time.Second) // 5 s after it was sent
	mustCheck(t, c, u, BootstrapSubresource, true)
	if n := inner.count(); n != 2 {
		t.Fatalf("%d reviews, want 2", n)
	}
}

func TestCachedReviewerChangedIdentityReviewsAgain(t *testing.T) {
	changes := map[string]func(u *UserInfo){
		"username":          func(u *UserInfo) { u.Username += "x" },
		"uid":               func(u *UserInfo) { u.UID = "uid-2" },
		"no uid":            func(u *UserInfo) { u.UID = "" },
		"extra group":       func(u *UserInfo) { u.Groups = append(u.Groups, "system:masters") },
		"fewer groups":      func(u *UserInfo) { u.Groups = u.Groups[:1] },
		"group order":       func(u *UserInfo) { u.Groups[0], u.Groups[1] = u.Groups[1], u.Groups[0] },
		"no groups":         func(u *UserInfo) { u.Groups = nil },
		"extra value":       func(u *UserInfo) { u.Extra = map[string]certificatesv1.ExtraValue{"k": {"a", "c"}} },
		"extra value order": func(u *UserInfo) { u.Extra = map[string]certificatesv1.ExtraValue{"k": {"b", "a"}} },
		"extra key":         func(u *UserInfo) { u.Extra = map[string]certificatesv1.ExtraValue{"k": {"a", "b"}, "j": {"x"}} },
		"renamed extra key": func(u *UserInfo) { u.Extra = map[string]certificatesv1.ExtraValue{"K": {"a", "b"}} },
		"no extra":          func(u *UserInfo) { u.Extra = nil },
		// Naive concatenation would make these equal to the original.
		"group boundary": func(u *UserInfo) {
			u.Groups = []string{"system:bootstrappers," + identity.BootstrapGroup, "system:authenticated"}
		},
		"extra boundary": func(u *UserInfo) { u.Extra = map[string]certificatesv1.ExtraValue{"k": {"a,b"}} },
	}
	for name, change := range changes {
		t.Run(name, func(t *testing.T) {
			c, inner, _ := newCached(time.Minute)
			mustCheck(t, c, bootstrapRequestor(), BootstrapSubresource, true)
			changed := bootstrapRequestor()
			change(&changed)
			inner.set(false, nil) // the changed identity is not allowed
			mustCheck(t, c, changed, BootstrapSubresource, false)
			if n := inner.count(); n != 2 {
				t.Fatalf("%d reviews, want 2: a changed identity must be reviewed", n)
			}
			// The original identity is still cached.
			mustCheck(t, c, bootstrapRequestor(), BootstrapSubresource, true)
			if n := inner.count(); n != 2 {
				t.Fatalf("%d reviews, want 2", n)
			}
		})
	}
	t.Run("subresource", func(t *testing.T) {
		c, inner, _ := newCached(time.Minute)
		mustCheck(t, c, bootstrapRequestor(), BootstrapSubresource, true)
		inner.set(false, nil)
		mustCheck(t, c, bootstrapRequestor(), "nodeclient", false)
		if n := inner.count(); n != 2 {
			t.Fatalf("%d reviews, want 2", n)
		}
	})
}

func TestCachedReviewerNeverReusesDenialsOrErrors(t *testing.T) {
	c, inner, _ := newCached(time.Minute)
	u := bootstrapRequestor()
	inner.set(false, nil)
	mustCheck(t, c, u, BootstrapSubresource, false)
	mustCheck(t, c, u, BootstrapSubresource, false)
	if n := inner.count(); n != 2 {
		t.Fatalf("%d reviews for two denied checks, want 2", n)
	}
	inner.set(false, errUnavailable)
	for i := 0; i < 2; i++ {
		if _, err := c.CanCreate(context.Background(), u, BootstrapSubresource); !errors.Is(err, errUnavailable) {
			t.Fatalf("error %v, want %v", err, errUnavailable)
		}
	}
	if n := inner.count(); n != 4 {
		t.Fatalf("%d reviews, want 4: errors are not cached", n)
	}
	// A binding granted just now is seen at once.
	inner.set(true, nil)
	mustCheck(t, c, u, BootstrapSubresource, true)
	// An error that comes with "allowed" is not an allow.
	c2, inner2, _ := newCached(time.Minute)
	inner2.set(true, errUnavailable)
	_, _ = c2.CanCreate(context.Background(), u, BootstrapSubresource)
	inner2.set(false, nil)
	mustCheck(t, c2, u, BootstrapSubresource, false)
}

func TestCachedReviewerDisabled(t *testing.T) {
	for _, ttl := range []time.Duration{0, -time.Second} {
		c, inner, _ := newCached(ttl)
		mustCheck(t, c, bootstrapRequestor(), BootstrapSubresource, true)
		mustCheck(t, c, bootstrapRequestor(), BootstrapSubresource, true)
		if n := inner.count(); n != 2 {
			t.Fatalf("TTL %s: %d reviews, want 2", ttl, n)
		}
	}
}

func TestCachedReviewerBounded(t *testing.T) {
	c, inner, _ := newCached(time.Minute)
	c.MaxEntries = 2
	users := []UserInfo{vnodeUser("a"), vnodeUser("b"), vnodeUser("c")}
	for _, u := range users {
		mustCheck(t, c, u, BootstrapSubresource, true)
	}
	mustCheck(t, c, users[2], BootstrapSubresource, true) // not cached: full
	mustCheck(t, c, users[0], BootstrapSubresource, true) // cached
	if n := inner.count(); n != 4 {
		t.Fatalf("%d reviews, want 4", n)
	}
	if len(c.allowed) != 2 {
		t.Fatalf("%d entries, want at most 2", len(c.allowed))
	}
}

func TestCachedReviewerBoundSweepsExpired(t *testing.T) {
	c, inner, clock := newCached(time.Minute)
	c.MaxEntries = 2
	mustCheck(t, c, vnodeUser("a"), BootstrapSubresource, true)
	mustCheck(t, c, vnodeUser("b"), BootstrapSubresource, true)
	clock.Step(time.Minute)
	mustCheck(t, c, vnodeUser("c"), BootstrapSubresource, true)
	mustCheck(t, c, vnodeUser("c"), BootstrapSubresource, true)
	if n := inner.count(); n != 3 {
		t.Fatalf("%d reviews, want 3 (c cached after the sweep)", n)
	}
}

// Concurrent checks of one identity share the review in flight when it
// allows, and each review for itself when it does not.
func TestCachedReviewerSharesOnlyAnAllowInFlight(t *testing.T) {
	for _, allow := range []bool{true, false} {
		c, inner, _ := newCached(time.Minute)
		inner.set(allow, nil)
		inner.block = make(chan struct{})
		var cachedN, sentN int
		var mu sync.Mutex
		c.Observe = func(cached bool) {
			mu.Lock()
			defer mu.Unlock()
			if cached {
				cachedN++
			} else {
				sentN++
			}
		}
		const n = 8
		first := make(chan struct{})
		inner.during = func() {
			select {
			case <-first:
			default:
				close(first)
			}
		}
		var wg sync.WaitGroup
		results := make(chan bool, n)
		check := func() {
			defer wg.Done()
			ok, err := c.CanCreate(context.Background(), bootstrapRequestor(), BootstrapSubresource)
			if err != nil {
				t.Error(err)
			}
			results <- ok
		}
		wg.Add(1)
		go check()
		<-first // the first review is in flight
		for i := 1; i < n; i++ {
			wg.Add(1)
			go check()
		}
		// Let the waiters reach the in-flight review before it answers.
		for deadline := time.Now().Add(5 * time.Second); ; {
			c.mu.Lock()
			inFlight := len(c.inflight)
			c.mu.Unlock()
			if inFlight == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no review in flight")
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
		close(inner.block)
		wg.Wait()
		close(results)
		for ok := range results {
			if ok != allow {
				t.Fatalf("allow=%v: a check answered %v", allow, ok)
			}
		}
		got := inner.count()
		if allow && got > n {
			t.Fatalf("allow: %d reviews for %d checks", got, n)
		}
		if !allow && got != n {
			t.Fatalf("deny: %d reviews for %d checks, want %d: a denial is never shared", got, n, n)
		}
		if cachedN+sentN != n || sentN != got {
			t.Fatalf("observed %d cached and %d sent, with %d reviews for %d checks", cachedN, sentN, got, n)
		}
	}
}

func TestCachedReviewerWaiterHonoursItsContext(t *testing.T) {
	c, inner, _ := newCached(time.Minute)
	inner.block = make(chan struct{})
	defer close(inner.block)
	started := make(chan struct{})
	inner.during = func() { close(started) }
	go func() { _, _ = c.CanCreate(context.Background(), bootstrapRequestor(), BootstrapSubresource) }()
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if ok, err := c.CanCreate(ctx, bootstrapRequestor(), BootstrapSubresource); ok || !errors.Is(err, context.Canceled) {
		t.Fatalf("CanCreate with a cancelled context = %v, %v", ok, err)
	}
}

// Through Policy.Evaluate: a cached allow still passes every other check
// (the token Secret is read each time), and a revoked token is denied at
// once even though its allow is cached.
func TestEvaluateWithCachedReviewer(t *testing.T) {
	access := &fakeAccess{allow: map[string]bool{bootstrapUserPrefix + "abcdef": true}}
	cached := &CachedReviewer{Reviewer: access, TTL: time.Hour}
	user := bootstrapUser("abcdef", identity.BootstrapGroup)
	good := map[string]*corev1.Secret{tokenSecretNamespace + "/" + tokenSecretPrefix + "abcdef": tokenSecret("abcdef", nil)}
	facts := Facts{Access: cached, Secrets: fakeSecrets{secrets: good}, Nodes: fakeNodes{}, Now: testNow}
	p := Policy{}
	for i := 0; i < 3; i++ {
		csr := newCSR("c", vnodeRequest("n1").pem(t), user, usagesDSCA)
		if d := p.Evaluate(context.Background(), csr, facts); d.Verdict != Approve {
			t.Fatalf("check %d: %v %s: %s", i, d.Verdict, d.Check, d.Message)
		}
	}
	if len(access.calls) != 1 {
		t.Fatalf("%d SubjectAccessReviews for 3 CSRs of one requestor, want 1", len(access.calls))
	}
	facts.Secrets = fakeSecrets{secrets: map[string]*corev1.Secret{}}
	csr := newCSR("c", vnodeRequest("n1").pem(t), user, usagesDSCA)
	if d := p.Evaluate(context.Background(), csr, facts); d.Verdict != Deny || d.Check != CheckToken {
		t.Fatalf("deleted token: %v %s, want deny %s", d.Verdict, d.Check, CheckToken)
	}
	// Another requestor is reviewed, and denied.
	other := bootstrapUser("zzzzzz", identity.BootstrapGroup)
	facts.Secrets = fakeSecrets{secrets: map[string]*corev1.Secret{tokenSecretNamespace + "/" + tokenSecretPrefix + "zzzzzz": tokenSecret("zzzzzz", nil)}}
	csr = newCSR("d", vnodeRequest("n2").pem(t), other, usagesDSCA)
	if d := p.Evaluate(context.Background(), csr, facts); d.Verdict != Deny || d.Check != CheckAccessReview {
		t.Fatalf("other requestor: %v %s, want deny %s", d.Verdict, d.Check, CheckAccessReview)
	}
	if len(access.calls) != 2 {
		t.Fatalf("%d SubjectAccessReviews, want 2", len(access.calls))
	}
}
