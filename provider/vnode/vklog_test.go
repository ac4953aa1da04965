package vnode

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	logruslogger "github.com/virtual-kubelet/virtual-kubelet/log/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// A retried conflict is no error line; any other error still is.
func TestVKLoggerDemotesRetriedConflicts(t *testing.T) {
	var buf bytes.Buffer
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetLevel(logrus.InfoLevel)
	vk := vkLogger{Logger: logruslogger.FromLogrus(logrus.NewEntry(l))}

	conflict := fmt.Errorf("error while updating pod status in kubernetes: %w",
		apierrors.NewConflict(schema.GroupResource{Resource: "pods"}, "p", errors.New("the object has been modified")))
	vk.WithField("key", "ns/p").WithError(conflict).Error("Error processing pod status update")
	vk.Warn(vkNoTLSWarning)
	if buf.Len() != 0 {
		t.Fatalf("logged at info or above: %s", buf.String())
	}
	vk.WithError(errors.New("boom")).WithField("key", "ns/p").Error("Error processing pod status update")
	vk.Warn("something else")
	if out := buf.String(); !strings.Contains(out, "level=error") || !strings.Contains(out, "level=warning msg=\"something else\"") {
		t.Fatalf("other errors and warnings must stay: %s", out)
	}
}
