package emulator

import (
	"fmt"
	"net/http"
	"reflect"
	"testing"

	sdkeci "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"

	"github.com/vnode-project/vnode/eci/model"
)

// Beyond an action's quota the emulator answers as ECI does, through the
// real SDK: HTTP 400 Throttling.User, nothing created; the quota is per
// action and per account.
func TestQuotaAnswersThrottlingUser(t *testing.T) {
	// One call a minute refills: the burst is all the test can spend.
	emu, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret, "other-id": "other-secret"}, Runtime: "sim",
		Quota: Quota{PerMinute: map[string]int{"CreateContainerGroup": 1}, Burst: map[string]int{"CreateContainerGroup": 3}}})
	c := sdkClient(t, ep, testID, testSecret)
	for i := range 3 {
		if _, err := c.CreateContainerGroup(createRequest(fmt.Sprintf("g%d", i), fmt.Sprintf("tok-%d", i))); err != nil {
			t.Fatalf("create %d within the burst: %v", i, err)
		}
	}
	_, err := c.CreateContainerGroup(createRequest("g3", "tok-3"))
	se := serverError(t, err)
	if se.HttpStatus() != http.StatusBadRequest || se.ErrorCode() != "Throttling.User" || se.Message() != "Request was denied due to user flow control." {
		t.Fatalf("beyond the quota: got %d %s %q", se.HttpStatus(), se.ErrorCode(), se.Message())
	}
	if n := len(emu.ContainerGroups()); n != 3 {
		t.Fatalf("a throttled create acted: %d groups", n)
	}
	// Another action's bucket, and another account's, are untouched.
	d := sdkeci.CreateDescribeContainerGroupsRequest()
	d.Scheme, d.RegionId = "http", "cn-hangzhou"
	if _, err := c.DescribeContainerGroups(d); err != nil {
		t.Fatalf("describe after creates were throttled: %v", err)
	}
	if _, err := sdkClient(t, ep, "other-id", "other-secret").CreateContainerGroup(createRequest("o1", "tok-o1")); err != nil {
		t.Fatalf("another account's create: %v", err)
	}
	if got := emu.ThrottledCounts(); !reflect.DeepEqual(got, map[string]int{"CreateContainerGroup": 1}) {
		t.Fatalf("throttled counts: %v", got)
	}
}

func TestQuotaLimits(t *testing.T) {
	def := Quota{}.Limits()
	if got := def["CreateContainerGroup"]; got != (Limit{PerMinute: 1000, Burst: 16}) {
		t.Fatalf("default create quota: %+v", got)
	}
	if got := def["DescribeContainerGroups"]; got != (Limit{PerMinute: 2000, Burst: 33}) {
		t.Fatalf("default describe quota: %+v", got)
	}
	if len(def) != len(model.Quotas) {
		t.Fatalf("default quotas: %v", def)
	}
	q := Quota{Scale: 0.06, PerMinute: map[string]int{"DescribeContainerGroups": -1, "DescribeRegions": 120}, Burst: map[string]int{"DeleteContainerGroup": 5}}
	l := q.Limits()
	if got := l["CreateContainerGroup"]; got != (Limit{PerMinute: 60, Burst: 1}) {
		t.Fatalf("scaled create quota: %+v", got)
	}
	if got := l["DeleteContainerGroup"]; got != (Limit{PerMinute: 60, Burst: 5}) {
		t.Fatalf("scaled delete quota with a burst: %+v", got)
	}
	if _, ok := l["DescribeContainerGroups"]; ok {
		t.Fatal("a negative per-minute figure left the quota on")
	}
	if got := l["DescribeRegions"]; got.PerMinute != 7.2 {
		t.Fatalf("an added quota: %+v", got)
	}
	if n := len(Quota{Off: true}.Limits()); n != 0 {
		t.Fatalf("Off enforces %d quotas", n)
	}
}
