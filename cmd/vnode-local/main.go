// Command vnode-local runs vnode on this machine for people and for CI: it
// builds the pinned Kubernetes control plane into the cache, starts it on
// loopback, and (up) runs the whole system on the embedded ECI emulator.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/vnode-project/vnode/cmd/internal/cli"
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
		Short: "Build etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kubectl and metrics-server into the cache",
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
			// make run serves kubectl top with it.
			ms, err := controlplane.EnsureMetricsServer(cmd.Context(), opts)
			if err != nil {
				return err
			}
			state = "already built"
			if ms.Built {
				state = "built"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "metrics-server %s %s in %s\n", controlplane.MetricsServerVersion, state, ms.Dir)
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
		Short: "Run seed 004's procedure on this machine: control plane, ECI emulator, vnode cluster setup, add-ons, vnode create, a sample Deployment; until interrupted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			out := cmd.OutOrStdout()
			// client-go's info lines are chatter here: below a newcomer's view.
			klogTo := logrus.New()
			klogTo.SetOutput(out)
			klogTo.SetLevel(logrus.WarnLevel)
			cli.RouteKlog(klogTo)
			o.Out = out
			s, err := local.Start(ctx, o)
			if err != nil {
				return err
			}
			defer s.Stop()
			kubectl := s.CP.Binaries.Path(controlplane.Kubectl)
			fmt.Fprintf(out, "\nvnode is running: virtual node %s, hosted by the local ECI emulator (logs in %s)\n\n", s.NodeName, filepath.Join(s.CP.Dir, "logs"))
			fmt.Fprintf(out, "export KUBECONFIG=%s\n", s.CP.KubeconfigPath)
			fmt.Fprintf(out, "export VNODE_CONFIG=%s\n", s.ConfigPath)
			fmt.Fprintf(out, "alias kubectl=%s\n", kubectl)
			if vnode := filepath.Join(s.BinDir, "vnode"); fileExists(vnode) {
				fmt.Fprintf(out, "alias vnode=%s\n", vnode)
			} else {
				fmt.Fprintln(out, "alias vnode='go run ./cmd/vnode'")
			}
			fmt.Fprintln(out, "\nthen try:")
			fmt.Fprintln(out, "  vnode list")
			addons := "--health-url eci-profile=" + s.ECIProfileHealth
			if t := s.Tunnel; t != nil {
				addons += " --health-url edge-tunnel=" + t.HealthURL + " --health-ca " + t.CAFile
			}
			fmt.Fprintf(out, "  vnode addon list %s   # add-ons outside the cluster: found by Lease or health endpoint\n", addons)
			fmt.Fprintln(out, "  kubectl get nodes -o wide")
			fmt.Fprintln(out, "  kubectl get csr                       # approved by vnode-approver")
			if s.Network != nil {
				fmt.Fprintf(out, "  sudo ip netns exec %s ss -ltnp          # the node's own network: its kubelet API on %s\n", s.Network.Name, s.Network.IP)
			}
			fmt.Fprintf(out, "  kubectl -n %s get pods -o wide\n", local.SampleNamespace)
			fmt.Fprintf(out, "  kubectl -n %s get deploy hello -o jsonpath='{.spec.template.spec.nodeSelector}'   # empty: eci-profile adds it to the pods\n", local.SampleNamespace)
			fmt.Fprintf(out, "  kubectl -n %s logs -f deploy/hello\n", local.SampleNamespace)
			fmt.Fprintf(out, "  kubectl -n %s exec deploy/hello -- sh -c 'echo hello from inside; hostname'\n", local.SampleNamespace)
			if s.Network != nil {
				fmt.Fprintf(out, "  kubectl get --raw /api/v1/nodes/%s/proxy/stats/summary   # the node's stats through the API server and the edge tunnel\n", s.NodeName)
			} else {
				fmt.Fprintf(out, "  kubectl get --raw /api/v1/nodes/%s/proxy/stats/summary   # refused without root: the node is on 127.0.0.1\n", s.NodeName)
			}
			if t := s.Tunnel; t != nil {
				fmt.Fprintf(out, "  curl -s --cacert %s --cert %s --key %s %s | grep ^vnode_tunnel   # the tunnel's sessions and streams\n", t.CAFile, t.CertFile, t.KeyFile, t.MetricsURL)
			}
			fmt.Fprintf(out, "  kubectl -n %s scale deploy/hello --replicas=5\n", local.SampleNamespace)
			fmt.Fprintf(out, "  kubectl -n %s describe pod -l app=hello   # ECI annotations and events\n", local.SampleNamespace)
			fmt.Fprintln(out, "  kubectl top node                      # metrics-server scrapes the virtual node's /metrics/resource")
			fmt.Fprintf(out, "  kubectl -n %s top pod\n", local.SampleNamespace)
			fmt.Fprintln(out, "press Ctrl-C to stop everything")
			<-ctx.Done()
			fmt.Fprintln(out, "stopping")
			return nil
		},
	}
	cmd.Flags().StringVar(&o.Dir, "dir", "", "directory for state and logs (default: a temporary one, removed on exit)")
	cmd.Flags().StringVar(&o.Manifests, "manifests", "manifests", "the repository's manifests directory")
	cmd.Flags().StringVar(&o.BinDir, "bin-dir", "", "directory of vnode-kubelet, vnode-approver, eci-profile and edge-tunnel-server (default: beside vnode-local, else built from the module)")
	cmd.Flags().BoolVar(&o.Sample, "sample", true, "apply manifests/samples/hello.yaml and wait for it to run")
	return cmd
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}
