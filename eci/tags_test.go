package eci

import (
	"context"
	"strings"
	"testing"

	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/eci/emulator/emulatortest"
	"github.com/vnode-project/vnode/eci/model"
	"github.com/vnode-project/vnode/provider/translate"
)

// Issue 12 item 8: a node whose name is over ECI's 128-character tag
// limit must still find its own instances, and only them: the tag it sets
// and the tag it selects by are both model.TagValue of its name.
func TestLongNodeNameFindsItsOwnInstances(t *testing.T) {
	_, ep := emulatortest.StartForTest(t, emulator.Config{Credentials: map[string]string{id: secret}, Runtime: "sim"})
	c := newClient(t, ep, nil)
	ctx := context.Background()
	prefix := strings.Repeat("edge-site-", 13) // 130 characters
	mine, other := prefix+"mine", prefix+"other"
	for _, n := range []string{mine, other} {
		g := group("g-"+n[len(n)-4:], "tok-"+n[len(n)-4:])
		g.Tags[translate.TagNode] = n
		if _, _, err := c.CreateContainerGroup(ctx, g); err != nil {
			t.Fatalf("creating an instance of node %s: %v", n, err)
		}
	}
	insts, err := listAll(ctx, c, map[string]string{translate.TagNode: mine, translate.TagCluster: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(insts) != 1 || insts[0].Tags[translate.TagNode] != model.TagValue(mine) {
		var got []string
		for _, i := range insts {
			got = append(got, i.Tags[translate.TagNode])
		}
		t.Fatalf("node %s lists %d instances with node tags %q, want its one, tagged %s", mine, len(insts), got, model.TagValue(mine))
	}
}
