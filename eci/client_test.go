package eci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"

	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/eci/emulator/emulatortest"
	"github.com/vnode-project/vnode/eci/model"
	"github.com/vnode-project/vnode/provider/translate"
)

const (
	id     = "AKID-test"
	secret = "very-secret-value"
)

func newClient(t *testing.T, ep string, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{RegionID: "cn-hangzhou", Endpoint: "http://" + ep, AccessKeyID: id, AccessKeySecret: secret,
		Retry: RetryPolicy{Base: 5 * time.Millisecond, Max: 50 * time.Millisecond, Attempts: 30}}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func group(name, token string, cmd ...string) *model.ContainerGroup {
	return &model.ContainerGroup{
		Name: name, RestartPolicy: "Never", ClientToken: token, SecurityGroupID: "sg-1", VSwitchIDs: []string{"vsw-1"},
		CPU: 1, MemoryGi: 2, Tags: map[string]string{translate.TagNode: "n1", translate.TagCluster: "c1"},
		Containers: []model.Container{{Name: "app", Image: "busybox", Command: cmd,
			LivenessProbe: &model.Probe{Handler: model.Handler{Exec: []string{"cat", "/tmp/healthy"}}, PeriodSeconds: 5}}},
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{RegionID: "cn-hangzhou"}); err == nil || !strings.Contains(err.Error(), "access key id") {
		t.Errorf("missing credentials: %v", err)
	}
	if _, err := New(Config{RegionID: "cn-hangzhou", AccessKeyID: "a", AccessKeySecret: "b", Endpoint: "127.0.0.1:80"}); err == nil {
		t.Error("endpoint without scheme accepted")
	}
	c, err := New(Config{RegionID: "cn-shanghai", AccessKeyID: "a", AccessKeySecret: "b", NetworkType: "vpc"})
	if err != nil || c.domain != "eci-vpc.cn-shanghai.aliyuncs.com" || c.scheme != "https" {
		t.Errorf("default endpoint %s://%s (%v)", c.scheme, c.domain, err)
	}
}

// Arguments reach the container intact: the process runtime runs them, and
// the command prints what it got.
func TestCreateListLogsExecDelete(t *testing.T) {
	emu, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{id: secret}, Runtime: "process"})
	c := newClient(t, ep, nil)
	ctx := context.Background()
	g := group("args", "tok-args", "/bin/sh", "-c", `printf '%s ' "$(hostname)"; printf '<%s>' "$@"; echo; sleep 60`, "sh", "a b", "", `c'd "e"`)
	g.HostName = "args-host"
	gid, reqID, err := c.CreateContainerGroup(ctx, g)
	if err != nil || gid == "" || reqID == "" {
		t.Fatalf("create: %q %q %v", gid, reqID, err)
	}
	if again, _, err := c.CreateContainerGroup(ctx, g); err != nil || again != gid {
		t.Fatalf("idempotent create: %s %v", again, err)
	}
	var insts []*model.Instance
	deadline := time.Now().Add(10 * time.Second)
	for {
		insts, err = listAll(ctx, c, map[string]string{translate.TagNode: "n1", translate.TagCluster: "c1"})
		if err != nil {
			t.Fatal(err)
		}
		if len(insts) == 1 && insts[0].Status == translate.StatusRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not running: %+v", insts)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if i := insts[0]; i.CPU != 1 || i.MemoryGi != 2 || i.IntranetIP == "" || i.Tags[translate.TagNode] != "n1" || i.Containers[0].Current.State != "Running" {
		t.Errorf("instance %+v", i)
	}
	var content string
	for !strings.Contains(content, "\n") {
		content, err = c.ContainerLog(ctx, model.LogRequest{InstanceID: gid, Container: "app"})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.HasSuffix(content, ` args-host <a b><><c'd "e">`+"\n") {
		t.Fatalf("arguments arrived as %q", content)
	}
	uri, err := c.ExecCommand(ctx, gid, "app", []string{"echo", "x y"}, false, false)
	if err != nil || !strings.HasPrefix(uri, "ws://") {
		t.Fatalf("exec: %q %v", uri, err)
	}
	m, err := c.InstanceMetrics(ctx, []string{gid})
	if err != nil || m[gid].Containers["app"].MemoryRSSBytes == 0 {
		t.Fatalf("metrics %+v %v", m, err)
	}
	if err := c.DeleteContainerGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	err = c.DeleteContainerGroup(ctx, gid)
	if !errdefs.IsNotFound(err) || KindOf(err) != KindNotFound {
		t.Fatalf("second delete: %v", err)
	}
	if len(emu.ContainerGroups()) != 0 {
		t.Fatal("group left behind")
	}
}

func TestErrorsAndSecrets(t *testing.T) {
	emu, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{id: secret}, Runtime: "sim"})
	var logs bytes.Buffer
	logger := logrus.New()
	logger.SetOutput(&logs)
	logger.SetLevel(logrus.DebugLevel)
	c := newClient(t, ep, func(cfg *Config) { cfg.Logger = logger })
	ctx := context.Background()
	g := group("bad_name", "tok")
	_, _, err := c.CreateContainerGroup(ctx, g)
	if !errdefs.IsInvalidInput(err) {
		t.Errorf("invalid name: %v", err)
	}
	g.ClientToken = ""
	if _, _, err := c.CreateContainerGroup(ctx, group("no-token", "")); KindOf(err) != KindInvalidInput {
		t.Errorf("create without a token: %v", err)
	}
	wrong := newClient(t, ep, func(cfg *Config) { cfg.AccessKeySecret = "wrong-secret"; cfg.Logger = logger })
	err = wrong.Check(ctx)
	if KindOf(err) != KindAuth {
		t.Errorf("wrong secret: %v", err)
	}
	emu.SetFaults(emulator.Fault{Action: "DescribeRegions", ErrorRate: 1, ErrorCode: "Throttling.User"})
	few := newClient(t, ep, func(cfg *Config) { cfg.Retry.Attempts = 3; cfg.Logger = logger })
	if err := few.Check(ctx); KindOf(err) != KindThrottled {
		t.Errorf("throttled on every attempt: %v", err)
	}
	// The caller gives up while the client backs off: the error still says
	// the call was throttled, not merely that time ran out.
	short, cancel := context.WithCancel(ctx)
	defer cancel()
	logger.AddHook(cancelOnRetry{cancel})
	err = c.Check(short)
	if KindOf(err) != KindThrottled || !errors.Is(err, context.Canceled) {
		t.Errorf("throttled until the caller gave up: %v", err)
	}
	for _, s := range []string{secret, "wrong-secret"} {
		if strings.Contains(logs.String(), s) || strings.Contains(fmt.Sprint(err), s) {
			t.Fatalf("a secret leaked into logs or errors")
		}
	}
	if !strings.Contains(logs.String(), "retrying ECI call") {
		t.Error("retries were not logged at debug level")
	}
}

// 1,000 creates through the client with 20% throttling, 5% 5xx and 5%
// commit-then-fail end with exactly 1,000 container groups.
func TestThousandCreatesUnderFaults(t *testing.T) {
	// Throttling is injected; the quota would throttle for real.
	emu, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{id: secret}, Runtime: "sim", Quota: emulator.Quota{Off: true}})
	emu.SetFaults(
		emulator.Fault{Action: "CreateContainerGroup", ErrorRate: 0.20, ErrorCode: "Throttling.User"},
		emulator.Fault{Action: "CreateContainerGroup", ErrorRate: 0.0625, ErrorCode: "ServiceUnavailable"}, // 5% of all calls
		emulator.Fault{Action: "CreateContainerGroup", CommitThenFailRate: 0.0667},                         // 5% of all calls
	)
	reg := prometheus.NewRegistry()
	c := newClient(t, ep, func(cfg *Config) {
		cfg.RateLimits = map[string]int{"CreateContainerGroup": -1}
		cfg.Metrics = reg
	})
	ctx := context.Background()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	var mu sync.Mutex
	ids := map[string]bool{}
	var failures []error
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			gid, _, err := c.CreateContainerGroup(ctx, group(fmt.Sprintf("p-%d", i), fmt.Sprintf("vnode-uid-%d", i)))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures = append(failures, err)
				return
			}
			ids[gid] = true
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d creates failed, first: %v", len(failures), failures[0])
	}
	if got := len(emu.ContainerGroups()); got != 1000 || len(ids) != 1000 {
		t.Fatalf("%d groups in the emulator, %d ids returned; want 1000", got, len(ids))
	}
	calls := emu.CallCounts()["CreateContainerGroup"]
	retries := testutil.ToFloat64(c.m.retries.WithLabelValues("CreateContainerGroup"))
	t.Logf("1000 creates took %d calls (%v retries)", calls, retries)
	if calls <= 1000 || retries == 0 {
		t.Fatalf("faults were not exercised: %d calls", calls)
	}
	if n := testutil.ToFloat64(c.m.errors.WithLabelValues("CreateContainerGroup", "Throttling.User")); n == 0 {
		t.Error("throttling errors not counted")
	}
}

// An https endpoint is verified: the emulator's self-signed certificate is
// refused until its CA file is given.
func TestHTTPSEndpointVerified(t *testing.T) {
	emu, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{id: secret}, Runtime: "sim", TLS: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	untrusting := newClient(t, ep, func(c *Config) {
		c.Endpoint = "https://" + ep
		c.Retry.Attempts = 1
	})
	if err := untrusting.Check(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a self-signed certificate was accepted without its CA: %v", err)
	}
	trusting := newClient(t, ep, func(c *Config) {
		c.Endpoint = "https://" + ep
		c.CAFile = emu.CertFile()
	})
	if err := trusting.Check(ctx); err != nil {
		t.Fatalf("with the CA file: %v", err)
	}
	if _, err := New(Config{RegionID: "cn-hangzhou", AccessKeyID: "a", AccessKeySecret: "b", CAFile: "/nonexistent.pem"}); err == nil {
		t.Fatal("a missing CA file was accepted")
	}
}

// cancelOnRetry cancels a context when the client logs its first retry.
type cancelOnRetry struct{ cancel context.CancelFunc }

func (cancelOnRetry) Levels() []logrus.Level { return []logrus.Level{logrus.DebugLevel} }

func (h cancelOnRetry) Fire(e *logrus.Entry) error {
	if e.Message == "retrying ECI call" {
		h.cancel()
	}
	return nil
}

// The status list pages 200 groups a call; a group's digest holds while
// nothing changes and moves when its status does. Details come by id.
func TestStatusesAndDetailsByID(t *testing.T) {
	emu, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{id: secret}, Runtime: "sim"})
	c := newClient(t, ep, nil)
	ctx := context.Background()
	tags := map[string]string{translate.TagNode: "n1", translate.TagCluster: "c1"}
	var ids []string
	for i := 0; i < 25; i++ {
		gid, _, err := c.CreateContainerGroup(ctx, group(fmt.Sprintf("s-%d", i), fmt.Sprintf("tok-s-%d", i), "sleep", "60"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, gid)
	}
	running := func() map[string]model.GroupStatus {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			sts, err := c.ListStatuses(ctx, tags, 0)
			if err != nil {
				t.Fatal(err)
			}
			out := map[string]model.GroupStatus{}
			for _, s := range sts {
				if s.Status == translate.StatusRunning {
					out[s.ID] = s
				}
			}
			if len(out) == len(ids) || time.Now().After(deadline) {
				return out
			}
		}
	}
	before := running()
	if len(before) != 25 {
		t.Fatalf("%d of 25 groups running", len(before))
	}
	n0 := emu.CallCounts()["DescribeContainerGroupStatus"]
	again := running()
	if n := emu.CallCounts()["DescribeContainerGroupStatus"] - n0; n != 1 {
		t.Errorf("25 statuses took %d calls, want 1", n)
	}
	for id, s := range again {
		if s.Digest != before[id].Digest {
			t.Errorf("%s: digest moved while nothing changed", id)
		}
	}
	if err := emu.Expire(ids[3]); err != nil {
		t.Fatal(err)
	}
	sts, err := c.ListStatuses(ctx, tags, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sts {
		if s.ID == ids[3] && (s.Digest == before[ids[3]].Digest || s.Status != translate.StatusExpired) {
			t.Errorf("expired group: %+v", s)
		}
	}

	// With changedWithin (SinceSecond), only what changed that recently:
	// one group expires two seconds after the rest last changed.
	time.Sleep(2 * time.Second)
	if err := emu.Expire(ids[7]); err != nil {
		t.Fatal(err)
	}
	recent, err := c.ListStatuses(ctx, tags, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(recent) != 1 || recent[0].ID != ids[7] || recent[0].Status != translate.StatusExpired {
		t.Errorf("statuses changed within 1s: %+v; want only the group expired now", recent)
	}

	// The full list follows NextToken: 25 groups are two pages of 20.
	n0 = emu.CallCounts()["DescribeContainerGroups"]
	pages := 0
	var all []*model.Instance
	err = c.ListContainerGroups(ctx, tags, func(page []*model.Instance) error {
		pages++
		all = append(all, page...)
		return nil
	})
	if err != nil || pages != 2 {
		t.Fatalf("listed %d pages, %v; want 2", pages, err)
	}
	listed := map[string]bool{}
	for _, i := range all {
		listed[i.ID] = true
	}
	if n := emu.CallCounts()["DescribeContainerGroups"] - n0; n != 2 || len(all) != 25 || len(listed) != 25 {
		t.Errorf("full list: %d instances (%d distinct) in %d calls, want 25 in 2", len(all), len(listed), n)
	}

	want := append(append([]string{}, ids[:21]...), "eci-missing")
	n0 = emu.CallCounts()["DescribeContainerGroups"]
	insts, err := c.GetContainerGroups(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	if n := emu.CallCounts()["DescribeContainerGroups"] - n0; n != 2 {
		t.Errorf("22 ids took %d calls, want 2", n)
	}
	got := map[string]bool{}
	for _, i := range insts {
		got[i.ID] = true
		if i.Tags[translate.TagNode] != "n1" || len(i.Containers) != 1 {
			t.Errorf("instance %+v", i)
		}
	}
	if len(got) != 21 || got["eci-missing"] {
		t.Errorf("got %d instances: %v", len(got), got)
	}
	if insts, err := c.GetContainerGroups(ctx, nil); err != nil || len(insts) != 0 {
		t.Errorf("no ids: %v %v", insts, err)
	}
}

// listAll is every page of ListContainerGroups in one list.
func listAll(ctx context.Context, c *Client, tags map[string]string) ([]*model.Instance, error) {
	var all []*model.Instance
	err := c.ListContainerGroups(ctx, tags, func(page []*model.Instance) error {
		all = append(all, page...)
		return nil
	})
	return all, err
}

// TestStatusDigest: a group's digest follows its status and everything in
// its pod status, and nothing else of the entry (its name, annotations).
func TestStatusDigest(t *testing.T) {
	decode := func(entry string) model.GroupStatus {
		t.Helper()
		var page statusPage
		if err := json.Unmarshal([]byte(`{"NextToken":"","Data":[`+entry+`]}`), &page); err != nil || len(page.Data) != 1 {
			t.Fatalf("%s: %d groups, %v", entry, len(page.Data), err)
		}
		return page.Data[0].domain()
	}
	const base = `{"ContainerGroupId":"eci-1","Name":"a","Annotations":"{}","Status":"Running","PodStatus":{"Phase":"Running","ContainerStatuses":[{"Name":"c","RestartCount":0}]}}`
	was := decode(base)
	if was.ID != "eci-1" || was.Status != "Running" {
		t.Fatalf("decoded %+v", was)
	}
	for _, c := range []struct {
		what, entry string
		moves       bool
	}{
		{"the same entry", base, false},
		{"another name and annotations", strings.NewReplacer(`"Name":"a"`, `"Name":"b"`, `"Annotations":"{}"`, `"Annotations":"{\"k\":\"v\"}"`).Replace(base), false},
		{"a restart within the pod status", strings.Replace(base, `"RestartCount":0`, `"RestartCount":1`, 1), true},
		{"the group's status", strings.Replace(base, `"Status":"Running"`, `"Status":"Failed"`, 1), true},
		{"no pod status", `{"ContainerGroupId":"eci-1","Status":"Running"}`, true},
	} {
		if got := decode(c.entry); (got.Digest != was.Digest) != c.moves {
			t.Errorf("%s: digest moved %v, want %v", c.what, got.Digest != was.Digest, c.moves)
		}
	}
}
