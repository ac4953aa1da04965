// printversion prints what a vnode binary's --version would; the version
// package's test builds it, because test binaries record no dependencies.
package main

import (
	"fmt"

	"github.com/vnode-project/vnode/internal/version"
)

func main() {
	fmt.Println(version.Kubelet())
}
