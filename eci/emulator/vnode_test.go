package emulator

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

// The virtual-node actions (not in the old SDK) through CommonRequest:
// validation, Pending -> Ready, filters, update, delete, ClientToken.
func TestVirtualNodes(t *testing.T) {
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim", Delays: Delays{VirtualNode: 300 * time.Millisecond}})
	c := sdkClient(t, ep, testID, testSecret)
	call := func(action string, q map[string]string) (map[string]any, error) {
		return commonCall(c, "http", action, q)
	}
	valid := func(extra map[string]string) map[string]string {
		q := map[string]string{"VSwitchId": "vsw-1", "SecurityGroupId": "sg-1", "VirtualNodeName": "vn-a", "ZoneId": "cn-hangzhou-b",
			"ClusterDNS": "10.0.0.10", "CustomResources": "example.com/gpu=4", "KubeConfig": base64.StdEncoding.EncodeToString([]byte("apiVersion: v1")),
			"Taint.1.Key": "k8s.aliyun.com/vnode", "Taint.1.Value": "true", "Taint.1.Effect": "NoSchedule",
			"Tag.1.Key": "env", "Tag.1.Value": "test", "EnablePublicNetwork": "true"}
		for k, v := range extra {
			if v == "" {
				delete(q, k)
			} else {
				q[k] = v
			}
		}
		return q
	}
	for name, tc := range map[string]struct {
		q    map[string]string
		code string
	}{
		"no vswitch":    {valid(map[string]string{"VSwitchId": ""}), "MissingParameter"},
		"no sg":         {valid(map[string]string{"SecurityGroupId": ""}), "MissingParameter"},
		"bad name":      {valid(map[string]string{"VirtualNodeName": "Bad_Name"}), "InvalidParameter"},
		"bad zone":      {valid(map[string]string{"ZoneId": "cn-beijing-a"}), "InvalidParameter"},
		"bad effect":    {valid(map[string]string{"Taint.1.Effect": "Sometimes"}), "InvalidParameter"},
		"bad resources": {valid(map[string]string{"CustomResources": "gpu"}), "InvalidParameter"},
		"bad dns":       {valid(map[string]string{"ClusterDNS": "dns.example"}), "InvalidParameter"},
		"bad kubecfg":   {valid(map[string]string{"KubeConfig": "not base64!"}), "InvalidParameter"},
		"other region":  {valid(map[string]string{"RegionId": "cn-beijing"}), "InvalidRegionId.NotFound"},
	} {
		_, err := call("CreateVirtualNode", tc.q)
		if se := serverError(t, err); se.ErrorCode() != tc.code {
			t.Errorf("%s: %s %s, want %s", name, se.ErrorCode(), se.Message(), tc.code)
		}
	}

	r, err := call("CreateVirtualNode", valid(map[string]string{"ClientToken": "vn-tok"}))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := r["VirtualNodeId"].(string)
	if !strings.HasPrefix(id, "vnd-") {
		t.Fatalf("VirtualNodeId %q", id)
	}
	again, err := call("CreateVirtualNode", valid(map[string]string{"ClientToken": "vn-tok"}))
	if err != nil || again["VirtualNodeId"] != id {
		t.Fatalf("ClientToken replay: %v %v", again, err)
	}
	other, err := call("CreateVirtualNode", valid(map[string]string{"VirtualNodeName": "vn-b", "Tag.1.Value": "prod", "EnablePublicNetwork": ""}))
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]string{"VirtualNodeIds": `["` + id + `"]`}
	v := describeVirtualNodes(t, c, byID)
	if len(v) != 1 || v[0]["Status"] != "Pending" || v[0]["VirtualNodeName"] != "vn-a" || v[0]["VirtualNodeVSwitchId"] != "vsw-1" ||
		v[0]["VirtualNodeSecurityGroupId"] != "sg-1" || v[0]["InternetIp"] == "" || !strings.HasPrefix(v[0]["VpcId"].(string), "vpc-") {
		t.Fatalf("new virtual node: %v", v)
	}
	if _, leaked := v[0]["Config"]; leaked {
		t.Errorf("settings the API does not return leaked: %v", v[0])
	}
	waitFor(t, "the virtual node Ready", func() bool { return describeVirtualNodes(t, c, byID)[0]["Status"] == "Ready" })
	if got := describeVirtualNodes(t, c, map[string]string{"Tag.1.Key": "env", "Tag.1.Value": "prod"}); len(got) != 1 || got[0]["VirtualNodeId"] != other["VirtualNodeId"] {
		t.Errorf("tag filter: %v", got)
	}
	if got := describeVirtualNodes(t, c, map[string]string{"VirtualNodeName": "vn-b"}); len(got) != 1 || got[0]["InternetIp"] != "" {
		t.Errorf("name filter: %v", got)
	}
	page, err := call("DescribeVirtualNodes", map[string]string{"Limit": "1"})
	if err != nil || page["TotalCount"].(float64) != 2 || page["NextToken"] == "" || len(page["VirtualNodes"].([]any)) != 1 {
		t.Errorf("paging: %v %v", page, err)
	}
	_, err = call("DescribeVirtualNodes", map[string]string{"Status": "Sleeping"})
	if se := serverError(t, err); se.ErrorCode() != "InvalidParameter" {
		t.Errorf("bad status filter: %s", se.ErrorCode())
	}

	if _, err := call("UpdateVirtualNode", map[string]string{"VirtualNodeId": id, "VirtualNodeName": "vn-renamed", "Tag.1.Key": "owner", "Tag.1.Value": "me"}); err != nil {
		t.Fatal(err)
	}
	v = describeVirtualNodes(t, c, byID)
	if v[0]["VirtualNodeName"] != "vn-renamed" || len(v[0]["Tags"].([]any)) != 1 || v[0]["Tags"].([]any)[0].(map[string]any)["Key"] != "owner" {
		t.Errorf("after the update: %v", v[0])
	}
	for name, tc := range map[string]struct {
		action string
		q      map[string]string
		code   string
	}{
		"update no id":      {"UpdateVirtualNode", map[string]string{}, "MissingParameter"},
		"update unknown":    {"UpdateVirtualNode", map[string]string{"VirtualNodeId": "vnd-nope"}, "InvalidVirtualNode.NotFound"},
		"update bad name":   {"UpdateVirtualNode", map[string]string{"VirtualNodeId": id, "VirtualNodeName": "X"}, "InvalidParameter"},
		"update bad custom": {"UpdateVirtualNode", map[string]string{"VirtualNodeId": id, "CustomResources": "a=-1"}, "InvalidParameter"},
		"delete no id":      {"DeleteVirtualNode", map[string]string{}, "MissingParameter"},
		"delete unknown":    {"DeleteVirtualNode", map[string]string{"VirtualNodeId": "vnd-nope"}, "InvalidVirtualNode.NotFound"},
	} {
		_, err := call(tc.action, tc.q)
		if se := serverError(t, err); se.ErrorCode() != tc.code {
			t.Errorf("%s: %s, want %s", name, se.ErrorCode(), tc.code)
		}
	}
	if _, err := call("DeleteVirtualNode", map[string]string{"VirtualNodeId": id}); err != nil {
		t.Fatal(err)
	}
	if got := describeVirtualNodes(t, c, byID); len(got) != 0 {
		t.Errorf("deleted virtual node still described: %v", got)
	}
	_, err = call("DeleteVirtualNode", map[string]string{"VirtualNodeId": id})
	if se := serverError(t, err); se.ErrorCode() != "InvalidVirtualNode.NotFound" {
		t.Errorf("second delete: %s", se.ErrorCode())
	}
}
