package identity

import "testing"

func TestVNodeOf(t *testing.T) {
	for user, want := range map[string]string{
		"system:vnode:cn-hangzhou.vnd-1": "cn-hangzhou.vnd-1",
		"system:vnode:":                  "",
		"system:vnodefoo":                "",
		"system:node:a":                  "",
	} {
		got, ok := VNodeOf(user)
		if got != want || ok != (want != "") {
			t.Errorf("VNodeOf(%q) = %q, %v; want %q", user, got, ok, want)
		}
	}
	if VNodeUser("x") != "system:vnode:x" {
		t.Fatal(VNodeUser("x"))
	}
	if !IsVirtualNode(map[string]string{"type": "virtual-kubelet"}) || IsVirtualNode(map[string]string{"type": "edge"}) || IsVirtualNode(nil) {
		t.Fatal("IsVirtualNode misjudges the type label")
	}
}
