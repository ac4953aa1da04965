// Package eci is vnode's client of the Alibaba Cloud ECI API: every call the
// provider makes, over github.com/aliyun/alibaba-cloud-sdk-go's signer and
// transport. It builds each action's documented wire parameters itself and
// sends them as signed POST CommonRequests, because the SDK's typed
// services/eci structs are stale (17 of 36 actions) and flatten some fields
// wrongly (probe Exec.Command goes out as "<[]string Value>"); answers are
// read from the raw JSON, so fields the structs lack are kept.
//
// Calls carry a deadline, are rate-limited per action to ECI's
// published quotas, and are retried with exponential backoff and jitter
// (internal/backoff) on throttling (HTTP 400 Throttling*, which the SDK never retries),
// 5xx and transport errors. Errors come back as *Error with a Kind, and as
// virtual-kubelet's errdefs (NotFound, InvalidInput) where those apply.
//
// An SDK client is not safe for concurrent use (it rewrites its HTTP
// client's timeout and dialer on every call), so each call takes one from
// a pool; all share one transport.
package eci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	"github.com/vnode-project/vnode/eci/model"
	"github.com/vnode-project/vnode/internal/backoff"
)

// Version is the ECI API version.
const Version = "2018-08-08"

// RateLimit is one action's client-side limit.
type RateLimit struct {
	PerMinute int
	Burst     int
}

// RateLimits are the client-side limits of rateLimits (see
// Config.RateLimits), by action. Each action has its own bucket, as ECI's
// quotas are per action: a create backlog never delays a delete or a
// describe. The rate is the quota's; the burst is half the burst ECI is
// assumed to allow (model.QuotaBurst), so that calls bunched up on their
// way to ECI still find tokens there.
func RateLimits(rateLimits map[string]int) (map[string]RateLimit, error) {
	perMin := make(map[string]int, len(model.Quotas)+len(rateLimits))
	for a, v := range model.Quotas {
		perMin[a] = v
	}
	for a, v := range rateLimits {
		if !validAction(a) {
			return nil, fmt.Errorf("rate limit for %q: limits are per ECI action, named as in the API (e.g. CreateContainerGroup=1000), not per class", a)
		}
		switch {
		case v < 0:
			delete(perMin, a)
		case v > 0:
			perMin[a] = v
		}
	}
	out := make(map[string]RateLimit, len(perMin))
	for a, v := range perMin {
		out[a] = RateLimit{PerMinute: v, Burst: max(1, model.QuotaBurst(v)/2)}
	}
	return out, nil
}

// PerMinute is the client's own limit on action, in calls a minute (its
// bucket's rate); 0 when the action is not limited.
func (c *Client) PerMinute(action string) int {
	l := c.limiters[action]
	if l == nil {
		return 0
	}
	return int(math.Round(float64(l.Limit()) * 60))
}

// validAction reports whether a looks like an ECI action name:
// CamelCase letters, starting with a capital.
func validAction(a string) bool {
	if a == "" || a[0] < 'A' || a[0] > 'Z' {
		return false
	}
	for _, r := range a {
		if (r < 'A' || r > 'Z') && (r < 'a' || r > 'z') {
			return false
		}
	}
	return true
}

// RetryPolicy bounds retries.
type RetryPolicy struct {
	Attempts int           // total attempts (default 8)
	Base     time.Duration // first backoff (default 200ms)
	Max      time.Duration // backoff cap (default 10s)
}

// Config configures a client.
type Config struct {
	RegionID string
	// Endpoint is the API address, e.g. http://127.0.0.1:8880 for the
	// emulator; empty means https://eci.<region>.aliyuncs.com (or eci-vpc
	// with NetworkType vpc). The SDK's location service is never asked.
	Endpoint        string
	NetworkType     string
	AccessKeyID     string
	AccessKeySecret string
	// CAFile (PEM) is trusted for an https Endpoint besides the system
	// roots, e.g. a local emulator's self-signed certificate.
	// Verification is never turned off.
	CAFile         string
	ConnectTimeout time.Duration // default 5s
	ReadTimeout    time.Duration // default 20s
	// CallTimeout bounds one call, retries included, when ctx has no
	// deadline (default 2 min).
	CallTimeout time.Duration
	Retry       RetryPolicy
	// RateLimits are calls per minute by action (CreateContainerGroup...):
	// 0 or missing keeps ECI's published quota (model.Quotas), a negative
	// value lifts the action's limit. Actions with no published quota
	// and no entry here are not limited.
	RateLimits      map[string]int
	Metrics         prometheus.Registerer
	Logger          logrus.FieldLogger
	VkClientVersion string
}

// Client calls the ECI API.
type Client struct {
	cfg      Config
	scheme   string
	domain   string
	pool     sync.Pool
	limiters map[string]*rate.Limiter // by action; none: not limited
	m        *metrics
	log      logrus.FieldLogger
	newErr   error
}

// New validates cfg and returns a client. Credentials are never logged.
func New(cfg Config) (*Client, error) {
	var missing []string
	for name, v := range map[string]string{"region": cfg.RegionID, "access key id": cfg.AccessKeyID, "access key secret": cfg.AccessKeySecret} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("eci client: %s required", strings.Join(missing, ", "))
	}
	scheme, domain := "https", "eci."+cfg.RegionID+".aliyuncs.com"
	if cfg.NetworkType == "vpc" {
		domain = "eci-vpc." + cfg.RegionID + ".aliyuncs.com"
	}
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("eci client: endpoint %q must be http://host[:port] or https://host[:port]", cfg.Endpoint)
		}
		scheme, domain = u.Scheme, u.Host
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 20 * time.Second
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 2 * time.Minute
	}
	if cfg.Retry.Attempts <= 0 {
		cfg.Retry.Attempts = 8
	}
	if cfg.Retry.Base <= 0 {
		cfg.Retry.Base = 200 * time.Millisecond
	}
	if cfg.Retry.Max <= 0 {
		cfg.Retry.Max = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = logrus.New()
	}
	limits, err := RateLimits(cfg.RateLimits)
	if err != nil {
		return nil, fmt.Errorf("eci client: %w", err)
	}
	c := &Client{cfg: cfg, scheme: scheme, domain: domain, limiters: make(map[string]*rate.Limiter, len(limits)), log: cfg.Logger}
	for action, l := range limits {
		c.limiters[action] = rate.NewLimiter(rate.Limit(float64(l.PerMinute)/60), l.Burst)
	}
	if c.m, err = newMetrics(cfg.Metrics); err != nil {
		return nil, err
	}
	// One transport for every pooled SDK client: connections are reused.
	// A wrapper, not *http.Transport, so the SDK leaves its dialer alone.
	base := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        200,
		MaxIdleConnsPerHost: 100,
		IdleConnTimeout:     90 * time.Second,
	}
	if cfg.CAFile != "" {
		tlsCfg, err := trustingCA(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("eci client: %w", err)
		}
		base.TLSClientConfig = tlsCfg
	}
	shared := roundTripper{base}
	c.pool.New = func() any {
		sc := sdk.NewConfig().WithScheme(strings.ToUpper(scheme)).WithHttpTransport(nil)
		cl, err := sdk.NewClientWithOptions(cfg.RegionID, sc, credentials.NewAccessKeyCredential(cfg.AccessKeyID, cfg.AccessKeySecret))
		if err != nil {
			c.newErr = err
			return nil
		}
		cl.Domain = domain // never the location service
		cl.SetTransport(shared)
		cl.SetReadTimeout(cfg.ReadTimeout)
		cl.SetConnectTimeout(cfg.ConnectTimeout)
		return cl
	}
	if cl := c.pool.Get(); cl == nil {
		return nil, fmt.Errorf("eci client: %w", c.newErr)
	} else {
		c.pool.Put(cl)
	}
	return c, nil
}

type roundTripper struct{ t *http.Transport }

func (r roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return r.t.RoundTrip(req) }

// Kind classifies an ECI error.
type Kind int

// Error kinds.
const (
	KindUnknown      Kind = iota
	KindThrottled         // back off and retry
	KindServer            // 5xx: retry
	KindTransport         // no answer: retry
	KindNotFound          // the instance does not exist
	KindInvalidInput      // the request is wrong: do not retry
	KindConflict          // IncorrectStatus, OperationConflict, IdempotentParameterMismatch
	KindAuth              // credentials or permissions
)

func (k Kind) String() string {
	return [...]string{"unknown", "throttled", "server", "transport", "not-found", "invalid-input", "conflict", "auth"}[k]
}

// Error is a failed ECI call.
type Error struct {
	Action     string
	Code       string
	Message    string
	RequestID  string
	HTTPStatus int
	Kind       Kind
	Err        error
}

func (e *Error) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("ECI %s: %s: %s (request %s)", e.Action, e.Code, e.Message, e.RequestID)
	}
	return fmt.Sprintf("ECI %s: %v", e.Action, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// NotFound and InvalidInput are the methods virtual-kubelet's errdefs
// (IsNotFound, IsInvalidInput) look for.
func (e *Error) NotFound() bool { return e.Kind == KindNotFound }

// InvalidInput reports a request ECI refuses as such.
func (e *Error) InvalidInput() bool { return e.Kind == KindInvalidInput }

// Retryable reports whether the same call may succeed later.
func (e *Error) Retryable() bool {
	return e.Kind == KindThrottled || e.Kind == KindServer || e.Kind == KindTransport
}

// KindOf returns the Kind of err (KindUnknown when it is not an *Error).
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindUnknown
}

// classify turns what the SDK returned for a call with params p into an
// *Error whose text is safe to show in events, pod statuses and logs (see
// redact): the SDK's own error, which quotes ECI's message whole, is not
// kept.
func classify(action string, err error, p map[string]string) *Error {
	var se *sdkerrors.ServerError
	if errors.As(err, &se) {
		msg := redact(se.Message(), p)
		e := &Error{Action: action, Code: se.ErrorCode(), Message: msg, RequestID: se.RequestId(), HTTPStatus: se.HttpStatus(),
			Err: errors.New(msg)}
		code := e.Code
		switch {
		case strings.HasPrefix(code, "Throttling") || code == "Degrade.Api":
			e.Kind = KindThrottled
		case e.HTTPStatus >= 500:
			e.Kind = KindServer
		case strings.HasSuffix(code, ".NotFound") && !strings.HasPrefix(code, "InvalidAccessKeyId"):
			// InvalidContainerGroup/InvalidContainer/InvalidVirtualNode...
			e.Kind = KindNotFound
		case code == "IncorrectStatus" || code == "OperationConflict" || code == "IdempotentParameterMismatch":
			e.Kind = KindConflict
		case strings.HasPrefix(code, "SignatureDoesNotMatch") || strings.HasPrefix(code, "InvalidAccessKeyId") ||
			strings.HasPrefix(code, "Forbidden") || code == "IncompleteSignature" || strings.HasPrefix(code, "InvalidTimeStamp") || code == "SignatureNonceUsed":
			e.Kind = KindAuth
		case strings.HasPrefix(code, "InvalidParameter") || strings.HasPrefix(code, "MissingParameter") || strings.HasPrefix(code, "Invalid"):
			e.Kind = KindInvalidInput
		}
		return e
	}
	// Client errors from the SDK are transport failures or timeouts; the
	// net/http error in them quotes the request URL, query and all.
	return &Error{Action: action, Kind: KindTransport, Err: errors.New(redact(err.Error(), p))}
}

// echoMarkers start the part of an ECI message that repeats the request:
// on SignatureDoesNotMatch the message ends with the whole string the
// server signed, every parameter value in it (env values resolved from
// Secrets, secret volume contents, registry passwords).
var echoMarkers = []string{"string to sign is:", "stringtosign"}

// urlQuery is a URL's query string, as net/http quotes it in an error.
var urlQuery = regexp.MustCompile(`(https?://[^\s?"]*)\?[^\s"]*`)

// redactedText replaces request content in an error message.
const redactedText = "[request content removed]"

// minRedactLen: shorter parameter values (1, true, Never) are not hunted
// in messages; they would mangle the message and carry no secret.
const minRedactLen = 4

// redact removes from msg everything that quotes the request p: the text
// after an echo marker, a URL's query string, and every parameter value
// (as sent, and in the two percent-encodings of a string to sign), except
// the names ECI's messages identify resources by. The code and request id
// say the rest.
func redact(msg string, p map[string]string) string {
	lower := strings.ToLower(msg)
	for _, m := range echoMarkers {
		if i := strings.Index(lower, m); i >= 0 {
			msg, lower = msg[:i+len(m)]+" "+redactedText, lower[:i+len(m)]
		}
	}
	msg = urlQuery.ReplaceAllString(msg, "$1?"+redactedText)
	// Longest first, so a value containing another is removed whole.
	values := make([]string, 0, len(p))
	for k, v := range p {
		if len(v) >= minRedactLen && !identifying(k) {
			values = append(values, v, url.QueryEscape(v), model.PercentEncode(v), model.PercentEncode(model.PercentEncode(v)))
		}
	}
	sort.Slice(values, func(i, j int) bool { return len(values[i]) > len(values[j]) })
	for _, v := range values {
		msg = strings.ReplaceAll(msg, v, redactedText)
	}
	return msg
}

// identifying parameters name resources; ECI's messages quote them
// ("The specified container group eci-... is not found") and they are no
// secret.
var identifyingParams = map[string]bool{
	"Action": true, "Version": true, "RegionId": true, "ZoneId": true, "ContainerGroupId": true, "ContainerGroupIds": true,
	"ContainerGroupName": true, "ContainerName": true, "VSwitchId": true, "SecurityGroupId": true, "VirtualNodeId": true,
	"VirtualNodeIds": true, "VirtualNodeName": true, "ImageCacheId": true, "ImageCacheName": true, "ResourceGroupId": true,
	"AccessKeyId": true, "VkClientVersion": true,
}

func identifying(key string) bool {
	// Container.N.Name, Container.N.Image, Volume.N.Name...
	return identifyingParams[key] || strings.HasSuffix(key, ".Image") ||
		(strings.HasSuffix(key, ".Name") && (strings.HasPrefix(key, "Container.") || strings.HasPrefix(key, "InitContainer.") || strings.HasPrefix(key, "Volume.")) && strings.Count(key, ".") == 2)
}

// call sends one action with params, retrying what may succeed later, and
// decodes the JSON answer into out (when not nil).
func (c *Client) call(ctx context.Context, action string, p map[string]string, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.CallTimeout)
		defer cancel()
	}
	log := c.log.WithField("action", action)
	var last *Error
	for attempt := 1; ; attempt++ {
		if l := c.limiters[action]; l != nil {
			if err := l.Wait(ctx); err != nil {
				return c.giveUp(action, last, err)
			}
		}
		start := time.Now()
		body, err := c.once(ctx, action, p)
		c.m.observe(action, time.Since(start), err)
		if err == nil {
			if out != nil {
				if err := json.Unmarshal(body, out); err != nil {
					return &Error{Action: action, Kind: KindUnknown, Err: fmt.Errorf("decoding the answer: %w", err)}
				}
			}
			return nil
		}
		if ctx.Err() != nil && last != nil {
			// The caller's deadline cut this attempt short; the previous
			// answer says more about why the call failed than the deadline.
			return c.giveUp(action, last, ctx.Err())
		}
		last = err
		if !err.Retryable() || attempt >= c.cfg.Retry.Attempts {
			return err
		}
		sleep := backoff.Policy{Base: c.cfg.Retry.Base, Max: c.cfg.Retry.Max}.Delay(attempt)
		c.m.retries.WithLabelValues(action).Inc()
		log.WithFields(logrus.Fields{"code": err.Code, "kind": err.Kind.String(), "attempt": attempt, "backoff": sleep}).Debug("retrying ECI call")
		select {
		case <-ctx.Done():
			return c.giveUp(action, last, ctx.Err())
		case <-time.After(sleep):
		}
	}
}

func (c *Client) giveUp(action string, last *Error, err error) error {
	if last != nil {
		return fmt.Errorf("%w (then: %w)", last, err)
	}
	return &Error{Action: action, Kind: KindTransport, Err: err}
}

func (c *Client) once(ctx context.Context, action string, p map[string]string) ([]byte, *Error) {
	cl, _ := c.pool.Get().(*sdk.Client)
	if cl == nil {
		return nil, &Error{Action: action, Kind: KindUnknown, Err: c.newErr}
	}
	req := requests.NewCommonRequest()
	req.Method = http.MethodPost
	req.Scheme = c.scheme
	req.Domain = c.domain
	req.Product = "Eci"
	req.Version = Version
	req.ApiName = action
	req.QueryParams["RegionId"] = c.cfg.RegionID
	if c.cfg.VkClientVersion != "" {
		req.QueryParams["VkClientVersion"] = c.cfg.VkClientVersion
	}
	for k, v := range p {
		req.QueryParams[k] = v
	}
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left < c.cfg.ReadTimeout {
			if left <= 0 {
				c.pool.Put(cl)
				return nil, &Error{Action: action, Kind: KindTransport, Err: context.DeadlineExceeded}
			}
			req.SetReadTimeout(left)
		}
	}
	type result struct {
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// The SDK takes no context; the client goes back to the pool only
		// once its call has really ended.
		defer c.pool.Put(cl)
		resp, err := cl.ProcessCommonRequest(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		done <- result{body: resp.GetHttpContentBytes()}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, classify(action, r.err, req.QueryParams)
		}
		return r.body, nil
	case <-ctx.Done():
		return nil, &Error{Action: action, Kind: KindTransport, Err: ctx.Err()}
	}
}
