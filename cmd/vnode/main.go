// Command vnode is VNodectl: it sets a self-managed cluster up for virtual
// nodes, enables their add-ons, and creates, lists, updates and deletes
// virtual nodes through ECI's VirtualNode API.
package main

import (
	"fmt"
	"os"

	"github.com/vnode-project/vnode/vnodectl"
)

func main() {
	if err := vnodectl.NewCommand(os.Stdout, os.Stderr).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
