package provider

import (
	"fmt"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
)

// wrapKind adds what was being done to err and keeps its errdefs kind.
// virtual-kubelet finds a kind only through Cause(), not Unwrap(), so an
// error wrapped with %w alone would turn a vanished instance's 404 into
// a 500.
func wrapKind(err error, format string, args ...any) error {
	w := fmt.Errorf(format+": %w", append(args, err)...)
	switch {
	case errdefs.IsNotFound(err):
		return errdefs.AsNotFound(w)
	case errdefs.IsInvalidInput(err):
		return errdefs.AsInvalidInput(w)
	}
	return w
}
