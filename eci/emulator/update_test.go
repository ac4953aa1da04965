package emulator

import (
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	sdkeci "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"
)

func newUpdateRequest(id string) *sdkeci.UpdateContainerGroupRequest {
	u := sdkeci.CreateUpdateContainerGroupRequest()
	u.Scheme = "http"
	u.RegionId = "cn-hangzhou"
	u.ContainerGroupId = id
	return u
}

func envOf(c sdkeci.DescribeContainerGroupsContainer1) map[string]string {
	out := map[string]string{}
	for _, e := range c.EnvironmentVars {
		out[e.Key] = e.Value
	}
	return out
}

// The typed SDK request updates a group: it goes Updating, then Running
// with the new image, sizes, tags and the environment its string-typed
// list carries (KEY=VALUE), with the SDK's "<[]string Value>" probe fields
// ignored.
func TestUpdateContainerGroup(t *testing.T) {
	// An update reschedules: it stays Updating for the Scheduling delay.
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim", Delays: Delays{Scheduling: 200 * time.Millisecond}})
	c := sdkClient(t, ep, testID, testSecret)
	r, err := c.CreateContainerGroup(createRequest("upd", ""))
	if err != nil {
		t.Fatal(err)
	}
	id := r.ContainerGroupId
	waitStatus(t, c, "http", id, "Running")

	u := newUpdateRequest(id)
	u.Container = &[]sdkeci.UpdateContainerGroupContainer{{Name: "app", Image: "busybox:1.37", EnvironmentVar: []string{"MODE=new", "EMPTY="},
		Port: []string{"8080/TCP"}}}
	u.Cpu, u.Memory = requests.NewFloat(1.5), requests.NewFloat(3)
	u.Tag = &[]sdkeci.UpdateContainerGroupTag{{Key: "vnode.io/node", Value: "n9"}}
	if _, err := c.UpdateContainerGroup(u); err != nil {
		t.Fatal(err)
	}
	if g := describeGroup(t, c, "http", id); g.Status != "Updating" || g.Tags[0].Value != "n9" {
		t.Errorf("right after the update: status %s tags %+v", g.Status, g.Tags)
	}
	g := waitStatus(t, c, "http", id, "Running")
	ct := g.Containers[0]
	if ct.Image != "busybox:1.37" || envOf(ct)["MODE"] != "new" || len(ct.Ports) != 1 || ct.Ports[0].Port != 8080 ||
		len(ct.Commands) != 3 || ct.Cpu != 1 {
		t.Errorf("container after the update: %+v", ct)
	}
	if _, ok := envOf(ct)["EMPTY"]; !ok {
		t.Error("EMPTY= was dropped")
	}
	if g.Cpu != 2 || g.Memory != 4 {
		t.Errorf("size %v/%v, want 1.5/3 rounded up to 2/4", g.Cpu, g.Memory)
	}
	if !hasEvent(g.Events, "Updated") {
		t.Errorf("no Updated event: %+v", g.Events)
	}

	// Tags alone take effect at once, without a restart.
	u = newUpdateRequest(id)
	u.Tag = &[]sdkeci.UpdateContainerGroupTag{{Key: "team", Value: "a"}, {Key: "vnode.io/node", Value: "n1"}}
	if _, err := c.UpdateContainerGroup(u); err != nil {
		t.Fatal(err)
	}
	if g := describeGroup(t, c, "http", id); g.Status != "Running" || len(g.Tags) != 2 || g.Tags[0].Key != "team" {
		t.Errorf("after a tag update: status %s tags %+v", g.Status, g.Tags)
	}
}

// The structured form (Key/Value, volumes, DnsConfig) goes by
// CommonRequest, which the emulator reads like the cloud.
func TestUpdateContainerGroupStructured(t *testing.T) {
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim"})
	c := sdkClient(t, ep, testID, testSecret)
	r, err := c.CreateContainerGroup(createRequest("upd2", ""))
	if err != nil {
		t.Fatal(err)
	}
	id := r.ContainerGroupId
	waitStatus(t, c, "http", id, "Running")
	_, err = commonCall(c, "http", "UpdateContainerGroup", map[string]string{
		"ContainerGroupId": id, "UpdateType": "IncrementalUpdate", "RestartPolicy": "OnFailure",
		"Container.1.Name": "app", "Container.1.EnvironmentVar.1.Key": "POD_IP", "Container.1.EnvironmentVar.1.FieldRef.FieldPath": "status.podIP",
		"Container.1.VolumeMount.1.Name": "cfg", "Container.1.VolumeMount.1.MountPath": "/etc/app",
		"Volume.1.Name": "cfg", "Volume.1.Type": "EmptyDirVolume",
		"DnsConfig.NameServer.1": "10.0.0.10", "DnsConfig.Search.1": "svc.cluster.local", "DnsConfig.Option.1.Name": "ndots", "DnsConfig.Option.1.Value": "5",
	})
	if err != nil {
		t.Fatal(err)
	}
	g := waitStatus(t, c, "http", id, "Running")
	ct := g.Containers[0]
	if g.RestartPolicy != "OnFailure" || ct.Image != "busybox" || len(ct.EnvironmentVars) != 1 ||
		ct.EnvironmentVars[0].ValueFrom.FieldRef.FieldPath != "status.podIP" || len(ct.VolumeMounts) != 1 || len(g.Volumes) != 1 {
		t.Errorf("after the update: policy %s container %+v volumes %+v", g.RestartPolicy, ct, g.Volumes)
	}
	if d := g.DnsConfig; len(d.NameServers) != 1 || d.NameServers[0] != "10.0.0.10" || len(d.Options) != 1 || d.Options[0].Value != "5" {
		t.Errorf("DnsConfig %+v", d)
	}
}

func TestUpdateContainerGroupErrors(t *testing.T) {
	emu, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim"})
	c := sdkClient(t, ep, testID, testSecret)
	r, err := c.CreateContainerGroup(createRequest("upd3", ""))
	if err != nil {
		t.Fatal(err)
	}
	id := r.ContainerGroupId
	waitStatus(t, c, "http", id, "Running")
	for name, tc := range map[string]struct {
		req  func() *sdkeci.UpdateContainerGroupRequest
		code string
	}{
		"no id":             {func() *sdkeci.UpdateContainerGroupRequest { return newUpdateRequest("") }, "MissingParameter"},
		"unknown group":     {func() *sdkeci.UpdateContainerGroupRequest { return newUpdateRequest("eci-nope") }, "InvalidContainerGroup.NotFound"},
		"unknown container": {containerUpdate(id, sdkeci.UpdateContainerGroupContainer{Name: "ghost", Image: "x"}), "InvalidParameter"},
		"bad env":           {containerUpdate(id, sdkeci.UpdateContainerGroupContainer{Name: "app", EnvironmentVar: []string{"NOEQUALS"}}), "InvalidParameter"},
		"undefined volume":  {containerUpdate(id, sdkeci.UpdateContainerGroupContainer{Name: "app", VolumeMount: []string{"nope:/x"}}), "InvalidParameter"},
		"bad policy": {func() *sdkeci.UpdateContainerGroupRequest {
			u := newUpdateRequest(id)
			u.RestartPolicy = "Sometimes"
			return u
		}, "InvalidParameter"},
		"oversize": {func() *sdkeci.UpdateContainerGroupRequest {
			u := newUpdateRequest(id)
			u.Cpu = requests.NewFloat(128)
			return u
		}, "InvalidParameter"},
	} {
		_, err := c.UpdateContainerGroup(tc.req())
		if se := serverError(t, err); se.ErrorCode() != tc.code {
			t.Errorf("%s: %s %s, want %s", name, se.ErrorCode(), se.Message(), tc.code)
		}
	}
	if g := describeGroup(t, c, "http", id); g.Status != "Running" || g.Containers[0].Image != "busybox" {
		t.Errorf("a refused update changed the group: %+v", g)
	}
	if err := emu.Expire(id); err != nil {
		t.Fatal(err)
	}
	_, err = c.UpdateContainerGroup(containerUpdate(id, sdkeci.UpdateContainerGroupContainer{Name: "app", Image: "y"})())
	if se := serverError(t, err); se.ErrorCode() != "IncorrectStatus" {
		t.Errorf("update of an Expired group: %s", se.ErrorCode())
	}
}

func containerUpdate(id string, ct sdkeci.UpdateContainerGroupContainer) func() *sdkeci.UpdateContainerGroupRequest {
	return func() *sdkeci.UpdateContainerGroupRequest {
		u := newUpdateRequest(id)
		u.Container = &[]sdkeci.UpdateContainerGroupContainer{ct}
		return u
	}
}

// With the process runtime an update really restarts the container with
// the new command.
func TestUpdateRestartsProcesses(t *testing.T) {
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "process"})
	c := sdkClient(t, ep, testID, testSecret)
	r, err := c.CreateContainerGroup(createRequest("upd4", ""))
	if err != nil {
		t.Fatal(err)
	}
	id := r.ContainerGroupId
	waitFor(t, "the first run", func() bool { return strings.Contains(containerLog(t, c, id, false), "hello") })
	u := containerUpdate(id, sdkeci.UpdateContainerGroupContainer{Name: "app", Command: []string{"/bin/sh", "-c", "echo second:$MODE; sleep 30"},
		EnvironmentVar: []string{"MODE=updated"}})()
	if _, err := c.UpdateContainerGroup(u); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the updated run", func() bool { return strings.Contains(containerLog(t, c, id, false), "second:updated") })
	g := waitStatus(t, c, "http", id, "Running")
	if s := g.Containers[0].PreviousState; s.State != "Terminated" {
		t.Errorf("previous state %+v", s)
	}
}
