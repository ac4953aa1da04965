package eci

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/eci/emulator/emulatortest"
)

func TestVirtualNodes(t *testing.T) {
	_, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{id: secret}, Runtime: "sim",
		Delays: emulator.Delays{VirtualNode: 50 * time.Millisecond}})
	c := newClient(t, ep, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	spec := VirtualNodeSpec{Name: "vnd-a", ZoneID: "cn-hangzhou-a", VSwitchID: "vsw-1", SecurityGroupID: "sg-1",
		ClusterDNS: []string{"10.0.0.10"}, ClusterDomain: "cluster.local", CustomResources: map[string]int64{"nvidia.com/gpu": 4},
		KubeConfig: []byte("apiVersion: v1\nkind: Config\n"), Tags: map[string]string{"team": "blue", "env": "test"},
		Taints: []VirtualNodeTaint{{Key: "dedicated", Value: "eci", Effect: "NoSchedule"}}, ClientToken: "tok-a"}
	idA, err := c.CreateVirtualNode(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.CreateVirtualNode(ctx, spec)
	if err != nil || again != idA {
		t.Fatalf("ClientToken replay: %q, %v; want %q", again, err, idA)
	}
	changed := spec
	changed.Name = "vnd-other"
	if _, err := c.CreateVirtualNode(ctx, changed); KindOf(err) != KindConflict {
		t.Fatalf("same token, other request: %v", err)
	}
	spec.ClientToken = ""
	if _, err := c.CreateVirtualNode(ctx, spec); KindOf(err) != KindInvalidInput {
		t.Fatalf("create without a ClientToken: %v", err)
	}
	noSwitch := spec
	noSwitch.VSwitchID, noSwitch.ClientToken = "", "tok-b"
	if _, err := c.CreateVirtualNode(ctx, noSwitch); KindOf(err) != KindInvalidInput {
		t.Fatalf("create without a vSwitch: %v", err)
	}

	// 25 more nodes: listing pages through them.
	for i := range 25 {
		s := VirtualNodeSpec{Name: fmt.Sprintf("vnd-p%02d", i), VSwitchID: "vsw-1", SecurityGroupID: "sg-1",
			Tags: map[string]string{"batch": "p"}, ClientToken: fmt.Sprintf("tok-p%d", i)}
		if _, err := c.CreateVirtualNode(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	all, err := c.ListVirtualNodes(ctx, VirtualNodeFilter{})
	if err != nil || len(all) != 26 {
		t.Fatalf("list all: %d nodes, %v", len(all), err)
	}
	batch, err := c.ListVirtualNodes(ctx, VirtualNodeFilter{Tags: map[string]string{"batch": "p"}})
	if err != nil || len(batch) != 25 {
		t.Fatalf("list by tag: %d nodes, %v", len(batch), err)
	}
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		ready, err := c.ListVirtualNodes(ctx, VirtualNodeFilter{IDs: []string{idA}, Status: "Ready"})
		return err == nil && len(ready) == 1, err
	})
	if err != nil {
		t.Fatalf("node %s never Ready: %v", idA, err)
	}
	got, err := c.ListVirtualNodes(ctx, VirtualNodeFilter{Name: "vnd-a"})
	if err != nil || len(got) != 1 || got[0].ID != idA || got[0].VSwitchID != "vsw-1" || got[0].SecurityGroupID != "sg-1" || len(got[0].Tags) != 2 {
		t.Fatalf("by name: %+v, %v", got, err)
	}

	if err := c.UpdateVirtualNode(ctx, idA, VirtualNodeSpec{Name: "vnd-renamed", Tags: map[string]string{"team": "red"}}); err != nil {
		t.Fatal(err)
	}
	got, err = c.ListVirtualNodes(ctx, VirtualNodeFilter{IDs: []string{idA}})
	if err != nil || len(got) != 1 || got[0].Name != "vnd-renamed" {
		t.Fatalf("after update: %+v, %v", got, err)
	}
	if err := c.DeleteVirtualNode(ctx, idA); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteVirtualNode(ctx, idA); KindOf(err) != KindNotFound {
		t.Fatalf("deleting twice: %v", err)
	}
	if err := c.UpdateVirtualNode(ctx, idA, VirtualNodeSpec{Name: "vnd-x"}); KindOf(err) != KindNotFound {
		t.Fatalf("updating a deleted node: %v", err)
	}
	if got, err := c.ListVirtualNodes(ctx, VirtualNodeFilter{IDs: []string{idA}}); err != nil || len(got) != 0 {
		t.Fatalf("deleted node listed: %+v, %v", got, err)
	}
}
