// Command vnode-kubelet runs a virtual node: a Kubernetes node whose pods
// run as Alibaba Cloud ECI container groups.
package main

import (
	"github.com/spf13/cobra"

	"github.com/vnode-project/vnode/cmd/internal/cli"
	"github.com/vnode-project/vnode/internal/version"
)

func main() { cli.Execute(newCommand()) }

func newCommand() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:     "vnode-kubelet",
		Version: version.String(),
		Short:   "Run a virtual node whose pods run on Alibaba Cloud ECI",
		Long: `vnode-kubelet registers a node labelled type=virtual-kubelet, tainted
virtual-kubelet.io/provider=alibabacloud:NoSchedule, and runs every pod bound to
it as an ECI container group. Its settings come from a context of the vnode
config file (~/.vnode/config); flags override the file.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), o)
		},
	}
	o.addFlags(cmd)
	return cmd
}
