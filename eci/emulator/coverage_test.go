package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	sdkeci "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"
)

// rawCall sends q as a GET signed with secret: for what the SDK will not
// send (an old Timestamp, no RegionId). Common parameters not in q are
// filled in; a key set to "" in q is left out.
func rawCall(t *testing.T, ep, secret string, q url.Values) (int, map[string]any) {
	t.Helper()
	full := url.Values{"Version": {"2018-08-08"}, "Format": {"JSON"}, "AccessKeyId": {testID}, "SignatureMethod": {"HMAC-SHA1"},
		"SignatureVersion": {"1.0"}, "SignatureNonce": {randomSuffix() + randomSuffix()}, "Timestamp": {time.Now().UTC().Format(timeFormat)},
		"RegionId": {"cn-hangzhou"}}
	for k, v := range q {
		if v[0] == "" {
			delete(full, k)
		} else {
			full[k] = v
		}
	}
	full.Set("Signature", sign(secret, stringToSign("GET", full)))
	resp, err := http.Get("http://" + ep + "/?" + full.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("decoding the answer: %v", err)
	}
	return resp.StatusCode, body
}

// A Timestamp outside the 15-minute window, or not in ECI's format, is
// refused even when the signature is right; a fresh one is accepted.
func TestTimestampSkewRefused(t *testing.T) {
	t.Parallel()
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim"})
	now := time.Now().UTC()
	for name, tc := range map[string]struct {
		ts     string
		status int
		code   string
	}{
		"20 minutes old":   {now.Add(-20 * time.Minute).Format(timeFormat), 400, "InvalidTimeStamp.Expired"},
		"20 minutes ahead": {now.Add(20 * time.Minute).Format(timeFormat), 400, "InvalidTimeStamp.Expired"},
		"not ISO 8601":     {now.Format(time.RFC1123), 400, "InvalidTimeStamp.Format"},
		"5 minutes old":    {now.Add(-5 * time.Minute).Format(timeFormat), 200, ""},
	} {
		status, body := rawCall(t, ep, testSecret, url.Values{"Action": {"DescribeRegions"}, "Timestamp": {tc.ts}})
		if status != tc.status || (tc.code != "" && body["Code"] != tc.code) || (tc.code == "" && body["Regions"] == nil) {
			t.Errorf("%s: %d %v, want %d %s", name, status, body, tc.status, tc.code)
		}
		if tc.code != "" && (body["RequestId"] == "" || body["HostId"] == nil || body["Recommend"] == nil) {
			t.Errorf("%s: not ECI's error envelope: %v", name, body)
		}
	}
}

// CreateContainerGroup refuses, before creating anything, each missing
// required parameter and each value ECI would not take: CPU/memory beyond
// what it sells, unknown InstanceTypes, more than 20 containers, bad
// names. A size between the sold ones is rounded up, an InstanceType
// sizes the group, and 20 containers are fine.
func TestCreateValidation(t *testing.T) {
	t.Parallel()
	emu, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim"})
	c := sdkClient(t, ep, testID, testSecret)
	containers := func(n int) *[]sdkeci.CreateContainerGroupContainer {
		cs := make([]sdkeci.CreateContainerGroupContainer, n)
		for i := range cs {
			cs[i] = sdkeci.CreateContainerGroupContainer{Name: fmt.Sprintf("c-%d", i), Image: "busybox"}
		}
		return &cs
	}
	withSize := func(cpu, mem float64) func(*sdkeci.CreateContainerGroupRequest) {
		return func(r *sdkeci.CreateContainerGroupRequest) {
			(*r.Container)[0].Cpu, (*r.Container)[0].Memory = "", ""
			r.Cpu, r.Memory = requests.NewFloat(cpu), requests.NewFloat(mem)
		}
	}
	for name, tc := range map[string]struct {
		set  func(*sdkeci.CreateContainerGroupRequest)
		code string
		in   string // in the message
	}{
		"no SecurityGroupId":    {func(r *sdkeci.CreateContainerGroupRequest) { r.SecurityGroupId = "" }, "MissingParameter", "SecurityGroupId"},
		"no VSwitchId":          {func(r *sdkeci.CreateContainerGroupRequest) { r.VSwitchId = "" }, "MissingParameter", "VSwitchId"},
		"no ContainerGroupName": {func(r *sdkeci.CreateContainerGroupRequest) { r.ContainerGroupName = "" }, "MissingParameter", "ContainerGroupName"},
		"no container":          {func(r *sdkeci.CreateContainerGroupRequest) { r.Container = nil }, "MissingParameter", "Container.1.Name"},
		"no container name":     {func(r *sdkeci.CreateContainerGroupRequest) { (*r.Container)[0].Name = "" }, "MissingParameter", "Container.1.Name"},
		"no image":              {func(r *sdkeci.CreateContainerGroupRequest) { (*r.Container)[0].Image = "" }, "MissingParameter", "Container.1.Image"},
		"no init image": {func(r *sdkeci.CreateContainerGroupRequest) {
			r.InitContainer = &[]sdkeci.CreateContainerGroupInitContainer{{Name: "init"}}
		}, "MissingParameter", "InitContainer.1.Image"},
		"other region":           {func(r *sdkeci.CreateContainerGroupRequest) { r.RegionId = "cn-beijing" }, "InvalidRegionId.NotFound", "cn-beijing"},
		"more CPU than sold":     {withSize(128, 256), "InvalidParameter", "Cpu/Memory"},
		"more memory than sold":  {withSize(2, 1024), "InvalidParameter", "Cpu/Memory"},
		"containers over 64 CPU": {func(r *sdkeci.CreateContainerGroupRequest) { (*r.Container)[0].Cpu = requests.NewFloat(65) }, "InvalidParameter", "Cpu/Memory"},
		"CPU not a number":       {func(r *sdkeci.CreateContainerGroupRequest) { r.Cpu = "two" }, "InvalidParameter", "Cpu"},
		"negative memory":        {func(r *sdkeci.CreateContainerGroupRequest) { r.Memory = requests.NewFloat(-1) }, "InvalidParameter", "Memory"},
		"unknown InstanceType":   {func(r *sdkeci.CreateContainerGroupRequest) { r.InstanceType = "ecs.nope.large" }, "InvalidParameter", "InstanceType"},
		"unknown InstanceType size": {func(r *sdkeci.CreateContainerGroupRequest) { r.InstanceType = "ecs.c6.huge" }, "InvalidParameter",
			"InstanceType"},
		"unknown among InstanceTypes": {func(r *sdkeci.CreateContainerGroupRequest) { r.InstanceType = "ecs.c6.large,t1.micro" }, "InvalidParameter",
			"InstanceType"},
		"spec beyond sold": {func(r *sdkeci.CreateContainerGroupRequest) { r.InstanceType = "128-256Gi" }, "InvalidParameter", "InstanceType"},
		"six InstanceTypes": {func(r *sdkeci.CreateContainerGroupRequest) {
			r.InstanceType = "ecs.c6.large,ecs.g6.large,ecs.r6.large,ecs.c7.large,ecs.g7.large,ecs.r7.large"
		}, "InvalidParameter", "InstanceType"},
		"21 containers":         {func(r *sdkeci.CreateContainerGroupRequest) { r.Container = containers(21) }, "InvalidParameter", "at most 20"},
		"duplicate containers":  {func(r *sdkeci.CreateContainerGroupRequest) { (*r.Container)[1].Name = "c-0" }, "InvalidParameter", "duplicate"},
		"upper-case container":  {func(r *sdkeci.CreateContainerGroupRequest) { (*r.Container)[0].Name = "App" }, "InvalidParameter", "Container.1.Name"},
		"underscore container":  {func(r *sdkeci.CreateContainerGroupRequest) { (*r.Container)[0].Name = "my_app" }, "InvalidParameter", "Container.1.Name"},
		"container ends with -": {func(r *sdkeci.CreateContainerGroupRequest) { (*r.Container)[0].Name = "app-" }, "InvalidParameter", "Container.1.Name"},
		"one-letter group name": {func(r *sdkeci.CreateContainerGroupRequest) { r.ContainerGroupName = "a" }, "InvalidParameter", "ContainerGroupName"},
		"group name starts -":   {func(r *sdkeci.CreateContainerGroupRequest) { r.ContainerGroupName = "-web" }, "InvalidParameter", "ContainerGroupName"},
		"group name with dot":   {func(r *sdkeci.CreateContainerGroupRequest) { r.ContainerGroupName = "web.1" }, "InvalidParameter", "ContainerGroupName"},
		"group name of 129": {func(r *sdkeci.CreateContainerGroupRequest) { r.ContainerGroupName = strings.Repeat("a", 129) }, "InvalidParameter",
			"ContainerGroupName"},
		"bad RestartPolicy": {func(r *sdkeci.CreateContainerGroupRequest) { r.RestartPolicy = "Sometimes" }, "InvalidParameter", "RestartPolicy"},
		"bad SpotStrategy":  {func(r *sdkeci.CreateContainerGroupRequest) { r.SpotStrategy = "Cheap" }, "InvalidParameter", "SpotStrategy"},
		"undefined volume": {func(r *sdkeci.CreateContainerGroupRequest) {
			(*r.Container)[0].VolumeMount = &[]sdkeci.CreateContainerGroupVolumeMount{{Name: "data", MountPath: "/data"}}
		}, "InvalidParameter", "data"},
		"ClientToken over 64": {func(r *sdkeci.CreateContainerGroupRequest) { r.ClientToken = strings.Repeat("t", 65) }, "InvalidParameter", "ClientToken"},
	} {
		req := createRequest("valid-name", "")
		req.Container = containers(2)
		tc.set(req)
		_, err := c.CreateContainerGroup(req)
		if se := serverError(t, err); se.ErrorCode() != tc.code || se.HttpStatus() != 400 || !strings.Contains(se.Message(), tc.in) {
			t.Errorf("%s: %d %s %q, want 400 %s about %s", name, se.HttpStatus(), se.ErrorCode(), se.Message(), tc.code, tc.in)
		}
	}
	// RegionId is required too; the SDK always sends one.
	status, body := rawCall(t, ep, testSecret, url.Values{"Action": {"CreateContainerGroup"}, "RegionId": {""}, "SecurityGroupId": {"sg-1"},
		"VSwitchId": {"vsw-1"}, "ContainerGroupName": {"no-region"}, "Container.1.Name": {"app"}, "Container.1.Image": {"busybox"}})
	if status != 400 || body["Code"] != "MissingParameter" || !strings.Contains(body["Message"].(string), "RegionId") {
		t.Errorf("no RegionId: %d %v", status, body)
	}
	if n := len(emu.ContainerGroups()); n != 0 {
		t.Fatalf("refused requests created %d groups", n)
	}

	for name, tc := range map[string]struct {
		set      func(*sdkeci.CreateContainerGroupRequest)
		cpu, mem float64
		itype    string
	}{
		"7 vCPU 13 GiB rounds up": {withSize(7, 13), 8, 16, ""},
		"0.3 vCPU rounds up":      {withSize(0.3, 0.5), 0.5, 1, ""},
		"2 vCPU 3 GiB rounds up":  {withSize(2, 3), 2, 4, ""},
		"64 vCPU 512 GiB sold":    {withSize(64, 512), 64, 512, ""},
		"ECS type":                {func(r *sdkeci.CreateContainerGroupRequest) { r.InstanceType = "ecs.c6.xlarge" }, 4, 8, "ecs.c6.xlarge"},
		"ECS types, first sizes": {func(r *sdkeci.CreateContainerGroupRequest) { r.InstanceType = "ecs.r6.2xlarge,ecs.g6.large" }, 8, 64,
			"ecs.r6.2xlarge,ecs.g6.large"},
		"vCPU-memory spec": {func(r *sdkeci.CreateContainerGroupRequest) { r.InstanceType = "2-4Gi" }, 2, 4, "2-4Gi"},
		"GPU type":         {func(r *sdkeci.CreateContainerGroupRequest) { r.InstanceType = "ecs.gn6i-c4g1.xlarge" }, 4, 15, "ecs.gn6i-c4g1.xlarge"},
		"20 containers": {func(r *sdkeci.CreateContainerGroupRequest) {
			r.Container = containers(20)
			r.Cpu, r.Memory = requests.NewFloat(4), requests.NewFloat(8)
		}, 4, 8, ""},
		"128-character name": {func(r *sdkeci.CreateContainerGroupRequest) { r.ContainerGroupName = strings.Repeat("b", 128) }, 2, 4, ""},
	} {
		req := createRequest("sized", "")
		req.Container = containers(1)
		tc.set(req)
		resp, err := c.CreateContainerGroup(req)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		g := describeGroup(t, c, "http", resp.ContainerGroupId)
		if float64(g.Cpu) != tc.cpu || float64(g.Memory) != tc.mem || g.InstanceType != tc.itype {
			t.Errorf("%s: %v vCPU %v GiB type %q, want %v %v %q", name, g.Cpu, g.Memory, g.InstanceType, tc.cpu, tc.mem, tc.itype)
		}
		if name == "20 containers" && len(g.Containers) != 20 {
			t.Errorf("20 containers: %d described", len(g.Containers))
		}
	}
}

// DescribeRegions answers the emulator's region, endpoint and zones.
func TestDescribeRegions(t *testing.T) {
	t.Parallel()
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim", Zones: []string{"cn-hangzhou-h", "cn-hangzhou-k"}})
	c := sdkClient(t, ep, testID, testSecret)
	r := sdkeci.CreateDescribeRegionsRequest()
	r.Scheme = "http"
	resp, err := c.DescribeRegions(r)
	if err != nil {
		t.Fatal(err)
	}
	if resp.RequestId == "" || len(resp.Regions) != 1 {
		t.Fatalf("regions %+v", resp)
	}
	reg := resp.Regions[0]
	if reg.RegionId != "cn-hangzhou" || reg.RegionEndpoint != "eci.cn-hangzhou.aliyuncs.com" || strings.Join(reg.Zones, ",") != "cn-hangzhou-h,cn-hangzhou-k" {
		t.Errorf("region %+v", reg)
	}
}

// DescribeContainerGroupStatus (not in the old SDK: CommonRequest) follows
// the groups' status, pages over every group without ContainerGroupIds,
// and refuses more than 20 ids.
func TestDescribeContainerGroupStatus(t *testing.T) {
	t.Parallel()
	emu, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim"})
	c := sdkClient(t, ep, testID, testSecret)
	var ids []string
	for i := 0; i < 5; i++ {
		r, err := c.CreateContainerGroup(createRequest(fmt.Sprintf("status-%d", i), ""))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ContainerGroupId)
	}
	for _, id := range ids {
		waitStatus(t, c, "http", id, "Running")
	}
	if err := emu.Expire(ids[1]); err != nil {
		t.Fatal(err)
	}
	idsJSON, _ := json.Marshal([]string{ids[0], ids[1], "eci-nope"})
	r, err := commonCall(c, "http", "DescribeContainerGroupStatus", map[string]string{"ContainerGroupIds": string(idsJSON)})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]any{}
	for _, d := range r["Data"].([]any) {
		m := d.(map[string]any)
		got[m["ContainerGroupId"].(string)] = m
	}
	if len(got) != 2 || got[ids[0]]["Status"] != "Running" || got[ids[1]]["Status"] != "Expired" ||
		got[ids[0]]["Name"] != "status-0" || r["RequestId"] == "" || phase(got[ids[0]]) != "Running" || phase(got[ids[1]]) != "Failed" {
		t.Errorf("by id: %v", r)
	}
	// The PodStatus keeps ECI's spellings: lower-case condition keys, and a
	// running state's start under StartedAtstartedAt.
	ps := got[ids[0]]["PodStatus"].(map[string]any)
	cs := ps["ContainerStatuses"].([]any)[0].(map[string]any)
	run, _ := cs["State"].(map[string]any)["Running"].(map[string]any)
	if cs["Name"] != "app" || cs["Ready"] != true || cs["RestartCount"] != float64(0) || run == nil || run["StartedAtstartedAt"] == "" {
		t.Errorf("container status: %v", cs)
	}
	conds := map[any]any{}
	for _, c := range ps["Conditions"].([]any) {
		conds[c.(map[string]any)["type"]] = c.(map[string]any)["status"]
	}
	if conds["Ready"] != "True" || conds["PodScheduled"] != "True" || ps["PodIp"] == "" {
		t.Errorf("pod status: %v", ps)
	}
	if lt, _ := got[ids[1]]["PodStatus"].(map[string]any)["Conditions"].([]any)[2].(map[string]any); lt["status"] != "False" {
		t.Errorf("an expired group's ContainersReady: %v", lt)
	}

	seen := map[string]bool{}
	next := ""
	for pages := 0; ; pages++ {
		q := map[string]string{"Limit": "2"}
		if next != "" {
			q["NextToken"] = next
		}
		r, err := commonCall(c, "http", "DescribeContainerGroupStatus", q)
		if err != nil {
			t.Fatal(err)
		}
		if r["TotalCount"] != float64(5) || len(r["Data"].([]any)) > 2 {
			t.Fatalf("page %d: %v", pages, r)
		}
		for _, d := range r["Data"].([]any) {
			seen[d.(map[string]any)["ContainerGroupId"].(string)] = true
		}
		next, _ = r["NextToken"].(string)
		if next == "" {
			break
		}
		if pages > 5 {
			t.Fatal("paging does not end")
		}
	}
	if len(seen) != 5 {
		t.Errorf("paged over %d of 5 groups", len(seen))
	}

	many := make([]string, 21)
	for i := range many {
		many[i] = fmt.Sprintf("eci-%d", i)
	}
	manyJSON, _ := json.Marshal(many)
	for name, q := range map[string]map[string]string{
		"21 ids":         {"ContainerGroupIds": string(manyJSON)},
		"not JSON":       {"ContainerGroupIds": "eci-1,eci-2"},
		"Limit 0":        {"Limit": "0"},
		"SinceSecond -1": {"SinceSecond": "-1"},
		"SinceSecond x":  {"SinceSecond": "x"},
	} {
		_, err := commonCall(c, "http", "DescribeContainerGroupStatus", q)
		if se := serverError(t, err); se.ErrorCode() != "InvalidParameter" {
			t.Errorf("%s: %s", name, se.ErrorCode())
		}
	}
}

func phase(entry map[string]any) any {
	ps, _ := entry["PodStatus"].(map[string]any)
	return ps["Phase"]
}

// DescribeContainerGroupMetric and DescribeMultiContainerGroupMetric
// report a busy process's CPU time and memory, per group and per
// container, with the group's limits.
func TestContainerGroupMetrics(t *testing.T) {
	t.Parallel()
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "process"})
	c := sdkClient(t, ep, testID, testSecret)
	// A bounded busy loop (the machine is shared), then idle.
	busy, err := c.CreateContainerGroup(groupRequest("busy", "Always", sh("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo spun; sleep 60")...))
	if err != nil {
		t.Fatal(err)
	}
	id := busy.ContainerGroupId
	waitFor(t, "the busy loop done", func() bool { return containerLog(t, c, id, false) == "spun\n" })

	m := sdkeci.CreateDescribeContainerGroupMetricRequest()
	m.Scheme, m.ContainerGroupId = "http", id
	mr, err := c.DescribeContainerGroupMetric(m)
	if err != nil {
		t.Fatal(err)
	}
	if mr.ContainerGroupId != id || len(mr.Records) != 1 || len(mr.Records[0].Containers) != 1 {
		t.Fatalf("metric %s", mr.GetHttpContentString())
	}
	rec := mr.Records[0]
	if _, err := time.Parse(timeFormat, rec.Timestamp); err != nil {
		t.Errorf("timestamp %q", rec.Timestamp)
	}
	ct := rec.Containers[0]
	if rec.CPU.UsageCoreNanoSeconds <= 0 || ct.Name != "app" || ct.CPU.UsageCoreNanoSeconds <= 0 || ct.CPU.UsageCoreNanoSeconds > rec.CPU.UsageCoreNanoSeconds {
		t.Errorf("CPU of a busy process: group %+v container %+v", rec.CPU, ct.CPU)
	}
	if rec.Memory.Rss <= 0 || rec.Memory.WorkingSet <= 0 || rec.Memory.AvailableBytes <= 0 || rec.Memory.AvailableBytes+rec.Memory.UsageBytes != 2<<30 {
		t.Errorf("memory of a 2 GiB group: %+v", rec.Memory)
	}
	if rec.CPU.Limit != 1000 {
		t.Errorf("CPU limit of a 1 vCPU group: %d", rec.CPU.Limit)
	}

	mm := sdkeci.CreateDescribeMultiContainerGroupMetricRequest()
	mm.Scheme, mm.ContainerGroupIds, mm.MetricType = "http", `["`+id+`","eci-nope"]`, "summary"
	mmr, err := c.DescribeMultiContainerGroupMetric(mm)
	if err != nil {
		t.Fatal(err)
	}
	if len(mmr.MonitorDatas) != 1 || mmr.MonitorDatas[0].ContainerGroupId != id || len(mmr.MonitorDatas[0].Records) != 1 {
		t.Fatalf("multi metric %s", mmr.GetHttpContentString())
	}
	mrec := mmr.MonitorDatas[0].Records[0]
	if mrec.CPU.UsageCoreNanoSeconds < rec.CPU.UsageCoreNanoSeconds || len(mrec.Containers) != 1 || mrec.Containers[0].CPU.UsageCoreNanoSeconds <= 0 ||
		mrec.Containers[0].Memory.Rss <= 0 {
		t.Errorf("multi metric record %+v (CPU went from %d)", mrec, rec.CPU.UsageCoreNanoSeconds)
	}

	many := make([]string, 21)
	for i := range many {
		many[i] = fmt.Sprintf("eci-%d", i)
	}
	manyJSON, _ := json.Marshal(many)
	for name, ids := range map[string]string{"no ids": "", "21 ids": string(manyJSON), "not JSON": "eci-1"} {
		mm := sdkeci.CreateDescribeMultiContainerGroupMetricRequest()
		mm.Scheme, mm.ContainerGroupIds = "http", ids
		_, err := c.DescribeMultiContainerGroupMetric(mm)
		want := map[string]string{"no ids": "MissingParameter"}[name]
		if want == "" {
			want = "InvalidParameter"
		}
		if se := serverError(t, err); se.ErrorCode() != want {
			t.Errorf("%s: %s, want %s", name, se.ErrorCode(), want)
		}
	}
	m = sdkeci.CreateDescribeContainerGroupMetricRequest()
	m.Scheme, m.ContainerGroupId = "http", "eci-nope"
	_, err = c.DescribeContainerGroupMetric(m)
	if se := serverError(t, err); se.ErrorCode() != "InvalidContainerGroup.NotFound" {
		t.Errorf("metric of an unknown group: %s", se.ErrorCode())
	}
}
