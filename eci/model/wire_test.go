package model

import (
	"strings"
	"testing"
)

func TestTagValue(t *testing.T) {
	short := strings.Repeat("n", MaxTagValue)
	if TagValue(short) != short {
		t.Errorf("a name that fits is changed: %s", TagValue(short))
	}
	long := strings.Repeat("node-", 40) // 200 characters, a valid node name
	a, b := TagValue(long+"a"), TagValue(long+"b")
	if len(a) != MaxTagValue || len(b) != MaxTagValue {
		t.Errorf("lengths %d and %d, want %d", len(a), len(b), MaxTagValue)
	}
	if a == b {
		t.Errorf("two long names sharing their first 128 characters get one tag: %s", a)
	}
	if a != TagValue(long+"a") {
		t.Error("TagValue is not stable")
	}
	if !strings.HasPrefix(a, long[:100]) {
		t.Errorf("the tag does not keep the name's start: %s", a)
	}
}

func TestPercentEncode(t *testing.T) {
	if got := PercentEncode("a b*c~d/é"); got != "a%20b%2Ac~d%2F%C3%A9" {
		t.Errorf("PercentEncode = %s", got)
	}
}
