package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

// A klog line comes out as one logrus line at its own severity, without
// klog's header.
func TestKlogWriter(t *testing.T) {
	var buf bytes.Buffer
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetLevel(logrus.InfoLevel)
	w := klogWriter{logrus.NewEntry(l)}
	for _, line := range []string{
		"W1205 00:10:16.123456   4242 reflector.go:561] watch ended\n",
		"E1205 00:10:16.123456   4242 leaderelection.go:1] lost the lease\n",
		"I1205 00:10:16.123456   4242 x.go:1] chatter\n",
	} {
		if n, err := w.Write([]byte(line)); err != nil || n != len(line) {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
	got := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{`level=warning msg="watch ended"`, `level=error msg="lost the lease"`, `level=info msg=chatter`}
	if len(got) != len(want) {
		t.Fatalf("got %d lines:\n%s", len(got), buf.String())
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) || strings.Contains(got[i], "1205") {
			t.Errorf("line %d: %s, want %s without klog's header", i, got[i], want[i])
		}
	}
}
