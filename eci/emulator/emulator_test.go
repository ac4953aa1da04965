package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	sdkeci "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"
	"github.com/gorilla/websocket"
)

const (
	testID     = "test-id"
	testSecret = "test-secret"
)

func sdkClient(t *testing.T, endpoint, id, secret string) *sdkeci.Client {
	t.Helper()
	c, err := sdkeci.NewClientWithAccessKey("cn-hangzhou", id, secret)
	if err != nil {
		t.Fatal(err)
	}
	c.Domain = endpoint // never the location service
	return c
}

func createRequest(name, token string) *sdkeci.CreateContainerGroupRequest {
	req := sdkeci.CreateCreateContainerGroupRequest()
	req.Scheme = "http"
	req.RegionId = "cn-hangzhou"
	req.SecurityGroupId = "sg-1"
	req.VSwitchId = "vsw-1"
	req.ContainerGroupName = name
	req.RestartPolicy = "Always"
	req.ClientToken = token
	req.Container = &[]sdkeci.CreateContainerGroupContainer{{Name: "app", Image: "busybox", Command: []string{"/bin/sh", "-c", "echo hello; echo to-stderr >&2; sleep 30"}, Cpu: requests.NewFloat(1), Memory: requests.NewFloat(2)}}
	req.Tag = &[]sdkeci.CreateContainerGroupTag{{Key: "vnode.io/node", Value: "n1"}}
	return req
}

func serverError(t *testing.T, err error) *sdkerrors.ServerError {
	t.Helper()
	var se *sdkerrors.ServerError
	if !errors.As(err, &se) {
		t.Fatalf("want a server error, got %v", err)
	}
	return se
}

// The signature algorithm reproduces the vector verified against the SDK.
func TestSignatureVector(t *testing.T) {
	v := url.Values{}
	for k, val := range map[string]string{"AccessKeyId": "testid", "Action": "DescribeContainerGroups", "ContainerGroupIds": `["eci-1"]`,
		"Format": "JSON", "Limit": "20", "RegionId": "cn-hangzhou", "SignatureMethod": "HMAC-SHA1",
		"SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf", "SignatureType": "", "SignatureVersion": "1.0",
		"Timestamp": "2024-01-01T00:00:00Z", "Version": "2018-08-08"} {
		v.Set(k, val)
	}
	if got := sign("testsecret", stringToSign("POST", v)); got != "jKgadXAvV8YfUCoHKl7oVBp6hjQ=" {
		t.Fatalf("signature %s", got)
	}
}

func TestAuthentication(t *testing.T) {
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim"})
	_, err := sdkClient(t, ep, testID, "wrong").CreateContainerGroup(createRequest("a1", ""))
	if se := serverError(t, err); se.ErrorCode() != "SignatureDoesNotMatch" || se.HttpStatus() != 400 {
		t.Errorf("wrong secret: %s %d", se.ErrorCode(), se.HttpStatus())
	}
	_, err = sdkClient(t, ep, "nobody", testSecret).CreateContainerGroup(createRequest("a1", ""))
	if se := serverError(t, err); se.ErrorCode() != "InvalidAccessKeyId.NotFound" || se.HttpStatus() != 404 {
		t.Errorf("unknown key: %s %d", se.ErrorCode(), se.HttpStatus())
	}
	// A replayed request (same nonce and signature) is refused.
	q := url.Values{"Action": {"DescribeRegions"}, "Version": {"2018-08-08"}, "Format": {"JSON"}, "AccessKeyId": {testID},
		"SignatureMethod": {"HMAC-SHA1"}, "SignatureVersion": {"1.0"}, "SignatureNonce": {"n-1"}, "SignatureType": {""},
		"Timestamp": {time.Now().UTC().Format(timeFormat)}, "RegionId": {"cn-hangzhou"}}
	q.Set("Signature", sign(testSecret, stringToSign("GET", q)))
	for i, want := range []int{200, 400} {
		resp, err := http.Get("http://" + ep + "/?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != want || (i == 1 && body["Code"] != "SignatureNonceUsed") {
			t.Errorf("request %d: %d %v", i, resp.StatusCode, body)
		}
	}
}

func TestCreateDescribeDelete(t *testing.T) {
	emu, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim"})
	c := sdkClient(t, ep, testID, testSecret)

	bad := createRequest("Bad_Name", "")
	_, err := c.CreateContainerGroup(bad)
	if se := serverError(t, err); se.ErrorCode() != "InvalidParameter" {
		t.Errorf("bad name: %s", se.ErrorCode())
	}
	missing := createRequest("ok-name", "")
	missing.SecurityGroupId = ""
	_, err = c.CreateContainerGroup(missing)
	if se := serverError(t, err); se.ErrorCode() != "MissingParameter" || !strings.Contains(se.Message(), "SecurityGroupId") {
		t.Errorf("missing sg: %s %s", se.ErrorCode(), se.Message())
	}

	resp, err := c.CreateContainerGroup(createRequest("web", "tok-1"))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.ContainerGroupId
	again, err := c.CreateContainerGroup(createRequest("web", "tok-1"))
	if err != nil || again.ContainerGroupId != id {
		t.Fatalf("ClientToken replay: %v %v", again, err)
	}
	_, err = c.CreateContainerGroup(createRequest("other", "tok-1"))
	if se := serverError(t, err); se.ErrorCode() != "IdempotentParameterMismatch" {
		t.Errorf("token mismatch: %s", se.ErrorCode())
	}
	if n := len(emu.ContainerGroups()); n != 1 {
		t.Fatalf("%d groups, want 1", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		d := sdkeci.CreateDescribeContainerGroupsRequest()
		d.Scheme = "http"
		d.RegionId = "cn-hangzhou"
		d.ContainerGroupIds = `["` + id + `"]`
		dr, err := c.DescribeContainerGroups(d)
		if err != nil {
			t.Fatal(err)
		}
		if len(dr.ContainerGroups) == 1 && dr.ContainerGroups[0].Status == "Running" {
			if dr.ContainerGroups[0].Cpu != 1 || dr.ContainerGroups[0].Memory != 2 {
				t.Errorf("size %v %v", dr.ContainerGroups[0].Cpu, dr.ContainerGroups[0].Memory)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never Running: %+v", dr.ContainerGroups)
		}
		time.Sleep(50 * time.Millisecond)
	}
	del := sdkeci.CreateDeleteContainerGroupRequest()
	del.Scheme = "http"
	del.RegionId = "cn-hangzhou"
	del.ContainerGroupId = id
	if _, err := c.DeleteContainerGroup(del); err != nil {
		t.Fatal(err)
	}
	_, err = c.DeleteContainerGroup(del)
	if se := serverError(t, err); se.ErrorCode() != "InvalidContainerGroup.NotFound" {
		t.Errorf("second delete: %s", se.ErrorCode())
	}
}

func TestPagingAndTags(t *testing.T) {
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim"})
	c := sdkClient(t, ep, testID, testSecret)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := 0; i < 260; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			req := createRequest(fmt.Sprintf("g-%d", i), "")
			if i%26 == 0 {
				req.Tag = &[]sdkeci.CreateContainerGroupTag{{Key: "vnode.io/node", Value: "n2"}}
			}
			// An SDK client writes its own timeout fields on every call:
			// one per goroutine.
			if _, err := sdkClient(t, ep, testID, testSecret).CreateContainerGroup(req); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	next, pages := "", 0
	for {
		d := sdkeci.CreateDescribeContainerGroupsRequest()
		d.Scheme = "http"
		d.RegionId = "cn-hangzhou"
		d.Limit = requests.NewInteger(20)
		d.NextToken = next
		d.Tag = &[]sdkeci.DescribeContainerGroupsTag{{Key: "vnode.io/node", Value: "n1"}}
		dr, err := c.DescribeContainerGroups(d)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, g := range dr.ContainerGroups {
			if seen[g.ContainerGroupId] {
				t.Fatalf("%s on two pages", g.ContainerGroupId)
			}
			seen[g.ContainerGroupId] = true
		}
		if dr.NextToken == "" {
			break
		}
		next = dr.NextToken
	}
	if len(seen) != 250 || pages != 13 {
		t.Fatalf("paged %d groups in %d pages, want 250 in 13", len(seen), pages)
	}
	d := sdkeci.CreateDescribeContainerGroupsRequest()
	d.Scheme = "http"
	d.Limit = requests.NewInteger(50)
	_, err := c.DescribeContainerGroups(d)
	if se := serverError(t, err); se.ErrorCode() != "InvalidParameter" {
		t.Errorf("limit 50: %s", se.ErrorCode())
	}
}

func TestThrottlingFault(t *testing.T) {
	emu, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim"})
	emu.SetFaults(Fault{Action: "DescribeRegions", ErrorRate: 1, ErrorCode: "Throttling.User"})
	c := sdkClient(t, ep, testID, testSecret)
	r := sdkeci.CreateDescribeRegionsRequest()
	r.Scheme = "http"
	_, err := c.DescribeRegions(r)
	if se := serverError(t, err); se.ErrorCode() != "Throttling.User" || se.HttpStatus() != 400 {
		t.Errorf("throttled: %s %d", se.ErrorCode(), se.HttpStatus())
	}
	emu.SetFaults(Fault{Action: "CreateContainerGroup", CommitThenFailRate: 1})
	_, err = c.CreateContainerGroup(createRequest("committed", "tok-c"))
	if se := serverError(t, err); se.HttpStatus() != 500 {
		t.Errorf("commit then fail: %v", err)
	}
	emu.SetFaults()
	again, err := c.CreateContainerGroup(createRequest("committed", "tok-c"))
	if err != nil || len(emu.ContainerGroups()) != 1 || again.ContainerGroupId != emu.ContainerGroups()[0].ID {
		t.Fatalf("retry after commit-then-fail: %v %v", again, err)
	}
	if emu.CallCounts()["CreateContainerGroup"] != 2 {
		t.Errorf("calls %v", emu.CallCounts())
	}
}

// The process runtime runs the command: logs and exec are real.
func TestProcessLogsAndExec(t *testing.T) {
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "process"})
	c := sdkClient(t, ep, testID, testSecret)
	resp, err := c.CreateContainerGroup(createRequest("proc", ""))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.ContainerGroupId
	var content string
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(content, "to-stderr") {
		if time.Now().After(deadline) {
			t.Fatalf("log never had both lines: %q", content)
		}
		time.Sleep(100 * time.Millisecond)
		l := sdkeci.CreateDescribeContainerLogRequest()
		l.Scheme = "http"
		l.ContainerGroupId = id
		l.ContainerName = "app"
		l.QueryParams["Timestamps"] = "true"
		lr, err := c.DescribeContainerLog(l)
		if err != nil {
			continue
		}
		content = lr.Content
	}
	if !strings.Contains(content, "Z hello\n") {
		t.Errorf("timestamped log: %q", content)
	}
	x := sdkeci.CreateExecContainerCommandRequest()
	x.Scheme = "http"
	x.ContainerGroupId = id
	x.ContainerName = "app"
	x.Command = `["/bin/sh","-c","read line; echo got:$line; echo err >&2; exit 7"]`
	xr, err := c.ExecContainerCommand(x)
	if err != nil {
		t.Fatal(err)
	}
	conn, _, err := websocket.DefaultDialer.DialContext(context.Background(), xr.WebSocketUri, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.WriteMessage(websocket.BinaryMessage, append([]byte{chanStdin}, []byte("ping\n")...))
	var stdout, stderr, status string
	for status == "" {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("session ended without status: %v", err)
		}
		switch msg[0] {
		case chanStdout:
			stdout += string(msg[1:])
		case chanStderr:
			stderr += string(msg[1:])
		case chanStatus:
			status = string(msg[1:])
		}
	}
	if stdout != "got:ping\n" || stderr != "err\n" || !strings.Contains(status, `"message":"7"`) {
		t.Fatalf("stdout %q stderr %q status %s", stdout, stderr, status)
	}
	// A session URI works once.
	if _, resp, err := websocket.DefaultDialer.Dial(xr.WebSocketUri, nil); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("session reused: %v", err)
	}
}
