package emulator

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	sdkeci "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"
)

// Groups (ids, tags, status, containers, events), ClientToken records, the
// id sequence, virtual nodes and image caches survive a restart on the same
// DataDir, and the state file is private and whole.
func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim", DataDir: dir}
	emu, ep, stop := runEmulator(t, cfg)
	c := sdkClient(t, ep, testID, testSecret)
	ids := map[string]string{}
	for _, name := range []string{"keep-0", "keep-1", "keep-2", "gone"} {
		r, err := c.CreateContainerGroup(createRequest(name, "tok-"+name))
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = r.ContainerGroupId
	}
	for _, id := range ids {
		waitStatus(t, c, "http", id, "Running")
	}
	if err := emu.Expire(ids["keep-2"]); err != nil {
		t.Fatal(err)
	}
	if err := emu.DeleteBehindBack(ids["gone"]); err != nil {
		t.Fatal(err)
	}
	vn, err := commonCall(c, "http", "CreateVirtualNode", map[string]string{"VSwitchId": "vsw-1", "SecurityGroupId": "sg-1", "VirtualNodeName": "vn-keep"})
	if err != nil {
		t.Fatal(err)
	}
	ic := sdkeci.CreateCreateImageCacheRequest()
	ic.Scheme, ic.ImageCacheName, ic.Image = "http", "cache-keep", []string{"busybox:1.36"}
	icr, err := c.CreateImageCache(ic)
	if err != nil {
		t.Fatal(err)
	}
	snapshot := waitImageCache(t, c, icr.ImageCacheId, "Ready").SnapshotId
	stop()

	fi, err := os.Stat(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, stateFile+".tmp-*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	_, ep2, _ := runEmulator(t, cfg)
	c2 := sdkClient(t, ep2, testID, testSecret)
	// When a group last changed is not saved: a poller asking what changed
	// since before the restart is told of every group, not of none.
	recent, err := commonCall(c2, "http", "DescribeContainerGroupStatus", map[string]string{"SinceSecond": "60"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(recent["Data"].([]any)); n != 3 {
		t.Errorf("SinceSecond=60 just after the restart listed %d groups, want the 3 kept", n)
	}
	for name, want := range map[string]string{"keep-0": "Running", "keep-1": "Running", "keep-2": "Expired"} {
		g := describeGroup(t, c2, "http", ids[name])
		if g == nil {
			t.Fatalf("%s (%s) is gone after the restart", name, ids[name])
		}
		if g.ContainerGroupName != name || g.Status != want || len(g.Tags) != 1 || g.Tags[0].Value != "n1" ||
			len(g.Containers) != 1 || g.Containers[0].Name != "app" || len(g.Events) == 0 {
			t.Errorf("%s after the restart: %+v", name, g)
		}
	}
	if g := describeGroup(t, c2, "http", ids["gone"]); g != nil {
		t.Errorf("a deleted group came back: %+v", g)
	}
	again, err := c2.CreateContainerGroup(createRequest("keep-0", "tok-keep-0"))
	if err != nil || again.ContainerGroupId != ids["keep-0"] {
		t.Fatalf("ClientToken replay after the restart: %v %v", again, err)
	}
	_, err = c2.CreateContainerGroup(createRequest("other", "tok-keep-0"))
	if se := serverError(t, err); se.ErrorCode() != "IdempotentParameterMismatch" {
		t.Errorf("token mismatch after the restart: %s", se.ErrorCode())
	}
	fresh, err := c2.CreateContainerGroup(createRequest("fresh", "tok-fresh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if seqOf(t, fresh.ContainerGroupId) <= seqOf(t, id) {
			t.Errorf("new id %s does not follow %s: the sequence restarted", fresh.ContainerGroupId, id)
		}
	}
	v := describeVirtualNodes(t, c2, map[string]string{"VirtualNodeIds": `["` + vn["VirtualNodeId"].(string) + `"]`})
	if len(v) != 1 || v[0]["VirtualNodeName"] != "vn-keep" || v[0]["Status"] != "Ready" {
		t.Errorf("virtual node after the restart: %v", v)
	}
	if got := waitImageCache(t, c2, icr.ImageCacheId, "Ready"); got.SnapshotId != snapshot || got.ImageCacheName != "cache-keep" {
		t.Errorf("image cache after the restart: %+v", got)
	}
}

func seqOf(t *testing.T, id string) int {
	t.Helper()
	n, err := strconv.Atoi(id[len(id)-6:])
	if err != nil {
		t.Fatalf("id %s: %v", id, err)
	}
	return n
}

// With the process runtime, a restart is a host restart: running
// containers were lost, so Always groups run again (restart count up, the
// lost run as the previous state and log) and Never groups end Failed.
func TestProcessRestartIsAHostRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Credentials: map[string]string{testID: testSecret}, Runtime: "process", DataDir: dir}
	_, ep, stop := runEmulator(t, cfg)
	c := sdkClient(t, ep, testID, testSecret)
	always, err := c.CreateContainerGroup(createRequest("always", ""))
	if err != nil {
		t.Fatal(err)
	}
	neverReq := createRequest("never", "")
	neverReq.RestartPolicy = "Never"
	never, err := c.CreateContainerGroup(neverReq)
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, "http", never.ContainerGroupId, "Running")
	waitStatus(t, c, "http", always.ContainerGroupId, "Running")
	waitFor(t, "the first run's log", func() bool { return strings.Contains(containerLog(t, c, always.ContainerGroupId, false), "hello") })
	stop()

	_, ep2, _ := runEmulator(t, cfg)
	c2 := sdkClient(t, ep2, testID, testSecret)
	var g *sdkeci.DescribeContainerGroupsContainerGroup0
	waitFor(t, "the Always group running again", func() bool {
		g = describeGroup(t, c2, "http", always.ContainerGroupId)
		return g != nil && g.Status == "Running" && g.Containers[0].CurrentState.State == "Running"
	})
	ct := g.Containers[0]
	if ct.RestartCount != 1 || ct.PreviousState.State != "Terminated" || ct.PreviousState.ExitCode != 255 || ct.PreviousState.Reason != "Unknown" {
		t.Errorf("restarted container: count %d, previous %+v", ct.RestartCount, ct.PreviousState)
	}
	if !hasEvent(g.Events, "SandboxChanged") {
		t.Errorf("no SandboxChanged event: %+v", g.Events)
	}
	if prev := containerLog(t, c2, always.ContainerGroupId, true); !strings.Contains(prev, "hello") {
		t.Errorf("previous log %q", prev)
	}
	waitFor(t, "the new run's log", func() bool { return strings.Contains(containerLog(t, c2, always.ContainerGroupId, false), "hello") })
	n := waitStatus(t, c2, "http", never.ContainerGroupId, "Failed")
	if s := n.Containers[0].CurrentState; s.State != "Terminated" || s.ExitCode != 255 || n.Containers[0].RestartCount != 0 {
		t.Errorf("Never container after the restart: %+v", n.Containers[0])
	}
}

func containerLog(t *testing.T, c *sdkeci.Client, id string, previous bool) string {
	t.Helper()
	l := sdkeci.CreateDescribeContainerLogRequest()
	l.Scheme, l.ContainerGroupId, l.ContainerName = "http", id, "app"
	if previous {
		l.LastTime = requests.NewBoolean(true)
	}
	r, err := c.DescribeContainerLog(l)
	if err != nil {
		t.Fatalf("reading the log of %s: %v", id, err)
	}
	return r.Content
}

func hasEvent(evs []sdkeci.DescribeContainerGroupsEvent1, reason string) bool {
	for _, e := range evs {
		if e.Reason == reason {
			return true
		}
	}
	return false
}

// The state reaches the disk on its own, soon after a change: an emulator
// killed without Close loses at most the last moments.
func TestStateSavedWithoutClose(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim", DataDir: dir}
	_, ep, _ := runEmulator(t, cfg)
	c := sdkClient(t, ep, testID, testSecret)
	var ids []string
	for i := 0; i < 5; i++ {
		r, err := c.CreateContainerGroup(createRequest(fmt.Sprintf("crash-%d", i), ""))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ContainerGroupId)
	}
	// Copy the file as a crash would leave it, once it holds all five.
	crashed := t.TempDir()
	waitFor(t, "the state file to hold the groups", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, stateFile))
		var st savedState
		if err != nil || json.Unmarshal(b, &st) != nil || len(st.Groups) != 5 {
			return false
		}
		return os.WriteFile(filepath.Join(crashed, stateFile), b, 0o600) == nil
	})
	cfg.DataDir = crashed
	emu2, _, _ := runEmulator(t, cfg)
	got := emu2.ContainerGroups()
	if len(got) != 5 {
		t.Fatalf("%d groups after the crash, want 5", len(got))
	}
	for i, g := range got {
		if g.ID != ids[i] || g.Name != fmt.Sprintf("crash-%d", i) {
			t.Errorf("group %d: %+v, want %s", i, g, ids[i])
		}
	}
}

// A broken state file stops the emulator instead of being replaced by an
// empty state.
func TestCorruptStateRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte(`{"Version":1,"Groups":[{`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim", DataDir: dir}); err == nil {
		t.Fatal("an emulator started on a corrupt state file")
	}
}

func simParams(name string) params {
	return params(url.Values{"RegionId": {"cn-hangzhou"}, "SecurityGroupId": {"sg-1"}, "VSwitchId": {"vsw-1"},
		"ContainerGroupName": {name}, "Container.1.Name": {"app"}, "Container.1.Image": {"busybox"},
		"Tag.1.Key": {"vnode.io/node"}, "Tag.1.Value": {"n1"}})
}

// With 10,000 sim groups, a save encodes only the groups that changed
// since the last one, so it holds the lock briefly.
func TestSnapshotReencodesOnlyChangedGroups(t *testing.T) {
	const n = 10000
	e, err := New(Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, apiErr := e.createGroup(simParams(fmt.Sprintf("g-%d", i))); apiErr != nil {
			t.Fatal(apiErr)
		}
	}
	created := time.Since(start)
	waitFor(t, "every group Running", func() bool {
		for _, g := range e.ContainerGroups() {
			if g.Status != "Running" {
				return false
			}
		}
		return true
	})
	if _, err := e.encodeState(false); err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	before := map[string]*byte{}
	for id, b := range e.persist.enc {
		before[id] = &b[0]
	}
	changed := e.order[n/2]
	e.mu.Unlock()
	if len(before) != n {
		t.Fatalf("%d groups encoded, want %d", len(before), n)
	}
	if err := e.Expire(changed); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	b, err := e.encodeState(false)
	if err != nil {
		t.Fatal(err)
	}
	saved := time.Since(start)
	e.mu.Lock()
	var reencoded []string
	for id, enc := range e.persist.enc {
		if &enc[0] != before[id] {
			reencoded = append(reencoded, id)
		}
	}
	e.mu.Unlock()
	if len(reencoded) != 1 || reencoded[0] != changed {
		t.Errorf("re-encoded %d groups (%.5v), want only %s", len(reencoded), reencoded, changed)
	}
	var st savedState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Groups) != n || st.Groups[n/2].Group.Status != "Expired" {
		t.Errorf("saved %d groups, the changed one %s", len(st.Groups), st.Groups[n/2].Group.Status)
	}
	t.Logf("%d creates in %v; a save of %d groups (%d MB) with one change in %v", n, created, n, len(b)>>20, saved)
}

func waitImageCache(t *testing.T, c *sdkeci.Client, id, status string) sdkeci.DescribeImageCachesImageCache0 {
	t.Helper()
	var got sdkeci.DescribeImageCachesImageCache0
	waitFor(t, "image cache "+id+" "+status, func() bool {
		d := sdkeci.CreateDescribeImageCachesRequest()
		d.Scheme, d.ImageCacheId = "http", id
		r, err := c.DescribeImageCaches(d)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.ImageCaches) != 1 {
			return false
		}
		got = r.ImageCaches[0]
		return got.Status == status
	})
	return got
}

func describeVirtualNodes(t *testing.T, c *sdkeci.Client, q map[string]string) []map[string]any {
	t.Helper()
	r, err := commonCall(c, "http", "DescribeVirtualNodes", q)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, v := range r["VirtualNodes"].([]any) {
		out = append(out, v.(map[string]any))
	}
	return out
}
