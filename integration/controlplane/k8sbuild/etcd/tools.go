//go:build tools

// Package etcd pins the etcd release that the test control plane stores its
// state in; go.etcd.io/etcd/server/v3 is itself the etcd main package.
package etcd

import _ "go.etcd.io/etcd/server/v3"
