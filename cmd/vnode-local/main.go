// Command vnode-local runs vnode on this machine for people and for CI: it
// builds the pinned Kubernetes control plane into the cache, starts it on
// loopback, and (up) runs the whole system on the embedded ECI emulator.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vnode-project/vnode/integration/controlplane"
	"github.com/vnode-project/vnode/integration/local"
	"github.com/vnode-project/vnode/internal/version"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "vnode-local:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "vnode-local",
		Version:       version.String(),
		Short:         "Run vnode and a real Kubernetes control plane on this machine",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newBuildCommand(), newClusterCommand(), newUpCommand())
	return root
}

func newBuildCommand() *cobra.Command {
	var opts controlplane.BuildOptions
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build etcd, kube-apiserver, kube-scheduler, kube-controller-manager and kubectl into the cache",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Progress = cmd.OutOrStdout()
			bins, err := controlplane.EnsureBinaries(cmd.Context(), opts)
			if err != nil {
				return err
			}
			state := "already built"
			if bins.Built {
				state = "built"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "control plane %s (Kubernetes %s, etcd %s) %s in %s\n",
				"binaries", controlplane.KubernetesVersion, controlplane.EtcdVersion, state, bins.Dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&opts.CacheDir, "cache-dir", "", "cache root (default $VNODE_CACHE_DIR, $XDG_CACHE_HOME/vnode or ~/.cache/vnode)")
	return cmd
}

func newClusterCommand() *cobra.Command {
	var opts controlplane.Options
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Start etcd, kube-apiserver, kube-scheduler and kube-controller-manager on loopback until interrupted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			out := cmd.OutOrStdout()
			opts.Progress = out
			cp, err := controlplane.Start(ctx, opts)
			if err != nil {
				return err
			}
			defer cp.Stop()
			fmt.Fprintf(out, "control plane ready at %s (logs in %s)\n", cp.APIServerURL, cp.Dir+"/logs")
			fmt.Fprintf(out, "export KUBECONFIG=%s\n", cp.KubeconfigPath)
			fmt.Fprintf(out, "then try: %s get namespaces\n", cp.Binaries.Path(controlplane.Kubectl))
			fmt.Fprintln(out, "press Ctrl-C to stop")
			<-ctx.Done()
			fmt.Fprintln(out, "stopping")
			return nil
		},
	}
	cmd.Flags().StringVar(&opts.Dir, "dir", "", "directory for certificates, data and logs (default: a temporary one, removed on exit)")
	cmd.Flags().IntVar(&opts.APIServerPort, "port", 0, "kube-apiserver port on 127.0.0.1 (default: a free port)")
	cmd.Flags().BoolVar(&opts.DisableCSRApprover, "disable-csr-approver", false, "turn off kube-controller-manager's built-in CSR approver")
	return cmd
}

func newUpCommand() *cobra.Command {
	var o local.Options
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the control plane, the ECI emulator and a virtual node with a sample Deployment, until interrupted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			out := cmd.OutOrStdout()
			o.Out = out
			s, err := local.Start(ctx, o)
			if err != nil {
				return err
			}
			defer s.Stop()
			kubectl := s.CP.Binaries.Path(controlplane.Kubectl)
			fmt.Fprintf(out, "vnode is running: virtual node %s on the local ECI emulator (config %s)\n\n", s.NodeName, s.ConfigPath)
			fmt.Fprintf(out, "export KUBECONFIG=%s\n", s.CP.KubeconfigPath)
			fmt.Fprintf(out, "alias kubectl=%s\n\n", kubectl)
			fmt.Fprintln(out, "then try:")
			fmt.Fprintln(out, "  kubectl get nodes -o wide")
			fmt.Fprintln(out, "  kubectl get pods -o wide")
			fmt.Fprintln(out, "  kubectl logs -f deploy/hello")
			fmt.Fprintln(out, `  kubectl exec deploy/hello -- sh -c 'echo hello from inside; hostname'`)
			fmt.Fprintln(out, "  kubectl scale deploy/hello --replicas=5")
			fmt.Fprintln(out, "  kubectl describe pod -l app=hello   # ECI annotations and events")
			fmt.Fprintln(out, "press Ctrl-C to stop everything")
			<-ctx.Done()
			fmt.Fprintln(out, "stopping")
			return nil
		},
	}
	cmd.Flags().StringVar(&o.Dir, "dir", "", "directory for state and logs (default: a temporary one, removed on exit)")
	cmd.Flags().StringVar(&o.Manifests, "manifests", "manifests", "the repository's manifests directory")
	cmd.Flags().StringVar(&o.NodeName, "node-name", "cn-hangzhou.vnd-local", "name of the virtual node")
	cmd.Flags().BoolVar(&o.Sample, "sample", true, "apply manifests/samples/hello.yaml and wait for it to run")
	return cmd
}
