// Package vnodectl is the vnode CLI (Alibaba's VNodectl, seed 004): cluster
// setup, validate and clean; add-ons; DaemonSet exclusion; the vnode config
// file; and virtual nodes through ECI's VirtualNode API.
package vnodectl

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/vnode-project/vnode/internal/version"
)

// globals are the flags every command takes.
type globals struct {
	kubeconfig        string
	dry               bool
	kubernetesVersion string
	configPath        string
	contextName       string
	out, errOut       io.Writer
}

// NewCommand returns the vnode command tree writing to out and errOut.
func NewCommand(out, errOut io.Writer) *cobra.Command {
	g := &globals{out: out, errOut: errOut}
	root := &cobra.Command{
		Use:           "vnode",
		Short:         "Set a self-managed Kubernetes cluster up for virtual nodes on Elastic Container Instance, and manage them",
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if g.kubernetesVersion != "" {
				return checkKubernetesVersion(g.kubernetesVersion, "--kubernetes-version")
			}
			return nil
		},
	}
	root.SetOut(out)
	root.SetErr(errOut)
	pf := root.PersistentFlags()
	pf.StringVar(&g.kubeconfig, "kubeconfig", "", "the cluster admin's kubeconfig (default $KUBECONFIG, then ~/.kube/config)")
	pf.BoolVar(&g.dry, "dry", false, "validate on the client and print what would be created or called, changing nothing")
	pf.StringVar(&g.kubernetesVersion, "kubernetes-version", "", fmt.Sprintf("the cluster's Kubernetes version, instead of asking the API server (supported: %s)", supportedRange()))
	pf.StringVar(&g.configPath, "config", "", "the vnode config file (default $VNODE_CONFIG, then ~/.vnode/config)")
	pf.StringVar(&g.contextName, "context", "", "the config context to use (default current-context)")
	root.AddCommand(newConfigCommand(g), newClusterCommand(g), newAddonCommand(g), newDaemonSetsCommand(g))
	root.AddCommand(newVNodeCommands(g)...)
	return root
}
