package controlplane

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vnode-project/vnode/integration/testio"
)

// A long build says what it builds, that it is still going, and when it
// is done; a failed one is not called built.
func TestWithProgress(t *testing.T) {
	var out testio.LockedBuffer
	err := withProgress(&out, "kube-apiserver (2 of 5)", time.Millisecond, func() error {
		for strings.Count(out.String(), "still building") < 2 {
			time.Sleep(time.Millisecond)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"building kube-apiserver (2 of 5) ...\n", "  still building kube-apiserver (2 of 5): ", "built kube-apiserver (2 of 5) in "} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if lines := strings.Split(strings.TrimSpace(got), "\n"); !strings.HasPrefix(lines[len(lines)-1], "built ") {
		t.Errorf("a line after built:\n%s", got)
	}

	var failed testio.LockedBuffer
	boom := errors.New("compile error")
	if err := withProgress(&failed, "etcd (1 of 5)", time.Hour, func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("error %v, want the build's", err)
	}
	if strings.Contains(failed.String(), "built") {
		t.Fatalf("a failed build called built:\n%s", failed.String())
	}
}
