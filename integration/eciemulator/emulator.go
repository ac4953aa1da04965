package eciemulator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Config configures an emulator.
type Config struct {
	// Credentials maps AccessKeyId to AccessKeySecret.
	Credentials map[string]string
	Region      string   // default cn-hangzhou
	Zones       []string // default <region>-a, <region>-b
	Runtime     string   // "process" (default) or "sim"
	// DataDir keeps process sandboxes and logs; default a temporary dir.
	DataDir    string
	Delays     Delays
	AdminToken string // bearer token of /admin/; empty disables it
	Logger     logrus.FieldLogger
}

// Delays are how long a new group stays in each state before running.
type Delays struct {
	Scheduling, Pending time.Duration
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
	nonces  nonces
	runtime runtime

	mu       sync.Mutex
	groups   map[string]*group
	order    []string // ids in creation order, for stable paging
	tokens   map[string]string
	calls    map[string]int
	faults   []Fault
	sessions map[string]*execSession
	closed   bool
	seq      int
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
	e := &Emulator{cfg: cfg, log: cfg.Logger, groups: map[string]*group{}, tokens: map[string]string{},
		calls: map[string]int{}, sessions: map[string]*execSession{}}
	switch cfg.Runtime {
	case "process":
		e.runtime = newProcessRuntime(filepath.Join(cfg.DataDir, "sandboxes"), e)
	case "sim":
		e.runtime = simRuntime{e}
	default:
		return nil, fmt.Errorf("eciemulator: runtime %q: want process or sim", cfg.Runtime)
	}
	return e, nil
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
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops every container process.
func (e *Emulator) Close() error {
	e.mu.Lock()
	e.closed = true
	groups := make([]*group, 0, len(e.groups))
	for _, g := range e.groups {
		groups = append(groups, g)
	}
	e.mu.Unlock()
	for _, g := range groups {
		e.runtime.stop(g, 0)
	}
	return nil
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
	for i, x := range e.order {
		if x == id {
			e.order = append(e.order[:i], e.order[i+1:]...)
			break
		}
	}
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
	if sign(secret, sts) != p.get("Signature") {
		return errf(http.StatusBadRequest, "SignatureDoesNotMatch", "Specified signature is not matched with our calculation. server string to sign is:"+sts)
	}
	ts, err := time.Parse(timeFormat, p.get("Timestamp"))
	if err != nil {
		return errf(http.StatusBadRequest, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted.")
	}
	if d := time.Since(ts); d > maxSkew || d < -maxSkew {
		return errf(http.StatusBadRequest, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
	}
	if !e.nonces.use(p.get("SignatureNonce"), time.Now()) {
		return errf(http.StatusBadRequest, "SignatureNonceUsed", "Specified signature nonce was used already.")
	}
	return nil
}

func (e *Emulator) dispatch(r *http.Request, action string, p params) (map[string]any, *apiError) {
	handlers := map[string]func(params) (map[string]any, *apiError){
		"CreateContainerGroup":              e.createGroup,
		"DescribeContainerGroups":           e.describeGroups,
		"DescribeContainerGroupStatus":      e.describeGroupStatus,
		"DeleteContainerGroup":              e.deleteGroup,
		"RestartContainerGroup":             e.restartGroup,
		"DescribeContainerLog":              e.describeLog,
		"ExecContainerCommand":              func(p params) (map[string]any, *apiError) { return e.execCommand(r, p) },
		"DescribeMultiContainerGroupMetric": e.describeMultiMetric,
		"DescribeContainerGroupMetric":      e.describeMetric,
		"DescribeRegions":                   e.describeRegions,
	}
	h, ok := handlers[action]
	if !ok {
		return nil, errf(http.StatusBadRequest, "InvalidAction.NotFound", "Specified api is not found, please check your url and method: "+action)
	}
	return h(p)
}

func paramsHash(p params) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		switch k {
		case "Signature", "SignatureNonce", "Timestamp", "AccessKeyId", "SignatureType", "SignatureMethod", "SignatureVersion", "Format":
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s\n", k, p.get(k))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (e *Emulator) createGroup(p params) (map[string]any, *apiError) {
	for _, k := range []string{"RegionId", "SecurityGroupId", "VSwitchId", "ContainerGroupName"} {
		if p.get(k) == "" {
			return nil, missingParam(k)
		}
	}
	if r := p.get("RegionId"); r != e.cfg.Region {
		return nil, errf(http.StatusBadRequest, "InvalidRegionId.NotFound", "The specified region "+r+" does not exist.")
	}
	name := p.get("ContainerGroupName")
	if len(name) < 2 || !nameRE.MatchString(name) {
		return nil, invalidParam("ContainerGroupName", "2-128 lower-case letters, digits and hyphens, not starting or ending with a hyphen")
	}
	token := p.get("ClientToken")
	if len(token) > 64 {
		return nil, invalidParam("ClientToken", "at most 64 characters")
	}
	hash := paramsHash(p)
	if token != "" {
		e.mu.Lock()
		id, ok := e.tokens[token]
		var g *group
		if ok {
			g = e.groups[id]
		}
		e.mu.Unlock()
		if ok {
			if g != nil && g.paramsHash != hash {
				return nil, errf(http.StatusBadRequest, "IdempotentParameterMismatch", "The request uses the same client token as a previous, but non-identical request.")
			}
			return map[string]any{"ContainerGroupId": id}, nil
		}
	}
	containers, apiErr := parseContainers(p, "Container")
	if apiErr != nil {
		return nil, apiErr
	}
	if len(containers) == 0 {
		return nil, missingParam("Container.1.Name")
	}
	if len(containers) > 20 {
		return nil, invalidParam("Container", "at most 20 containers")
	}
	inits, apiErr := parseContainers(p, "InitContainer")
	if apiErr != nil {
		return nil, apiErr
	}
	vols, apiErr := parseVolumes(p)
	if apiErr != nil {
		return nil, apiErr
	}
	names := map[string]bool{}
	for _, v := range vols {
		names[v.Name] = true
	}
	for _, c := range append(append([]*container{}, containers...), inits...) {
		for _, m := range c.VolumeMounts {
			if !names[m.Name] {
				return nil, invalidParam("VolumeMount.Name", "container "+c.Name+" mounts undefined volume "+m.Name)
			}
		}
	}
	switch rp := p.get("RestartPolicy"); rp {
	case "", "Always", "OnFailure", "Never":
	default:
		return nil, invalidParam("RestartPolicy", "must be Always, OnFailure or Never")
	}
	cpu, apiErr := p.float("Cpu")
	if apiErr != nil {
		return nil, apiErr
	}
	mem, apiErr := p.float("Memory")
	if apiErr != nil {
		return nil, apiErr
	}
	instanceType := p.get("InstanceType")
	if instanceType == "" {
		if cpu == 0 && mem == 0 {
			for _, c := range containers {
				cpu += c.Cpu
				mem += c.Memory
			}
			if cpu == 0 && mem == 0 {
				cpu, mem = 2, 4
			}
		}
		var ok bool
		if cpu, mem, ok = roundSpec(cpu, mem); !ok {
			return nil, invalidParam("Cpu/Memory", "no ECI specification fits")
		}
	}
	switch s := p.get("SpotStrategy"); s {
	case "", "NoSpot", "SpotAsPriceGo", "SpotWithPriceLimit":
	default:
		return nil, invalidParam("SpotStrategy", s)
	}
	var tags []tag
	for _, n := range p.indices("Tag") {
		k, v := p.get(fmt.Sprintf("Tag.%d.Key", n)), p.get(fmt.Sprintf("Tag.%d.Value", n))
		if k == "" {
			return nil, missingParam(fmt.Sprintf("Tag.%d.Key", n))
		}
		if strings.HasPrefix(k, "aliyun") || strings.HasPrefix(k, "acs:") || len(k) > 128 || len(v) > 128 {
			return nil, invalidParam(fmt.Sprintf("Tag.%d.Key", n), "reserved prefix or over 128 characters")
		}
		tags = append(tags, tag{Key: k, Value: v})
	}
	if len(tags) > 20 {
		return nil, invalidParam("Tag", "at most 20 tags")
	}
	vswitches := strings.Split(p.get("VSwitchId"), ",")
	now := time.Now().UTC()
	e.mu.Lock()
	defer e.mu.Unlock()
	if token != "" { // a concurrent twin may have won
		if id, ok := e.tokens[token]; ok {
			return map[string]any{"ContainerGroupId": id}, nil
		}
	}
	e.seq++
	id := fmt.Sprintf("eci-%s%06d", randomSuffix(), e.seq)
	zone := e.cfg.Zones[e.seq%len(e.cfg.Zones)]
	restart := p.get("RestartPolicy")
	if restart == "" {
		restart = "Always"
	}
	g := &group{
		ContainerGroupID: id, ContainerGroupName: name, RegionID: e.cfg.Region, ZoneID: zone, Cpu: cpu, Memory: mem,
		InstanceType: instanceType, VSwitchID: strings.TrimSpace(vswitches[0]), SecurityGroupID: p.get("SecurityGroupId"),
		ResourceGroupID: p.get("ResourceGroupId"), RestartPolicy: restart, Status: "Scheduling", CreationTime: now.Format(timeFormat),
		SpotStrategy: p.get("SpotStrategy"), Tags: tags, Containers: containers, InitContainers: inits, Volumes: vols,
		clientToken: token, paramsHash: hash, created: now,
		IntranetIP: fmt.Sprintf("192.168.%d.%d", (e.seq/250)%250, e.seq%250+2),
		Events:     []event{},
	}
	for _, c := range append(append([]*container{}, inits...), containers...) {
		c.CurrentState = state{State: "Waiting", DetailStatus: "ContainerCreating", Reason: "ContainerCreating"}
	}
	e.groups[id] = g
	e.order = append(e.order, id)
	if token != "" {
		e.tokens[token] = id
	}
	e.addEventLocked(g, "Normal", "Scheduled", "Successfully assigned to "+zone)
	go e.lifecycle(id)
	return map[string]any{"ContainerGroupId": id}, nil
}

func randomSuffix() string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 8)
	for i := range b {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(letters))))
		b[i] = letters[n.Int64()]
	}
	return string(b)
}

func (e *Emulator) addEventLocked(g *group, typ, reason, msg string) {
	ts := time.Now().UTC().Format(timeFormat)
	for i := range g.Events {
		if g.Events[i].Reason == reason && g.Events[i].Message == msg {
			g.Events[i].Count++
			g.Events[i].LastTimestamp = ts
			return
		}
	}
	g.Events = append(g.Events, event{Count: 1, Type: typ, Name: g.ContainerGroupID + "." + strconv.Itoa(len(g.Events)+1), Message: msg, Reason: reason, FirstTimestamp: ts, LastTimestamp: ts})
}

// lifecycle moves a new group Scheduling -> Pending -> Running.
func (e *Emulator) lifecycle(id string) {
	step := func(d time.Duration, from, to string) bool {
		time.Sleep(d)
		e.mu.Lock()
		defer e.mu.Unlock()
		g, ok := e.groups[id]
		if !ok || g.Status != from || e.closed {
			return false
		}
		g.Status = to
		return true
	}
	if !step(e.cfg.Delays.Scheduling, "Scheduling", "Pending") {
		return
	}
	if !step(e.cfg.Delays.Pending, "Pending", "Pending") {
		return
	}
	e.mu.Lock()
	g, ok := e.groups[id]
	e.mu.Unlock()
	if ok {
		e.runtime.start(g)
	}
}

// matchTags: every Tag.N filter must be on the group.
func matchTags(g *group, want []tag) bool {
	for _, w := range want {
		found := false
		for _, t := range g.Tags {
			if t.Key == w.Key && (w.Value == "" || t.Value == w.Value) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (e *Emulator) describeGroups(p params) (map[string]any, *apiError) {
	limit, apiErr := p.int("Limit", 20)
	if apiErr != nil {
		return nil, apiErr
	}
	if limit < 1 || limit > 20 {
		return nil, invalidParam("Limit", "must be 1-20")
	}
	var ids []string
	if raw := p.get("ContainerGroupIds"); raw != "" {
		if err := json.Unmarshal([]byte(raw), &ids); err != nil {
			return nil, invalidParam("ContainerGroupIds", "must be a JSON array of ids")
		}
		if len(ids) > 20 {
			return nil, invalidParam("ContainerGroupIds", "at most 20 ids")
		}
	}
	var want []tag
	for _, n := range p.indices("Tag") {
		want = append(want, tag{Key: p.get(fmt.Sprintf("Tag.%d.Key", n)), Value: p.get(fmt.Sprintf("Tag.%d.Value", n))})
	}
	start := 0
	if tok := p.get("NextToken"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		n, err2 := strconv.Atoi(string(b))
		if err != nil || err2 != nil || n < 0 {
			return nil, invalidParam("NextToken", "not a token this API issued")
		}
		start = n
	}
	idSet := map[string]bool{}
	for _, id := range ids {
		idSet[id] = true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var matched []*group
	for _, id := range e.order {
		g := e.groups[id]
		if len(idSet) > 0 && !idSet[id] {
			continue
		}
		if n := p.get("ContainerGroupName"); n != "" && g.ContainerGroupName != n {
			continue
		}
		if s := p.get("Status"); s != "" && g.Status != s {
			continue
		}
		if z := p.get("ZoneId"); z != "" && g.ZoneID != z {
			continue
		}
		if !matchTags(g, want) {
			continue
		}
		matched = append(matched, g)
	}
	end := min(start+limit, len(matched))
	page := []json.RawMessage{}
	for _, g := range matched[min(start, len(matched)):end] {
		b, _ := json.Marshal(g)
		page = append(page, b)
	}
	next := ""
	if end < len(matched) {
		next = base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(end)))
	}
	return map[string]any{"ContainerGroups": page, "TotalCount": len(matched), "NextToken": next}, nil
}

func (e *Emulator) describeGroupStatus(p params) (map[string]any, *apiError) {
	var ids []string
	if raw := p.get("ContainerGroupIds"); raw != "" {
		if err := json.Unmarshal([]byte(raw), &ids); err != nil {
			return nil, invalidParam("ContainerGroupIds", "must be a JSON array of ids")
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	out := []map[string]any{}
	for _, id := range ids {
		if g, ok := e.groups[id]; ok {
			out = append(out, map[string]any{"ContainerGroupId": id, "Status": g.Status})
		}
	}
	return map[string]any{"Data": out}, nil
}

func (e *Emulator) lookup(p params) (*group, *apiError) {
	id := p.get("ContainerGroupId")
	if id == "" {
		return nil, missingParam("ContainerGroupId")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	g, ok := e.groups[id]
	if !ok {
		return nil, notFound(id)
	}
	return g, nil
}

func (e *Emulator) deleteGroup(p params) (map[string]any, *apiError) {
	g, apiErr := e.lookup(p)
	if apiErr != nil {
		return nil, apiErr
	}
	e.mu.Lock()
	e.removeLocked(g.ContainerGroupID)
	e.mu.Unlock()
	go e.runtime.stop(g, 10*time.Second)
	return map[string]any{}, nil
}

func (e *Emulator) restartGroup(p params) (map[string]any, *apiError) {
	g, apiErr := e.lookup(p)
	if apiErr != nil {
		return nil, apiErr
	}
	e.mu.Lock()
	status := g.Status
	e.mu.Unlock()
	if status != "Running" {
		return nil, errf(http.StatusBadRequest, "IncorrectStatus", "The current status of the container group "+g.ContainerGroupID+" is "+status+"; it can be restarted only when Running.")
	}
	e.runtime.stop(g, 10*time.Second)
	e.runtime.start(g)
	return map[string]any{}, nil
}

func (e *Emulator) describeRegions(params) (map[string]any, *apiError) {
	return map[string]any{"Regions": []map[string]any{{"RegionId": e.cfg.Region, "RegionEndpoint": "eci." + e.cfg.Region + ".aliyuncs.com", "Zones": e.cfg.Zones}}}, nil
}

// serveAdmin is the fault and state control for tests.
func (e *Emulator) serveAdmin(w http.ResponseWriter, r *http.Request) {
	if e.cfg.AdminToken == "" || r.Header.Get("Authorization") != "Bearer "+e.cfg.AdminToken {
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
