package translate

import (
	"errors"
	"fmt"
)

// UnsupportedError says why a pod cannot run on ECI. Reason is a
// CamelCase word for the pod status and events; Message says what to change.
type UnsupportedError struct {
	Reason  string
	Message string
}

func (e *UnsupportedError) Error() string { return e.Reason + ": " + e.Message }

func unsupported(reason, format string, args ...any) error {
	return &UnsupportedError{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// AsUnsupported returns the UnsupportedError in err's chain, if any.
func AsUnsupported(err error) (*UnsupportedError, bool) {
	var u *UnsupportedError
	ok := errors.As(err, &u)
	return u, ok
}
