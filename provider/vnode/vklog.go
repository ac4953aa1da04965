package vnode

import (
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	vklog "github.com/virtual-kubelet/virtual-kubelet/log"
)

// vkLogger keeps virtual-kubelet's harmless lines from reading as faults:
// an update that lost a race with another writer (a conflict) is retried by
// its queue, which warns as it requeues, so the library's own error line
// for it goes to debug; and its "TLS config not provided" warning is about
// its HTTP server, which vnode does not use (provider/kubeletapi serves the
// kubelet API).
type vkLogger struct {
	vklog.Logger
	conflict bool
}

const vkNoTLSWarning = "TLS config not provided, not starting up http service"

func (l vkLogger) WithError(err error) vklog.Logger {
	return vkLogger{Logger: l.Logger.WithError(err), conflict: l.conflict || apierrors.IsConflict(err)}
}

func (l vkLogger) WithField(k string, v any) vklog.Logger {
	return vkLogger{Logger: l.Logger.WithField(k, v), conflict: l.conflict}
}

func (l vkLogger) WithFields(f vklog.Fields) vklog.Logger {
	return vkLogger{Logger: l.Logger.WithFields(f), conflict: l.conflict}
}

func (l vkLogger) Error(args ...any) {
	if l.conflict {
		l.Logger.Debug(args...)
		return
	}
	l.Logger.Error(args...)
}

func (l vkLogger) Errorf(format string, args ...any) {
	if l.conflict {
		l.Logger.Debugf(format, args...)
		return
	}
	l.Logger.Errorf(format, args...)
}

func (l vkLogger) Warn(args ...any) {
	if len(args) == 1 && args[0] == vkNoTLSWarning {
		l.Logger.Debug(args...)
		return
	}
	l.Logger.Warn(args...)
}
