// Package eciprofile holds eci-profile's end-to-end tests and benchmark on
// a real control plane: kube-apiserver calls the webhook over TLS (by url:,
// since Endpoints refuse loopback addresses) and kube-scheduler binds the
// pods to Node objects the tests register and keep Ready (no kubelet: pods
// need only bind).
package eciprofile
