package emulator

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vnode-project/vnode/eci/emulator/sandbox"
)

// Config configures an emulator.
type Config struct {
	// Credentials maps AccessKeyId to AccessKeySecret.
	Credentials map[string]string
	Region      string   // default cn-hangzhou
	Zones       []string // default <region>-a, <region>-b
	Runtime     string   // "process" (default) or "sim"
	// DataDir keeps the state (state.json), the journal of recent
	// signature nonces (nonces.journal), process sandboxes and logs;
	// default a temporary dir. A new emulator on the same DataDir carries
	// on with the groups, virtual nodes and image caches it left, and
	// still refuses requests replayed from before it started.
	DataDir    string
	Delays     Delays
	AdminToken string // bearer token of /admin/; empty disables it
	Logger     logrus.FieldLogger
	// TLS serves https. With TLSCertFile and TLSKeyFile (PEM) it serves
	// that pair (and they imply TLS); without, a self-signed certificate
	// for 127.0.0.1, ::1 and localhost, made once in DataDir/tls.
	TLS                     bool
	TLSCertFile, TLSKeyFile string
	// Quota is the API rate limits enforced per account; the zero value
	// is ECI's published quotas (see Quota).
	Quota Quota
	// IsolationProbe says why the process runtime cannot isolate
	// instances here (nil: it can); default sandbox.Probe. A non-nil
	// answer makes New refuse the process runtime.
	IsolationProbe func() error
	// ListenAddr is where StartLocal serves (default 127.0.0.1:0): `make
	// run` gives an address its node's network namespace reaches.
	ListenAddr string
}

// Delays are how long a new group stays in each state before running,
// how long a virtual node stays Pending and how long an image cache takes
// to build (half Preparing, half Creating).
type Delays struct {
	Scheduling, Pending     time.Duration
	VirtualNode, ImageCache time.Duration
}

// Fault makes calls to Action ("*" for all) misbehave.
type Fault struct {
	Action             string
	Latency            time.Duration
	ErrorRate          float64 // answer ErrorCode instead of acting
	ErrorCode          string  // default ServiceUnavailable
	HangRate           float64 // never answer (until the client gives up)
	CommitThenFailRate float64 // act, then answer ErrorCode (default InternalError)
}

// Emulator is a running local ECI API.
type Emulator struct {
	cfg     Config
	log     logrus.FieldLogger
	nonces  *nonces
	runtime runtime

	tls     *tlsFiles // nil: plain http
	persist *persister
	quotas  *quotas

	mu        sync.Mutex
	groups    map[string]*group
	order     []string                // ids in creation order, for stable paging
	tokens    map[string]*tokenRecord // Action + "/" + ClientToken
	vnodes    map[string]*virtualNode
	vnOrder   []string
	caches    map[string]*imageCache
	imcOrder  []string
	calls     map[string]int
	faults    []Fault
	sessions  map[string]*execSession
	closed    bool
	closeOnce sync.Once
	seq       int
}

// New creates an emulator; serve its Handler.
func New(cfg Config) (*Emulator, error) {
	if len(cfg.Credentials) == 0 {
		return nil, errors.New("eciemulator: at least one AccessKey pair is required")
	}
	if cfg.Region == "" {
		cfg.Region = "cn-hangzhou"
	}
	if len(cfg.Zones) == 0 {
		cfg.Zones = []string{cfg.Region + "-a", cfg.Region + "-b"}
	}
	if cfg.Runtime == "" {
		cfg.Runtime = "process"
	}
	if cfg.Logger == nil {
		cfg.Logger = logrus.New()
	}
	if cfg.DataDir == "" {
		d, err := os.MkdirTemp("", "eci-emulator-")
		if err != nil {
			return nil, fmt.Errorf("creating a data directory: %w", err)
		}
		cfg.DataDir = d
	}
	// Everything below writes into DataDir (the nonce journal, the state,
	// TLS files): it must exist first, private, whoever calls.
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the data directory %s: %w", cfg.DataDir, err)
	}
	e := &Emulator{cfg: cfg, log: cfg.Logger, groups: map[string]*group{}, tokens: map[string]*tokenRecord{},
		vnodes: map[string]*virtualNode{}, caches: map[string]*imageCache{},
		calls: map[string]int{}, sessions: map[string]*execSession{}, quotas: newQuotas(cfg.Quota)}
	switch cfg.Runtime {
	case "process":
		probe := cfg.IsolationProbe
		if probe == nil {
			probe = sandbox.Probe
		}
		pr, err := newProcessRuntime(filepath.Join(cfg.DataDir, "sandboxes"), e, probe)
		if err != nil {
			return nil, fmt.Errorf("eciemulator: %w", err)
		}
		e.runtime = pr
	case "sim":
		e.runtime = simRuntime{e}
	default:
		return nil, fmt.Errorf("eciemulator: runtime %q: want process or sim", cfg.Runtime)
	}
	if cfg.TLS || cfg.TLSCertFile != "" || cfg.TLSKeyFile != "" {
		t, err := setUpTLS(cfg.DataDir, cfg.TLSCertFile, cfg.TLSKeyFile, time.Now())
		if err != nil {
			return nil, fmt.Errorf("eciemulator: setting up TLS: %w", err)
		}
		e.tls = t
	}
	var err error
	if e.nonces, err = openNonces(cfg.DataDir, time.Now()); err != nil {
		return nil, fmt.Errorf("eciemulator: %w", err)
	}
	e.persist = newPersister(filepath.Join(cfg.DataDir, stateFile), e.log)
	if err := e.load(); err != nil {
		_ = e.nonces.close()
		return nil, fmt.Errorf("eciemulator: loading the state in %s: %w", cfg.DataDir, err)
	}
	go e.persist.run(e.encodeState)
	e.resume()
	return e, nil
}

// DataDir is where the emulator keeps its state (the one it was given, or
// the temporary one it made).
func (e *Emulator) DataDir() string { return e.cfg.DataDir }

// Scheme is "https" when the emulator serves TLS, else "http".
func (e *Emulator) Scheme() string {
	if e.tls != nil {
		return "https"
	}
	return "http"
}

// CertFile is the PEM certificate the emulator serves over TLS (the
// generated self-signed one, or Config.TLSCertFile), for clients to trust;
// "" without TLS.
func (e *Emulator) CertFile() string {
	if e.tls == nil {
		return ""
	}
	return e.tls.certFile
}

// Handler serves the ECI API at /, exec sessions at /exec/ and the admin
// API at /admin/.
func (e *Emulator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/exec/", e.serveExec)
	mux.HandleFunc("/admin/", e.serveAdmin)
	mux.HandleFunc("/", e.serveAPI)
	return mux
}

// Serve serves on l until ctx ends.
func (e *Emulator) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: e.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	var err error
	if e.tls != nil {
		srv.TLSConfig = e.tls.config()
		err = srv.ServeTLS(l, "", "")
	} else {
		err = srv.Serve(l)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// StartLocal serves a new emulator on a free loopback port (or
// cfg.ListenAddr). stop ends the
// server and closes the emulator (saving its state, stopping its
// processes); the tests and the local system share it.
func StartLocal(cfg Config) (e *Emulator, addr string, stop func(), err error) {
	e, err = New(cfg)
	if err != nil {
		return nil, "", nil, err
	}
	addr = cfg.ListenAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		_ = e.Close()
		return nil, "", nil, fmt.Errorf("listening for the emulator: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = e.Serve(ctx, l); close(done) }()
	stop = func() {
		cancel()
		<-done
		_ = e.Close()
	}
	return e, l.Addr().String(), stop, nil
}

// Close saves the state and stops every container process. The state is
// saved first, so it holds what was running: a new emulator on the same
// DataDir then sees the groups as a host restart would leave them.
// Closing twice is harmless.
func (e *Emulator) Close() error {
	var err error
	e.closeOnce.Do(func() { err = e.close() })
	return err
}

func (e *Emulator) close() error {
	e.mu.Lock()
	e.closed = true
	groups := make([]*group, 0, len(e.groups))
	for _, g := range e.groups {
		groups = append(groups, g)
	}
	e.mu.Unlock()
	err := e.persist.close(e.encodeState)
	if nerr := e.nonces.close(); err == nil {
		err = nerr
	}
	for _, g := range groups {
		e.runtime.stop(g, 0)
	}
	return err
}

// SetFaults replaces the injected faults; no argument clears them.
func (e *Emulator) SetFaults(f ...Fault) {
	e.mu.Lock()
	e.faults = append([]Fault(nil), f...)
	e.mu.Unlock()
}

// CallCounts counts authenticated requests per action.
func (e *Emulator) CallCounts() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int, len(e.calls))
	for k, v := range e.calls {
		out[k] = v
	}
	return out
}

// ContainerGroupSnapshot is a group's identity and state, for assertions.
type ContainerGroupSnapshot struct {
	ID, Name, Status, ClientToken string
	Tags                          map[string]string
	Containers                    []string
}

// ContainerGroups returns every group.
func (e *Emulator) ContainerGroups() []ContainerGroupSnapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]ContainerGroupSnapshot, 0, len(e.groups))
	for _, id := range e.order {
		g, ok := e.groups[id]
		if !ok {
			continue
		}
		s := ContainerGroupSnapshot{ID: g.ContainerGroupID, Name: g.ContainerGroupName, Status: g.Status, ClientToken: g.clientToken, Tags: map[string]string{}}
		for _, t := range g.Tags {
			s.Tags[t.Key] = t.Value
		}
		for _, c := range g.Containers {
			s.Containers = append(s.Containers, c.Name)
		}
		out = append(out, s)
	}
	return out
}

// DeleteBehindBack removes a group as if deleted outside the client.
func (e *Emulator) DeleteBehindBack(id string) error {
	e.mu.Lock()
	g, ok := e.groups[id]
	if ok {
		e.removeLocked(id)
	}
	e.mu.Unlock()
	if !ok {
		return notFound(id)
	}
	e.runtime.stop(g, 0)
	return nil
}

// Expire reclaims a group as a spot instance: status Expired.
func (e *Emulator) Expire(id string) error {
	e.mu.Lock()
	g, ok := e.groups[id]
	if ok {
		g.Status = "Expired"
		g.ExpiredTime = time.Now().UTC().Format(timeFormat)
		e.addEventLocked(g, "Warning", "SpotToBeReleased", "The spot instance was reclaimed")
	}
	e.mu.Unlock()
	if !ok {
		return notFound(id)
	}
	e.runtime.stop(g, 0)
	return nil
}

func (e *Emulator) removeLocked(id string) {
	delete(e.groups, id)
	e.order = removeID(e.order, id)
	e.persist.removedLocked(id)
}

// removeID removes id from ids, keeping the order.
func removeID(ids []string, id string) []string {
	for i, x := range ids {
		if x == id {
			return append(ids[:i], ids[i+1:]...)
		}
	}
	return ids
}

// changedLocked records that g changed, so the next snapshot saves it and
// SinceSecond finds it. Every change to a group goes through here.
func (e *Emulator) changedLocked(g *group) {
	g.changed = time.Now()
	e.persist.changedLocked(g.ContainerGroupID)
}

func newRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := strings.ToUpper(hex.EncodeToString(b))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (e *Emulator) writeError(w http.ResponseWriter, reqID string, err *apiError) {
	status := err.Status
	if status == 0 {
		status = statusOf(err.Code)
	}
	writeJSON(w, status, map[string]string{
		"RequestId": reqID, "HostId": "eci." + e.cfg.Region + ".aliyuncs.com", "Code": err.Code, "Message": err.Message,
		"Recommend": "https://api.aliyun.com/troubleshoot?q=" + url.QueryEscape(err.Code) + "&product=Eci",
	})
}

// serveAPI authenticates, applies faults and dispatches one RPC call.
func (e *Emulator) serveAPI(w http.ResponseWriter, r *http.Request) {
	reqID := newRequestID()
	if r.URL.Path != "/" {
		e.writeError(w, reqID, errf(http.StatusNotFound, "InvalidAction.NotFound", "Specified api is not found, please check your url and method."))
		return
	}
	if err := r.ParseForm(); err != nil {
		e.writeError(w, reqID, invalidParam("query", err.Error()))
		return
	}
	p := params(r.Form)
	if apiErr := e.authenticate(r.Method, p); apiErr != nil {
		e.writeError(w, reqID, apiErr)
		return
	}
	action := p.get("Action")
	e.mu.Lock()
	e.calls[action]++
	faults := e.faults
	e.mu.Unlock()
	if apiErr := e.quotas.take(p.get("AccessKeyId"), action, time.Now()); apiErr != nil {
		e.writeError(w, reqID, apiErr)
		return
	}

	var commitThenFail *apiError
	for _, f := range faults {
		if f.Action != "*" && f.Action != action {
			continue
		}
		if f.Latency > 0 {
			select {
			case <-time.After(f.Latency):
			case <-r.Context().Done():
				return
			}
		}
		if f.HangRate > 0 && mrand.Float64() < f.HangRate {
			<-r.Context().Done()
			return
		}
		if f.ErrorRate > 0 && mrand.Float64() < f.ErrorRate {
			code := f.ErrorCode
			if code == "" {
				code = "ServiceUnavailable"
			}
			e.writeError(w, reqID, errf(0, code, "injected fault"))
			return
		}
		if f.CommitThenFailRate > 0 && mrand.Float64() < f.CommitThenFailRate {
			code := f.ErrorCode
			if code == "" || strings.HasPrefix(code, "Throttling") {
				code = "InternalError"
			}
			commitThenFail = errf(0, code, "injected fault after the request was carried out")
		}
	}
	resp, apiErr := e.dispatch(r, action, p)
	if apiErr != nil {
		e.writeError(w, reqID, apiErr)
		return
	}
	if commitThenFail != nil {
		e.writeError(w, reqID, commitThenFail)
		return
	}
	resp["RequestId"] = reqID
	writeJSON(w, http.StatusOK, resp)
}

func (e *Emulator) authenticate(method string, p params) *apiError {
	for _, k := range []string{"Action", "AccessKeyId", "Signature", "SignatureNonce", "Timestamp", "SignatureMethod", "SignatureVersion", "Version", "Format"} {
		if p.get(k) == "" {
			return missingParam(k)
		}
	}
	if v := p.get("Version"); v != "2018-08-08" {
		return errf(http.StatusBadRequest, "InvalidVersion", "Specified parameter Version is not valid: "+v)
	}
	if p.get("SignatureMethod") != "HMAC-SHA1" || p.get("SignatureVersion") != "1.0" {
		return errf(http.StatusBadRequest, "IncompleteSignature", "The request signature does not conform to Aliyun standards.")
	}
	secret, ok := e.cfg.Credentials[p.get("AccessKeyId")]
	if !ok {
		return errf(http.StatusNotFound, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
	}
	sts := stringToSign(method, url.Values(p))
	// Constant time: a comparison that stops at the first differing byte
	// tells a caller, by its timing, how much of a forged signature is right.
	if subtle.ConstantTimeCompare([]byte(sign(secret, sts)), []byte(p.get("Signature"))) != 1 {
		return errf(http.StatusBadRequest, "SignatureDoesNotMatch", "Specified signature is not matched with our calculation. server string to sign is:"+sts)
	}
	ts, err := time.Parse(timeFormat, p.get("Timestamp"))
	if err != nil {
		return errf(http.StatusBadRequest, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted.")
	}
	if d := time.Since(ts); d > maxSkew || d < -maxSkew {
		return errf(http.StatusBadRequest, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
	}
	fresh, err := e.nonces.use(p.get("SignatureNonce"), time.Now())
	if err != nil {
		e.log.WithError(err).Error("recording a signature nonce")
		return errf(http.StatusServiceUnavailable, "ServiceUnavailable", "The request has failed due to a temporary failure of the server.")
	}
	if !fresh {
		return errf(http.StatusBadRequest, "SignatureNonceUsed", "Specified signature nonce was used already.")
	}
	return nil
}

type handler func(params) (map[string]any, *apiError)

func (e *Emulator) dispatch(r *http.Request, action string, p params) (map[string]any, *apiError) {
	// Actions that change state honour ClientToken (see idempotent).
	changes := map[string]handler{
		"CreateContainerGroup":  e.createGroup,
		"UpdateContainerGroup":  e.updateGroup,
		"DeleteContainerGroup":  e.deleteGroup,
		"RestartContainerGroup": e.restartGroup,
		"CreateVirtualNode":     e.createVirtualNode,
		"UpdateVirtualNode":     e.updateVirtualNode,
		"DeleteVirtualNode":     e.deleteVirtualNode,
		"CreateImageCache":      e.createImageCache,
		"UpdateImageCache":      e.updateImageCache,
		"DeleteImageCache":      e.deleteImageCache,
	}
	reads := map[string]handler{
		"DescribeContainerGroups":           e.describeGroups,
		"DescribeContainerGroupStatus":      e.describeGroupStatus,
		"DescribeContainerLog":              e.describeLog,
		"ExecContainerCommand":              func(p params) (map[string]any, *apiError) { return e.execCommand(r, p) },
		"DescribeMultiContainerGroupMetric": e.describeMultiMetric,
		"DescribeContainerGroupMetric":      e.describeMetric,
		"DescribeRegions":                   e.describeRegions,
		"DescribeVirtualNodes":              e.describeVirtualNodes,
		"DescribeImageCaches":               e.describeImageCaches,
	}
	if h, ok := changes[action]; ok {
		return e.idempotent(action, p, h)
	}
	if h, ok := reads[action]; ok {
		return h(p)
	}
	return nil, errf(http.StatusBadRequest, "InvalidAction.NotFound", "Specified api is not found, please check your url and method: "+action)
}

// checkRegion refuses a RegionId other than the emulator's. The SDK always
// sends one (the client's region when the request has none).
func (e *Emulator) checkRegion(p params) *apiError {
	r := p.get("RegionId")
	if r == "" {
		return missingParam("RegionId")
	}
	if r != e.cfg.Region {
		return errf(http.StatusBadRequest, "InvalidRegionId.NotFound", "The specified region "+r+" does not exist.")
	}
	return nil
}

func (e *Emulator) describeRegions(params) (map[string]any, *apiError) {
	return map[string]any{"Regions": []map[string]any{{"RegionId": e.cfg.Region, "RegionEndpoint": "eci." + e.cfg.Region + ".aliyuncs.com", "Zones": e.cfg.Zones}}}, nil
}

// serveAdmin is the fault and state control for tests.
func (e *Emulator) serveAdmin(w http.ResponseWriter, r *http.Request) {
	if e.cfg.AdminToken == "" || subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+e.cfg.AdminToken)) != 1 {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	switch {
	case r.URL.Path == "/admin/faults" && r.Method == http.MethodPut:
		var f []Fault
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&f); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		e.SetFaults(f...)
	case r.URL.Path == "/admin/faults" && r.Method == http.MethodGet:
		e.mu.Lock()
		f := e.faults
		e.mu.Unlock()
		writeJSON(w, http.StatusOK, f)
	case r.URL.Path == "/admin/calls":
		writeJSON(w, http.StatusOK, e.CallCounts())
	case strings.HasPrefix(r.URL.Path, "/admin/containergroups/") && strings.HasSuffix(r.URL.Path, "/expire") && r.Method == http.MethodPost:
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/admin/containergroups/"), "/expire")
		if err := e.Expire(id); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
		}
	case strings.HasPrefix(r.URL.Path, "/admin/containergroups/") && r.Method == http.MethodDelete:
		if err := e.DeleteBehindBack(strings.TrimPrefix(r.URL.Path, "/admin/containergroups/")); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
		}
	default:
		http.NotFound(w, r)
	}
}
