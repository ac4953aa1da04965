package emulator

import (
	"maps"
	"math"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/vnode-project/vnode/eci/model"
)

// Quota sets the API rate limits the emulator enforces, as ECI does: a
// token bucket per action per account (AccessKeyId), refilled at the
// action's calls per minute, holding at most its burst. A call beyond it
// is answered Throttling.User and does nothing. The zero value enforces
// ECI's published quotas (model.Quotas) with a burst of one second's
// worth (model.QuotaBurst: ECI publishes none).
type Quota struct {
	// Off enforces no quota at all.
	Off bool
	// PerMinute sets an action's calls per minute, over (or besides)
	// the published figure; a negative value lifts the action's quota.
	PerMinute map[string]int
	// Scale multiplies every per-minute figure (0 means 1): 0.06 makes
	// CreateContainerGroup's 1,000 a minute 60, for tests and benchmarks
	// that want the quota to bind at a small size.
	Scale float64
	// Burst sets an action's bucket size (default one second's worth of
	// its scaled rate, at least 1).
	Burst map[string]int
}

// Limit is one action's effective quota.
type Limit struct {
	PerMinute float64
	Burst     int
}

// Limits are the effective quotas q enforces, by action (none when Off).
func (q Quota) Limits() map[string]Limit {
	out := map[string]Limit{}
	if q.Off {
		return out
	}
	scale := q.Scale
	if scale <= 0 {
		scale = 1
	}
	set := func(action string, perMin int) {
		if perMin < 0 {
			delete(out, action)
			return
		}
		// Rounded, so that 1000 * 0.06 is 60, not 59.99999999999999.
		scaled := math.Round(float64(perMin)*scale*1e6) / 1e6
		burst := q.Burst[action]
		if burst <= 0 {
			burst = model.QuotaBurst(int(scaled))
		}
		out[action] = Limit{PerMinute: scaled, Burst: burst}
	}
	for a, v := range model.Quotas {
		set(a, v)
	}
	for a, v := range q.PerMinute {
		set(a, v)
	}
	return out
}

// quotas holds the buckets and counts the calls they refused.
type quotas struct {
	mu        sync.Mutex
	cfg       Quota
	limits    map[string]Limit
	buckets   map[string]*rate.Limiter // AccessKeyId + "/" + action
	throttled map[string]int           // by action
}

func newQuotas(q Quota) *quotas {
	out := &quotas{throttled: map[string]int{}}
	out.set(q)
	return out
}

// set enforces q from now on, with full buckets.
func (q *quotas) set(cfg Quota) {
	limits := cfg.Limits()
	q.mu.Lock()
	q.cfg, q.limits, q.buckets = cfg, limits, map[string]*rate.Limiter{}
	q.mu.Unlock()
}

// take spends one call of account's quota for action, or answers
// Throttling.User as ECI does (HTTP 400; the SDK never retries it).
func (q *quotas) take(account, action string, now time.Time) *apiError {
	q.mu.Lock()
	defer q.mu.Unlock()
	l, ok := q.limits[action]
	if !ok {
		return nil
	}
	k := account + "/" + action
	b := q.buckets[k]
	if b == nil {
		b = rate.NewLimiter(rate.Limit(l.PerMinute/60), l.Burst)
		q.buckets[k] = b
	}
	if b.AllowN(now, 1) {
		return nil
	}
	q.throttled[action]++
	// Alibaba Cloud's gateway answer to a user's flow control.
	return errf(http.StatusBadRequest, "Throttling.User", "Request was denied due to user flow control.")
}

func (q *quotas) counts() map[string]int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return maps.Clone(q.throttled)
}

// Quotas are the quotas the emulator enforces, by action.
func (e *Emulator) Quotas() map[string]Limit {
	e.quotas.mu.Lock()
	defer e.quotas.mu.Unlock()
	return e.quotas.cfg.Limits()
}

// SetQuota replaces the quotas the emulator enforces (Config.Quota), with
// every bucket full: a benchmark scales them, or lifts them to measure
// the path rather than the quota.
func (e *Emulator) SetQuota(q Quota) { e.quotas.set(q) }

// ThrottledCounts counts the calls answered Throttling.User, by action.
func (e *Emulator) ThrottledCounts() map[string]int { return e.quotas.counts() }
