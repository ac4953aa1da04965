package emulator

import (
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	sdkeci "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"
)

// commonCall sends an action as a signed POST CommonRequest, the way to
// reach what the old SDK lacks, and decodes the answer.
func commonCall(c *sdkeci.Client, scheme, action string, q map[string]string) (map[string]any, error) {
	req := requests.NewCommonRequest()
	req.Method, req.Scheme, req.Product, req.Version, req.ApiName = "POST", scheme, "Eci", "2018-08-08", action
	for k, v := range q {
		req.QueryParams[k] = v
	}
	resp, err := c.ProcessCommonRequest(req)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(resp.GetHttpContentBytes(), &out); err != nil {
		return nil, err
	}
	return out, nil
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// describeGroup returns group id as DescribeContainerGroups has it, or nil.
func describeGroup(t *testing.T, c *sdkeci.Client, scheme, id string) *sdkeci.DescribeContainerGroupsContainerGroup0 {
	t.Helper()
	d := sdkeci.CreateDescribeContainerGroupsRequest()
	d.Scheme = scheme
	d.RegionId = "cn-hangzhou"
	d.ContainerGroupIds = `["` + id + `"]`
	dr, err := c.DescribeContainerGroups(d)
	if err != nil {
		t.Fatalf("describing %s: %v", id, err)
	}
	if len(dr.ContainerGroups) == 0 {
		return nil
	}
	return &dr.ContainerGroups[0]
}

// waitStatus waits until group id has status want and returns it.
func waitStatus(t *testing.T, c *sdkeci.Client, scheme, id, want string) *sdkeci.DescribeContainerGroupsContainerGroup0 {
	t.Helper()
	var g *sdkeci.DescribeContainerGroupsContainerGroup0
	waitFor(t, id+" "+want, func() bool {
		g = describeGroup(t, c, scheme, id)
		return g != nil && g.Status == want
	})
	return g
}

// runEmulator serves an emulator on loopback until the returned stop,
// which closes it as a restart would; t's cleanup stops it too.
func runEmulator(t *testing.T, cfg Config) (e *Emulator, endpoint string, stop func()) {
	t.Helper()
	e, err := New(withoutQuota(cfg))
	if err != nil {
		t.Fatalf("starting the emulator: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = e.Serve(ctx, l); close(done) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-done
		if err := e.Close(); err != nil {
			t.Errorf("closing the emulator: %v", err)
		}
	}
	t.Cleanup(stop)
	return e, l.Addr().String(), stop
}

// startForTest is emulatortest.StartForTest for this package's own tests,
// which cannot import it (it imports this package).
func startForTest(t testing.TB, cfg Config) (*Emulator, string) {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	e, addr, stop, err := StartLocal(withoutQuota(cfg))
	if err != nil {
		t.Fatalf("starting the ECI emulator: %v", err)
	}
	t.Cleanup(stop)
	return e, addr
}

// withoutQuota turns the quota off unless cfg sets one: these tests call
// the emulator through the bare SDK, far faster than ECI's quotas allow
// (quota_test.go tests the quota).
func withoutQuota(cfg Config) Config {
	q := cfg.Quota
	if q.PerMinute == nil && q.Burst == nil && q.Scale == 0 {
		cfg.Quota.Off = true
	}
	return cfg
}
