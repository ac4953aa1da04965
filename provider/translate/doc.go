// Package translate turns a Kubernetes pod into an ECI CreateContainerGroup
// request and an ECI container group back into a pod status. Everything here
// is a pure function of its inputs (the pod, the objects it references, the
// node's configuration, the cloud's answer), so it is table-tested and
// fuzzed without a cluster or a cloud.
//
// A pod ECI cannot run is refused with an *UnsupportedError that says what
// to change; the provider marks such a pod Failed with that reason.
package translate
