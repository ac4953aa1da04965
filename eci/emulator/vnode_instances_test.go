package emulator

import (
	"strings"
	"testing"
	"time"

	"github.com/vnode-project/vnode/provider/translate"
)

// The tag the emulator reads is the one vnode-kubelet writes.
func TestNodeTagIsTheProvidersTag(t *testing.T) {
	if nodeTag != translate.TagNode {
		t.Fatalf("the emulator reads tag %q, vnode-kubelet writes %q", nodeTag, translate.TagNode)
	}
}

// DeleteVirtualNode is refused while an instance of the node remains, and
// accepted once it is gone.
func TestDeleteVirtualNodeRefusedWithInstances(t *testing.T) {
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim", Delays: Delays{VirtualNode: time.Millisecond}})
	c := sdkClient(t, ep, testID, testSecret)
	call := func(action string, q map[string]string) (map[string]any, error) {
		return commonCall(c, "http", action, q)
	}
	r, err := call("CreateVirtualNode", map[string]string{"VSwitchId": "vsw-1", "SecurityGroupId": "sg-1", "ClientToken": "t1"})
	if err != nil {
		t.Fatal(err)
	}
	id := r["VirtualNodeId"].(string)
	g, err := call("CreateContainerGroup", map[string]string{
		"ContainerGroupName": "p1", "VSwitchId": "vsw-1", "SecurityGroupId": "sg-1",
		"Container.1.Name": "c", "Container.1.Image": "busybox", "Tag.1.Key": nodeTag, "Tag.1.Value": "cn-hangzhou." + id,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := call("DeleteVirtualNode", map[string]string{"VirtualNodeId": id}); err == nil || !strings.Contains(err.Error(), "IncorrectStatus") || !strings.Contains(err.Error(), "1 instance") {
		t.Fatalf("delete with an instance: %v", err)
	}
	if _, err := call("DeleteContainerGroup", map[string]string{"ContainerGroupId": g["ContainerGroupId"].(string)}); err != nil {
		t.Fatal(err)
	}
	if _, err := call("DeleteVirtualNode", map[string]string{"VirtualNodeId": id}); err != nil {
		t.Fatalf("delete after the instance went: %v", err)
	}
}
