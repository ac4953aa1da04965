package emulator

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	sdkeci "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"
)

// DescribeContainerLog with each of its options, on a container that
// prints three lines, waits 2.5 s and prints two more: Tail, SinceSeconds,
// StartTime, LimitBytes and Timestamps (the last two through QueryParams,
// which the old SDK lacks), LastTime after a restart, and the errors.
func TestContainerLogOptions(t *testing.T) {
	t.Parallel()
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "process"})
	c := sdkClient(t, ep, testID, testSecret)
	resp, err := c.CreateContainerGroup(groupRequest("logs", "Always",
		sh("echo line-1; echo line-2; echo line-3; sleep 2.5; echo late-1; echo late-2; sleep 60")...))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.ContainerGroupId
	logReq := func(set func(*sdkeci.DescribeContainerLogRequest)) *sdkeci.DescribeContainerLogRequest {
		l := sdkeci.CreateDescribeContainerLogRequest()
		l.Scheme, l.ContainerGroupId, l.ContainerName = "http", id, "app"
		if set != nil {
			set(l)
		}
		return l
	}
	read := func(what string, set func(*sdkeci.DescribeContainerLogRequest)) string {
		t.Helper()
		r, err := c.DescribeContainerLog(logReq(set))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if r.ContainerName != "app" {
			t.Errorf("%s: ContainerName %q", what, r.ContainerName)
		}
		return r.Content
	}
	waitFor(t, "the late lines", func() bool { return strings.Contains(read("poll", nil), "late-2\n") })
	// First, while the late lines are fresh: they are under 2 s old, the
	// early ones over 2.5 s.
	since := read("SinceSeconds=2", func(l *sdkeci.DescribeContainerLogRequest) { l.SinceSeconds = requests.NewInteger(2) })
	if since != "late-1\nlate-2\n" {
		t.Errorf("SinceSeconds=2: %q", since)
	}
	const all = "line-1\nline-2\nline-3\nlate-1\nlate-2\n"
	if got := read("SinceSeconds=3600", func(l *sdkeci.DescribeContainerLogRequest) { l.SinceSeconds = requests.NewInteger(3600) }); got != all {
		t.Errorf("SinceSeconds=3600: %q", got)
	}
	if got := read("no option", nil); got != all {
		t.Errorf("whole log: %q", got)
	}
	if got := read("Tail=2", func(l *sdkeci.DescribeContainerLogRequest) { l.Tail = requests.NewInteger(2) }); got != "late-1\nlate-2\n" {
		t.Errorf("Tail=2: %q", got)
	}
	if got := read("LimitBytes=10", func(l *sdkeci.DescribeContainerLogRequest) { l.QueryParams["LimitBytes"] = "10" }); got != "line-1\nlin" {
		t.Errorf("LimitBytes=10: %q", got)
	}
	if got := read("Tail=1,LimitBytes=4", func(l *sdkeci.DescribeContainerLogRequest) {
		l.Tail = requests.NewInteger(1)
		l.QueryParams["LimitBytes"] = "4"
	}); got != "late" {
		t.Errorf("Tail=1 LimitBytes=4: %q", got)
	}

	stamped := read("Timestamps", func(l *sdkeci.DescribeContainerLogRequest) { l.QueryParams["Timestamps"] = "true" })
	lines := strings.Split(strings.TrimSuffix(stamped, "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("Timestamps: %q", stamped)
	}
	var stamps []time.Time
	for i, l := range lines {
		ts, text, _ := strings.Cut(l, " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || text != strings.Split(all, "\n")[i] || at.Location() != time.UTC {
			t.Fatalf("Timestamps line %d: %q (%v)", i, l, err)
		}
		if i > 0 && at.Before(stamps[i-1]) {
			t.Errorf("timestamps go back: %q", stamped)
		}
		stamps = append(stamps, at)
	}
	if gap := stamps[3].Sub(stamps[2]); gap < 2*time.Second {
		t.Errorf("the 2.5 s pause shows as %v", gap)
	}
	// StartTime at full precision, and at whole seconds as the API's
	// examples give it: after line-3, before late-1 either way.
	for _, start := range []string{stamps[3].Format(time.RFC3339Nano), stamps[2].Add(time.Second).Truncate(time.Second).Format(timeFormat)} {
		if got := read("StartTime", func(l *sdkeci.DescribeContainerLogRequest) { l.StartTime = start }); got != "late-1\nlate-2\n" {
			t.Errorf("StartTime=%s: %q", start, got)
		}
	}
	if got := read("StartTime with Timestamps", func(l *sdkeci.DescribeContainerLogRequest) {
		l.StartTime = stamps[4].Format(time.RFC3339Nano)
		l.QueryParams["Timestamps"] = "true"
	}); got != lines[4]+"\n" {
		t.Errorf("StartTime at the last line, with Timestamps: %q", got)
	}
	if got := read("LastTime before a restart", func(l *sdkeci.DescribeContainerLogRequest) { l.LastTime = requests.NewBoolean(true) }); got != "" {
		t.Errorf("LastTime with no previous run: %q", got)
	}

	// After a restart, LastTime reads the stopped run; the current log is
	// the new run's.
	r := sdkeci.CreateRestartContainerGroupRequest()
	r.Scheme, r.ContainerGroupId = "http", id
	if _, err := c.RestartContainerGroup(r); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new run's first line", func() bool { return strings.HasPrefix(read("poll", nil), "line-1\n") })
	if got := read("LastTime", func(l *sdkeci.DescribeContainerLogRequest) { l.LastTime = requests.NewBoolean(true) }); got != all {
		t.Errorf("LastTime after the restart: %q", got)
	}
	if got := read("LastTime,Tail=1", func(l *sdkeci.DescribeContainerLogRequest) {
		l.LastTime = requests.NewBoolean(true)
		l.Tail = requests.NewInteger(1)
	}); got != "late-2\n" {
		t.Errorf("LastTime with Tail=1: %q", got)
	}
	if got := read("current after the restart", nil); strings.Contains(got, "late-") {
		t.Errorf("the current log holds the old run: %q", got)
	}

	for name, tc := range map[string]struct {
		set  func(*sdkeci.DescribeContainerLogRequest)
		code string
	}{
		"Tail over 2000":    {func(l *sdkeci.DescribeContainerLogRequest) { l.Tail = requests.NewInteger(2001) }, "InvalidParameter"},
		"Tail not a number": {func(l *sdkeci.DescribeContainerLogRequest) { l.Tail = requests.Integer("many") }, "InvalidParameter"},
		"LimitBytes over 1 MiB": {func(l *sdkeci.DescribeContainerLogRequest) {
			l.QueryParams["LimitBytes"] = strconv.Itoa(1<<20 + 1)
		}, "InvalidParameter"},
		"StartTime not RFC 3339": {func(l *sdkeci.DescribeContainerLogRequest) { l.StartTime = "yesterday" }, "InvalidParameter"},
		"Timestamps not a bool":  {func(l *sdkeci.DescribeContainerLogRequest) { l.QueryParams["Timestamps"] = "maybe" }, "InvalidParameter"},
		"unknown container":      {func(l *sdkeci.DescribeContainerLogRequest) { l.ContainerName = "ghost" }, "InvalidContainer.NotFound"},
		"unknown group":          {func(l *sdkeci.DescribeContainerLogRequest) { l.ContainerGroupId = "eci-nope" }, "InvalidContainerGroup.NotFound"},
		"no container name": {func(l *sdkeci.DescribeContainerLogRequest) {
			l.ContainerName = ""
		}, "MissingParameter"},
	} {
		_, err := c.DescribeContainerLog(logReq(tc.set))
		if se := serverError(t, err); se.ErrorCode() != tc.code {
			t.Errorf("%s: %s %s, want %s", name, se.ErrorCode(), se.Message(), tc.code)
		}
	}
}
