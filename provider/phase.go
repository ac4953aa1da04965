package provider

import "fmt"

// phase is where a pod stands in its life on the virtual node. Each entry
// has exactly one; it changes only through entry.to, along the edges in
// transitions, so no reader has to re-derive it from flags.
type phase uint8

const (
	// phaseWaiting: no instance yet; a create is queued (now, or after a
	// backoff while ECI or a referenced object is not ready).
	phaseWaiting phase = iota
	// phaseCreating: a create call is in flight; nothing starts another (a
	// second call would carry a fresh service-account token, and ECI
	// refuses the reused ClientToken with IdempotentParameterMismatch).
	phaseCreating
	// phaseRunning: the instance exists and its status is followed.
	phaseRunning
	// phaseFinal: the status will not change any more: the pod was
	// refused, its instance vanished, or the instance ended for good. An
	// ended instance is still deleted when the pod is.
	phaseFinal
	// phaseDeleting: the pod was deleted and its instance's delete is
	// queued or in flight; it is no longer listed as running.
	phaseDeleting
	// phaseDeleteFailed: the last delete call failed and is retried with
	// backoff; the instance still runs, so the pod is listed again.
	phaseDeleteFailed
	// phaseDeleted: nothing of the pod runs in ECI. The entry is forgotten
	// once the API server lets the pod go.
	phaseDeleted
)

var phaseNames = [...]string{"Waiting", "Creating", "Running", "Final", "Deleting", "DeleteFailed", "Deleted"}

func (p phase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("phase(%d)", p)
}

// transitions are the only moves a pod makes.
var transitions = map[phase][]phase{
	phaseWaiting:      {phaseCreating, phaseRunning, phaseFinal, phaseDeleted}, // attempt; adopted by a sync; refused; deleted before any instance
	phaseCreating:     {phaseWaiting, phaseRunning, phaseFinal, phaseDeleted},  // retry later; created or adopted; refused; deleted mid-call
	phaseRunning:      {phaseFinal, phaseDeleting, phaseDeleted},               // ended or vanished; deleted; collected as an orphan
	phaseFinal:        {phaseDeleting, phaseDeleted},                           // an ended instance is deleted with its pod
	phaseDeleting:     {phaseDeleteFailed, phaseDeleted},                       // the call failed; done
	phaseDeleteFailed: {phaseDeleting, phaseDeleted},                           // retried; collected
	phaseDeleted:      {phaseDeleting},                                         // a create in flight made an instance after all
}

// can reports whether a pod in phase from may move to phase to.
func can(from, to phase) bool {
	for _, p := range transitions[from] {
		if p == to {
			return true
		}
	}
	return false
}
