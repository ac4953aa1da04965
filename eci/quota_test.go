package eci

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/eci/emulator/emulatortest"
	"github.com/vnode-project/vnode/eci/model"
)

func TestRateLimitsPerAction(t *testing.T) {
	def, err := RateLimits(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(def) != len(model.Quotas) || def["CreateContainerGroup"] != (RateLimit{PerMinute: 1000, Burst: 8}) ||
		def["DescribeContainerGroups"] != (RateLimit{PerMinute: 2000, Burst: 16}) {
		t.Fatalf("defaults: %v", def)
	}
	l, err := RateLimits(map[string]int{"DeleteContainerGroup": 3000, "DescribeContainerGroups": -1, "DescribeRegions": 60})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := l["DescribeContainerGroups"]; ok || l["DeleteContainerGroup"].PerMinute != 3000 || l["DescribeRegions"] != (RateLimit{60, 1}) {
		t.Fatalf("overrides: %v", l)
	}
	// The old per-class form is refused with a message saying what to write.
	if _, err := RateLimits(map[string]int{"create": 1000}); err == nil || !strings.Contains(err.Error(), "CreateContainerGroup=1000") {
		t.Fatalf("a class name: %v", err)
	}

	// Creates and deletes no longer share a bucket: a create backlog that
	// has spent every create token leaves the delete's whole.
	c, err := New(Config{RegionID: "cn-hangzhou", AccessKeyID: "a", AccessKeySecret: "b"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for c.limiters["CreateContainerGroup"].AllowN(now, 1) {
	}
	for _, a := range []string{"DeleteContainerGroup", "DescribeContainerGroups", "DescribeContainerGroupStatus"} {
		if !c.limiters[a].AllowN(now, 1) {
			t.Errorf("%s waits behind CreateContainerGroup's bucket", a)
		}
	}
	if c.limiters["DescribeRegions"] != nil {
		t.Error("an action with no published quota is limited")
	}
	if n := c.PerMinute("DescribeContainerGroups"); n != 2000 {
		t.Errorf("DescribeContainerGroups: %d calls a minute, want ECI's 2000", n)
	}
	if n := c.PerMinute("DescribeRegions"); n != 0 {
		t.Errorf("an unlimited action: %d calls a minute", n)
	}
}

// A burst of creates and deletes against the emulator's quotas (scaled
// down through its config, the client told the same rates) makes no call
// the emulator throttles. The burst is well over ECI's bucket: only the
// client's pacing keeps it within the quota. (The client's bucket is a
// third of the emulator's here, leaving a second of slack for calls
// bunched up on a loaded machine; by default it is half, half a second.)
func TestBurstWithinQuotaIsNeverThrottled(t *testing.T) {
	const perMin, burst, n = 1200, 30, 80
	emu, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{id: secret}, Runtime: "sim",
		Quota: emulator.Quota{PerMinute: map[string]int{"CreateContainerGroup": perMin, "DeleteContainerGroup": perMin},
			Burst: map[string]int{"CreateContainerGroup": burst, "DeleteContainerGroup": burst}}})
	c := newClient(t, ep, func(cfg *Config) {
		cfg.RateLimits = map[string]int{"CreateContainerGroup": perMin, "DeleteContainerGroup": perMin}
	})
	ctx := context.Background()
	ids := make(chan string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			gid, _, err := c.CreateContainerGroup(ctx, group(fmt.Sprintf("b-%d", i), fmt.Sprintf("tok-b-%d", i)))
			if err != nil {
				t.Errorf("create %d: %v", i, err)
				return
			}
			ids <- gid
		})
	}
	wg.Wait()
	close(ids)
	for gid := range ids {
		wg.Go(func() {
			if err := c.DeleteContainerGroup(ctx, gid); err != nil {
				t.Errorf("delete %s: %v", gid, err)
			}
		})
	}
	wg.Wait()
	if got := emu.ThrottledCounts(); len(got) != 0 {
		t.Fatalf("the emulator throttled %v", got)
	}
	if calls := emu.CallCounts(); calls["CreateContainerGroup"] != n || calls["DeleteContainerGroup"] != n {
		t.Fatalf("calls %v, want %d creates and deletes, none retried", calls, n)
	}
}

// When ECI throttles anyway (another client spends the account's quota),
// creates back off and retry; none is lost, none made twice.
func TestThrottledCreatesBackOffAndAreNotDuplicated(t *testing.T) {
	const n = 20
	emu, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{id: secret}, Runtime: "sim",
		Quota: emulator.Quota{PerMinute: map[string]int{"CreateContainerGroup": 600}, Burst: map[string]int{"CreateContainerGroup": 2}}})
	c := newClient(t, ep, func(cfg *Config) {
		cfg.RateLimits = map[string]int{"CreateContainerGroup": -1} // unaware of the quota
		cfg.Retry = RetryPolicy{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond, Attempts: 1000}
	})
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, _, err := c.CreateContainerGroup(ctx, group(fmt.Sprintf("t-%d", i), fmt.Sprintf("tok-t-%d", i))); err != nil {
				t.Errorf("create %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if emu.ThrottledCounts()["CreateContainerGroup"] == 0 {
		t.Fatal("the burst was never throttled: the test tests nothing")
	}
	if testutil.ToFloat64(c.m.retries.WithLabelValues("CreateContainerGroup")) == 0 {
		t.Fatal("throttled creates were not retried")
	}
	names := map[string]int{}
	for _, g := range emu.ContainerGroups() {
		names[g.Name]++
	}
	if len(names) != n {
		t.Fatalf("%d distinct groups, want %d", len(names), n)
	}
	for name, k := range names {
		if k != 1 {
			t.Errorf("%s made %d times", name, k)
		}
	}
}
