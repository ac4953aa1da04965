package translate

import (
	"strings"
	"testing"

	"github.com/vnode-project/vnode/eci/model"
)

// Issue 12 item 8: a node (or pod) name over ECI's 128-character tag limit
// was cut, so two long node names sharing their first 128 characters got
// one tag (each node's list and garbage collection saw the other's
// instances), and the tag never equalled the name the node selects by. The
// tag is model.TagValue of the name, which the provider selects and
// compares with.
func TestLongNamesAreHashedIntoTags(t *testing.T) {
	prefix := strings.Repeat("edge-site-", 13) // 130 characters
	tagOf := func(nodeName string) map[string]string {
		node := testNode
		node.NodeName = nodeName
		pod := fullPod()
		pod.Name = prefix + "pod"
		g, err := Pod(pod, node, Sources{Objects: objects()})
		if err != nil {
			t.Fatal(err)
		}
		return g.Tags
	}
	a, b := tagOf(prefix+"a"), tagOf(prefix+"b")
	if a[TagNode] == b[TagNode] {
		t.Errorf("nodes %sa and %sb share the tag %s", prefix, prefix, a[TagNode])
	}
	for _, tags := range []map[string]string{a, b} {
		for _, k := range []string{TagNode, TagPod} {
			if len(tags[k]) > model.MaxTagValue {
				t.Errorf("tag %s has %d characters", k, len(tags[k]))
			}
		}
	}
	if a[TagNode] != model.TagValue(prefix+"a") || a[TagPod] != model.TagValue(prefix+"pod") {
		t.Errorf("tags %s=%s %s=%s are not model.TagValue of the names", TagNode, a[TagNode], TagPod, a[TagPod])
	}
}
