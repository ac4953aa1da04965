package vnodectl

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vnode-project/vnode/eci"
	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/eci/emulator/emulatortest"
	"github.com/vnode-project/vnode/eci/model"
	"github.com/vnode-project/vnode/provider/translate"
)

const bootstrapKubeconfig = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: eci123.eci1233333333333}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`

// cloudEnv is an emulator and a vnode config whose context points at it.
func cloudEnv(t *testing.T) (endpoint string, kubeconfig string) {
	t.Helper()
	path := isolate(t)
	_, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{"AKID": "TOPSECRET", "AKID2": "TOPSECRET2"}, Runtime: "sim",
		Delays: emulator.Delays{VirtualNode: time.Millisecond}})
	kubeconfig = filepath.Join(filepath.Dir(path), "deploy", "kubeconfig")
	writeFile(t, kubeconfig, bootstrapKubeconfig)
	// twoContexts' default context, pointed at the emulator.
	writeFile(t, path, strings.Replace(twoContexts, "    kubeconfig: ~/.vnode/deploy/kubeconfig\n  - name: other",
		"    kubeconfig: ~/.vnode/deploy/kubeconfig\n    endpoint: http://"+ep+"\n  - name: other", 1))
	return "http://" + ep, kubeconfig
}

func listJSON(t *testing.T) []listed {
	t.Helper()
	out, err := run(t, "list", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []listed
	if err := json.Unmarshal([]byte(out[strings.Index(out, "["):]), &rows); err != nil {
		t.Fatalf("list -o json: %v\n%s", err, out)
	}
	return rows
}

func TestVNodeCreateListDescribeUpdateDelete(t *testing.T) {
	endpoint, kubeconfig := cloudEnv(t)

	out, err := run(t, "create", "--client-token", "tok-1", "--cluster-dns", "10.0.0.10", "--custom-resources", "nvidia.com/gpu=4")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`^\{"RequestId":"[^"]+","VirtualNodeId":"(vnd-[a-z0-9]+)"\}\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("create printed %q, want the seed's {\"RequestId\":\"…\",\"VirtualNodeId\":\"vnd-…\"}", out)
	}
	id := m[1]
	// The same --client-token: the same node, not a second one.
	again, err := run(t, "create", "--client-token", "tok-1", "--cluster-dns", "10.0.0.10", "--custom-resources", "nvidia.com/gpu=4")
	if err != nil || !strings.Contains(again, id) {
		t.Fatalf("a repeated create: %v %s", err, again)
	}
	if rows := listJSON(t); len(rows) != 1 {
		t.Fatalf("%d nodes after a create repeated with one client token", len(rows))
	}

	// Bad input changes nothing.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"create", "--cluster-dns", "10.0.0.300"}, "--cluster-dns"},
		{[]string{"create", "--custom-resources", "nvidia.com/gpu=lots"}, "--custom-resources"},
		{[]string{"create", "--name", "Bad_Name"}, "--name"},
		{[]string{"create", "--taint", "a=b:Sometimes"}, "effect"},
		{[]string{"create", "--dry"}, ""},
		{[]string{"list", "-o", "xml"}, "want json or yaml"},
		{[]string{"describe", "vnd-nope"}, "not found in region cn-hangzhou"},
		{[]string{"describe", "nope"}, "is not a VNode id"},
		{[]string{"update", id}, "nothing to update"},
		{[]string{"delete", "vnd-nope"}, "not found"},
		{[]string{"create", "--context", "nope"}, `context "nope" not found`},
	} {
		out, err := run(t, c.args...)
		if c.want == "" {
			if err != nil {
				t.Errorf("%v: %v", c.args, err)
			}
		} else if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v (%s), want %q", c.args, err, out, c.want)
		}
	}
	if out, _ := run(t, "create", "--dry"); !strings.Contains(out, `"TLSBootstrapEnabled":true`) || strings.Contains(out, "eci1233333333333") {
		t.Fatalf("create --dry: %s", out)
	}
	if err := os.WriteFile(kubeconfig, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "create"); err == nil || !strings.Contains(err.Error(), "kubeconfig can't be empty") {
		t.Fatalf("create with an empty kubeconfig: %v", err)
	}
	if rows := listJSON(t); len(rows) != 1 {
		t.Fatalf("refused creates made nodes: %d", len(rows))
	}

	out, err = run(t, "list")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	header := regexp.MustCompile(`\s{2,}`).Split(lines[len(lines)-2], -1)
	if strings.Join(header, "|") != "VNODE ID|VNODE NAME|CREATED|STATUS|SCHEDULABLE|ZONES" {
		t.Fatalf("list header %q", lines[len(lines)-2])
	}
	if !regexp.MustCompile(id + `\s+\S+\s+\d+ seconds? ago\s+(Pending|Ready)\s+unknown\s+-`).MatchString(lines[len(lines)-1]) {
		t.Fatalf("list row %q", lines[len(lines)-1])
	}
	if out, err := run(t, "list", "-o", "yaml"); err != nil || !strings.Contains(out, "VirtualNodeId: "+id) {
		t.Fatalf("list -o yaml: %v\n%s", err, out)
	}

	if _, err := run(t, "update", id, "--name", "renamed", "--tag", "team=blue"); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, "describe", id)
	if err != nil || !strings.Contains(out, "VirtualNodeName: renamed") || !strings.Contains(out, "Events:") || !strings.Contains(out, "Value: blue") {
		t.Fatalf("describe after update: %v\n%s", err, out)
	}

	// An instance of the node: delete is refused with how to drain.
	client, err := eci.New(eci.Config{RegionID: "cn-hangzhou", Endpoint: endpoint, AccessKeyID: "AKID", AccessKeySecret: "TOPSECRET"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	gid, _, err := client.CreateContainerGroup(ctx, &model.ContainerGroup{Name: "p1", ClientToken: "pod-uid-1", RestartPolicy: "Always", CPU: 1, MemoryGi: 2,
		Containers: []model.Container{{Name: "c", Image: "busybox"}}, VSwitchIDs: []string{"vsw-abc"}, SecurityGroupID: "sg-abc",
		Tags: map[string]string{translate.TagNode: "cn-hangzhou." + id}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "delete", id); err == nil || !strings.Contains(err.Error(), "still has instances") || !strings.Contains(err.Error(), "kubectl drain cn-hangzhou."+id) {
		t.Fatalf("delete with an instance: %v", err)
	}
	if err := client.DeleteContainerGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "delete", id); err != nil || !strings.Contains(out, "deleted") {
		t.Fatalf("delete: %v %s", err, out)
	}
	if rows := listJSON(t); len(rows) != 0 {
		t.Fatalf("%d nodes after delete", len(rows))
	}
}
