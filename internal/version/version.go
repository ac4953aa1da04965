// Package version says which vnode a binary is and which Kubernetes it
// speaks. Every binary's --version and the virtual node's kubelet version
// come from here.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	utilversion "k8s.io/apimachinery/pkg/util/version"
)

// release is vnode's version, set at build time by the Makefile and the
// Dockerfile:
//
//	-ldflags "-X github.com/vnode-project/vnode/internal/version.release=v0.2.0"
//
// Without it the version comes from the module or the VCS revision that Go
// recorded in the binary.
var release string

// Version is vnode's version: the -X release, else the module version, else
// "devel" with the VCS revision when Go recorded one.
func Version() string {
	if release != "" {
		return release
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	switch {
	case rev == "":
		return "devel"
	case dirty:
		return "devel-" + rev + "-dirty"
	default:
		return "devel-" + rev
	}
}

// apimachineryModule is the Kubernetes library every vnode binary links
// (this package parses versions with it); its v0.X.Y belongs to Kubernetes
// v1.X.Y, as client-go's and api's do.
const apimachineryModule = "k8s.io/apimachinery"

// Kubernetes is the Kubernetes version whose client libraries vnode is
// built with ("v1.35.4"), or "v1.0.0-unknown" when the binary does not say.
func Kubernetes() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == apimachineryModule {
				return kubernetesOf(d.Version)
			}
		}
	}
	return "v1.0.0-unknown"
}

// kubernetesOf maps a library version (v0.X.Y) to its Kubernetes version.
func kubernetesOf(lib string) string {
	v, err := utilversion.ParseSemantic(lib)
	if err != nil || v.Major() != 0 {
		return "v1.0.0-unknown"
	}
	return "v1." + strings.TrimPrefix(lib, "v0.")
}

// Kubelet is the kubelet version a virtual node reports on its Node:
// "v1.35.4-vnode-v0.2.0".
func Kubelet() string {
	return Kubernetes() + "-vnode-" + Version()
}

// String is what a binary's --version prints.
func String() string {
	return fmt.Sprintf("%s (Kubernetes %s, %s %s/%s)", Version(), Kubernetes(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
