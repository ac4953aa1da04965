// Command vnode is VNodectl: it sets a self-managed cluster up for virtual
// nodes, enables their add-ons, and creates, lists, updates and deletes
// virtual nodes through ECI's VirtualNode API.
package main

import (
	"fmt"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/vnode-project/vnode/cmd/internal/cli"
	"github.com/vnode-project/vnode/vnodectl"
)

func main() {
	// A command's output is for its user: client-go's warnings and errors
	// only, in the one log format, on stderr.
	klogTo := logrus.New()
	klogTo.SetOutput(os.Stderr)
	klogTo.SetLevel(logrus.WarnLevel)
	cli.RouteKlog(klogTo)
	if err := vnodectl.NewCommand(os.Stdout, os.Stderr).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
