package local

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// Where pods cannot be isolated, make run says why and runs them on the
// sim runtime rather than as plain processes on the user's machine.
func TestPodRuntime(t *testing.T) {
	var out bytes.Buffer
	if got := podRuntime(func() error { return nil }, &out); got != "process" || out.Len() != 0 {
		t.Fatalf("isolating machine: %q, said %q", got, out.String())
	}
	got := podRuntime(func() error { return errors.New("user namespaces are off (kernel.unprivileged_userns_clone=0)") }, &out)
	if got != "sim" || !strings.Contains(out.String(), "unprivileged_userns_clone") || !strings.Contains(out.String(), "sim runtime") {
		t.Fatalf("non-isolating machine: %q, said %q", got, out.String())
	}
}
