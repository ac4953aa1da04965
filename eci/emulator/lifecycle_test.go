package emulator

import (
	"net/http"
	"strings"
	"testing"
	"time"

	sdkeci "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"
)

// groupRequest is a one-container group "app" running cmd under policy.
func groupRequest(name, policy string, cmd ...string) *sdkeci.CreateContainerGroupRequest {
	req := createRequest(name, "")
	req.RestartPolicy = policy
	(*req.Container)[0].Command = cmd
	return req
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

// eventCount is the Count of the event with reason and message, 0 if none.
func eventCount(evs []sdkeci.DescribeContainerGroupsEvent1, reason, msg string) int {
	for _, e := range evs {
		if e.Reason == reason && e.Message == msg {
			return e.Count
		}
	}
	return 0
}

// A group goes Scheduling -> Pending -> Running after the configured
// delays, then Succeeded (exit 0) or Failed (exit 1) under RestartPolicy
// Never, with the container's final state and the events to show for it.
func TestLifecycleToSucceededAndFailed(t *testing.T) {
	t.Parallel()
	const delay = 300 * time.Millisecond
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "process",
		Delays: Delays{Scheduling: delay, Pending: delay}})
	c := sdkClient(t, ep, testID, testSecret)
	type run struct {
		id, final string
		code      int
		created   time.Time
		running   time.Time
		seen      []string
	}
	runs := []*run{{final: "Succeeded", code: 0}, {final: "Failed", code: 1}}
	for i, r := range runs {
		r.created = time.Now()
		resp, err := c.CreateContainerGroup(groupRequest([]string{"ends-ok", "ends-bad"}[i], "Never",
			sh("sleep 0.5; echo finishing; exit "+[]string{"0", "1"}[i])...))
		if err != nil {
			t.Fatal(err)
		}
		r.id = resp.ContainerGroupId
	}
	final := map[string]*sdkeci.DescribeContainerGroupsContainerGroup0{}
	waitFor(t, "both groups final", func() bool {
		for _, r := range runs {
			if final[r.id] != nil {
				continue
			}
			g := describeGroup(t, c, "http", r.id)
			if g == nil {
				t.Fatalf("%s vanished", r.id)
			}
			if n := len(r.seen); n == 0 || r.seen[n-1] != g.Status {
				r.seen = append(r.seen, g.Status)
				if g.Status == "Running" {
					r.running = time.Now()
				}
			}
			if g.Status == r.final {
				final[r.id] = g
			}
		}
		return len(final) == len(runs)
	})
	for _, r := range runs {
		if got, want := strings.Join(r.seen, ">"), "Scheduling>Pending>Running>"+r.final; got != want {
			t.Errorf("%s went %s, want %s", r.id, got, want)
		}
		if d := r.running.Sub(r.created); d < 2*delay {
			t.Errorf("%s Running after %v, before the Scheduling and Pending delays (%v)", r.id, d, 2*delay)
		}
		g := final[r.id]
		ct := g.Containers[0]
		s := ct.CurrentState
		wantReason := map[int]string{0: "Completed", 1: "Error"}[r.code]
		if s.State != "Terminated" || s.ExitCode != r.code || s.Reason != wantReason || s.StartTime == "" || s.FinishTime == "" ||
			ct.Ready || ct.RestartCount != 0 {
			t.Errorf("%s container at the end: %+v", r.id, ct)
		}
		if (r.final == "Succeeded") != (g.SucceededTime != "") || (r.final == "Failed") != (g.FailedTime != "") {
			t.Errorf("%s final times: succeeded %q failed %q", r.id, g.SucceededTime, g.FailedTime)
		}
		if !hasEvent(g.Events, "Scheduled") || eventCount(g.Events, "Started", "Started container app") != 1 {
			t.Errorf("%s events: %+v", r.id, g.Events)
		}
	}
}

// OnFailure restarts a failing container, counting the restarts and
// keeping the failed run as PreviousState and the previous log, and stops
// restarting once it runs; Always restarts even a clean exit.
func TestRestartPolicyCounts(t *testing.T) {
	t.Parallel()
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "process"})
	c := sdkClient(t, ep, testID, testSecret)
	// The working directory is the sandbox, which outlives each run.
	onFailure, err := c.CreateContainerGroup(groupRequest("on-failure", "OnFailure",
		sh(`n=$(cat runs 2>/dev/null || echo 0); n=$((n+1)); echo $n > runs; echo run-$n; [ $n -ge 3 ] || exit 1; sleep 60`)...))
	if err != nil {
		t.Fatal(err)
	}
	always, err := c.CreateContainerGroup(groupRequest("always-clean", "Always", sh("echo once; exit 0")...))
	if err != nil {
		t.Fatal(err)
	}
	var g *sdkeci.DescribeContainerGroupsContainerGroup0
	waitFor(t, "the third run", func() bool {
		g = describeGroup(t, c, "http", onFailure.ContainerGroupId)
		return g.Containers[0].RestartCount == 2 && g.Containers[0].CurrentState.State == "Running"
	})
	ct := g.Containers[0]
	if g.Status != "Running" || ct.PreviousState.State != "Terminated" || ct.PreviousState.ExitCode != 1 || ct.PreviousState.Reason != "Error" {
		t.Errorf("OnFailure after two failures: status %s container %+v", g.Status, ct)
	}
	if n := eventCount(g.Events, "Started", "Started container app"); n != 3 {
		t.Errorf("%d Started events for three runs: %+v", n, g.Events)
	}
	waitFor(t, "the third run's log", func() bool { return containerLog(t, c, onFailure.ContainerGroupId, false) == "run-3\n" })
	if prev := containerLog(t, c, onFailure.ContainerGroupId, true); prev != "run-2\n" {
		t.Errorf("previous log %q, want run-2", prev)
	}

	waitFor(t, "a clean exit restarted under Always", func() bool {
		g = describeGroup(t, c, "http", always.ContainerGroupId)
		return g.Containers[0].RestartCount >= 1
	})
	if p := g.Containers[0].PreviousState; g.Status != "Running" || p.State != "Terminated" || p.ExitCode != 0 || p.Reason != "Completed" {
		t.Errorf("Always after a clean exit: status %s previous %+v", g.Status, p)
	}
}

// RestartContainerGroup restarts a Running group's containers: restart
// count one up, the stopped run as PreviousState and previous log, once.
func TestRestartContainerGroup(t *testing.T) {
	t.Parallel()
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "process"})
	c := sdkClient(t, ep, testID, testSecret)
	resp, err := c.CreateContainerGroup(groupRequest("restart-me", "Always", sh(`echo started-at-$(date +%s%N); sleep 60`)...))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.ContainerGroupId
	waitFor(t, "the first run's log", func() bool { return strings.Contains(containerLog(t, c, id, false), "started-at-") })
	first := containerLog(t, c, id, false)

	r := sdkeci.CreateRestartContainerGroupRequest()
	r.Scheme, r.ContainerGroupId = "http", id
	if _, err := c.RestartContainerGroup(r); err != nil {
		t.Fatal(err)
	}
	var g *sdkeci.DescribeContainerGroupsContainerGroup0
	waitFor(t, "the restarted container running", func() bool {
		g = describeGroup(t, c, "http", id)
		return g.Status == "Running" && g.Containers[0].CurrentState.State == "Running" && g.Containers[0].RestartCount > 0
	})
	ct := g.Containers[0]
	if ct.RestartCount != 1 || ct.PreviousState.State != "Terminated" || ct.PreviousState.FinishTime == "" {
		t.Errorf("after RestartContainerGroup: %+v", ct)
	}
	if prev := containerLog(t, c, id, true); prev != first {
		t.Errorf("previous log %q, want the first run's %q", prev, first)
	}
	waitFor(t, "the second run's log", func() bool {
		l := containerLog(t, c, id, false)
		return strings.Contains(l, "started-at-") && l != first
	})
	// The stopped run is not restarted a second time by its restart
	// policy (which would start after a 1 s back-off).
	time.Sleep(1500 * time.Millisecond)
	if g = describeGroup(t, c, "http", id); g.Containers[0].RestartCount != 1 || g.Status != "Running" {
		t.Errorf("after the back-off: status %s restarts %d", g.Status, g.Containers[0].RestartCount)
	}
	if l := containerLog(t, c, id, false); strings.Count(l, "started-at-") != 1 {
		t.Errorf("two runs wrote the current log: %q", l)
	}

	// A used request keeps its query: a new one each time.
	r = sdkeci.CreateRestartContainerGroupRequest()
	r.Scheme, r.ContainerGroupId = "http", "eci-nope"
	_, err = c.RestartContainerGroup(r)
	if se := serverError(t, err); se.ErrorCode() != "InvalidContainerGroup.NotFound" {
		t.Errorf("restart of an unknown group: %s", se.ErrorCode())
	}
	r = sdkeci.CreateRestartContainerGroupRequest()
	r.Scheme = "http"
	_, err = c.RestartContainerGroup(r)
	if se := serverError(t, err); se.ErrorCode() != "MissingParameter" {
		t.Errorf("restart without an id: %s", se.ErrorCode())
	}
}

// A spot group reclaimed on demand (the admin endpoint) is Expired, with
// its ExpiredTime, a SpotToBeReleased event and its containers stopped,
// and stays Expired; the admin endpoint needs its token.
func TestSpotExpiredOnDemand(t *testing.T) {
	t.Parallel()
	const admin = "admin-token"
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "process", AdminToken: admin})
	c := sdkClient(t, ep, testID, testSecret)
	req := groupRequest("spot", "Always", sh("echo up; sleep 60")...)
	req.SpotStrategy = "SpotAsPriceGo"
	resp, err := c.CreateContainerGroup(req)
	if err != nil {
		t.Fatal(err)
	}
	id := resp.ContainerGroupId
	waitStatus(t, c, "http", id, "Running")

	expire := func(token, id string) int {
		hr, err := http.NewRequest(http.MethodPost, "http://"+ep+"/admin/containergroups/"+id+"/expire", nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			hr.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := expire("", id); code != http.StatusUnauthorized {
		t.Errorf("expire without the token: %d", code)
	}
	if code := expire("wrong", id); code != http.StatusUnauthorized {
		t.Errorf("expire with a wrong token: %d", code)
	}
	if g := describeGroup(t, c, "http", id); g.Status != "Running" {
		t.Fatalf("an unauthorised expire changed the group: %s", g.Status)
	}
	if code := expire(admin, "eci-nope"); code != http.StatusNotFound {
		t.Errorf("expire of an unknown group: %d", code)
	}
	if code := expire(admin, id); code != http.StatusOK {
		t.Fatalf("expire: %d", code)
	}
	var g *sdkeci.DescribeContainerGroupsContainerGroup0
	waitFor(t, "the container stopped", func() bool {
		g = describeGroup(t, c, "http", id)
		return g.Containers[0].CurrentState.State == "Terminated"
	})
	if g.Status != "Expired" || g.ExpiredTime == "" || eventCount(g.Events, "SpotToBeReleased", "The spot instance was reclaimed") != 1 {
		t.Errorf("after expiry: status %s expired %q events %+v", g.Status, g.ExpiredTime, g.Events)
	}
	for _, e := range g.Events {
		if e.Reason == "SpotToBeReleased" && e.Type != "Warning" {
			t.Errorf("SpotToBeReleased is %s, want Warning", e.Type)
		}
	}
	r := sdkeci.CreateRestartContainerGroupRequest()
	r.Scheme, r.ContainerGroupId = "http", id
	_, err = c.RestartContainerGroup(r)
	if se := serverError(t, err); se.ErrorCode() != "IncorrectStatus" {
		t.Errorf("restart of an Expired group: %s", se.ErrorCode())
	}
	if l := containerLog(t, c, id, false); l != "up\n" {
		t.Errorf("log after expiry %q", l)
	}
	if g := describeGroup(t, c, "http", id); g.Status != "Expired" || g.Containers[0].RestartCount != 0 {
		t.Errorf("an Expired group moved on: %s, %d restarts", g.Status, g.Containers[0].RestartCount)
	}
}

// With the sim runtime a restart counts too, and a retried restart with
// the same ClientToken restarts once.
func TestRestartContainerGroupSimIdempotent(t *testing.T) {
	t.Parallel()
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim"})
	c := sdkClient(t, ep, testID, testSecret)
	resp, err := c.CreateContainerGroup(createRequest("sim-restart", ""))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.ContainerGroupId
	waitStatus(t, c, "http", id, "Running")
	for i := 0; i < 2; i++ {
		r := sdkeci.CreateRestartContainerGroupRequest()
		r.Scheme, r.ContainerGroupId, r.ClientToken = "http", id, "restart-once"
		if _, err := c.RestartContainerGroup(r); err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
	}
	g := waitStatus(t, c, "http", id, "Running")
	if ct := g.Containers[0]; ct.RestartCount != 1 || ct.CurrentState.State != "Running" || !hasEvent(g.Events, "Restarting") {
		t.Errorf("after a restart retried with its ClientToken: %+v, events %+v", ct, g.Events)
	}
}
