// Command eci-emulator serves a local Alibaba Cloud ECI API for tests and
// for running vnode without a cloud account.
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/vnode-project/vnode/cmd/internal/cli"
	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/eci/emulator/vnodehost"
	"github.com/vnode-project/vnode/internal/version"
)

func main() { cli.Execute(newCommand()) }

func newCommand() *cobra.Command {
	var (
		listen, id, secret, runtime, dataDir, region, adminToken string
		tlsCert, tlsKey, vnodeKubelet                            string
		useTLS, hostNodes                                        bool
		joinTimeout                                              time.Duration
		delays                                                   emulator.Delays
		quotaScale                                               float64
		tunnel                                                   vnodehost.Tunnel
		network                                                  vnodehost.Network
	)
	cmd := &cobra.Command{
		Use:           "eci-emulator",
		Version:       version.String(),
		Short:         "Serve a local Alibaba Cloud ECI API (2018-08-08)",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" || secret == "" {
				return errors.New("--access-key-id and --access-key-secret are required (or ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET)")
			}
			if quotaScale < 0 {
				return errors.New("--quota-scale must be 0 (no quotas) or positive")
			}
			if (tunnel.Server == "") != (tunnel.CAFile == "") {
				return errors.New("--vnode-tunnel-server and --vnode-tunnel-ca go together: the hosted nodes verify the tunnel servers with the CA")
			}
			if err := network.Validate(); err != nil {
				return fmt.Errorf("--vnode-netns, --vnode-ip: %w", err)
			}
			logger := logrus.New()
			cli.RouteKlog(logger) // vnodehost's clients log through client-go
			e, err := emulator.New(emulator.Config{
				Credentials: map[string]string{id: secret}, Region: region, Runtime: runtime, DataDir: dataDir,
				Delays: delays, AdminToken: adminToken, Logger: logger,
				TLS: useTLS, TLSCertFile: tlsCert, TLSKeyFile: tlsKey,
				Quota: emulator.Quota{Off: quotaScale == 0, Scale: quotaScale},
			})
			if err != nil {
				return err
			}
			defer e.Close()
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("--listen %s: %w", listen, err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if f := e.CertFile(); f != "" {
				logger.WithField("certificate", f).Info("serving https; clients trust this certificate")
			}
			if hostNodes {
				host, err := vnodehost.New(vnodehost.Config{Emulator: e, Endpoint: e.Scheme() + "://" + l.Addr().String(),
					Binary: vnodeKubelet, Dir: filepath.Join(e.DataDir(), "vnodes"), JoinTimeout: joinTimeout, Log: logger, Tunnel: tunnel,
					Network: network})
				if err != nil {
					// Pods still run; only CreateVirtualNode's nodes wait.
					logger.WithError(err).Warn("not hosting virtual nodes: those created with a kubeconfig stay Pending (--vnode-kubelet names the binary)")
				} else {
					go func() { _ = host.Run(ctx) }()
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "listening on %s://%s\n", e.Scheme(), l.Addr())
			return e.Serve(ctx, l)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:8880", "address to serve the ECI API on")
	f.StringVar(&id, "access-key-id", os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_ID"), "AccessKey id clients sign with")
	f.StringVar(&secret, "access-key-secret", os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET"), "AccessKey secret clients sign with")
	f.StringVar(&runtime, "runtime", "process", "process (run containers as local processes, each instance isolated) or sim (run nothing)")
	f.StringVar(&dataDir, "data-dir", "", "directory for the state (kept across restarts), sandboxes and logs (default: a temporary one)")
	f.StringVar(&region, "region", "cn-hangzhou", "the region the emulator serves")
	f.StringVar(&adminToken, "admin-token", "", "bearer token for /admin/ (fault injection); empty disables it")
	f.DurationVar(&delays.Scheduling, "scheduling-delay", 200*time.Millisecond, "time a new group stays Scheduling")
	f.DurationVar(&delays.Pending, "pending-delay", 200*time.Millisecond, "time a new group stays Pending")
	f.DurationVar(&delays.VirtualNode, "virtual-node-delay", 500*time.Millisecond, "time a new virtual node stays Pending")
	f.DurationVar(&delays.ImageCache, "image-cache-delay", 2*time.Second, "time an image cache takes to build (Preparing, then Creating)")
	f.BoolVar(&useTLS, "tls", false, "serve https, with a self-signed certificate for 127.0.0.1 and localhost made in <data-dir>/tls unless --tls-cert/--tls-key are given")
	f.StringVar(&tlsCert, "tls-cert", "", "PEM certificate to serve https with (implies --tls; needs --tls-key)")
	f.StringVar(&tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	f.Float64Var(&quotaScale, "quota-scale", 1, "multiplies ECI's published API quotas, enforced per action and AccessKey (answering Throttling.User beyond them); 0 enforces none")
	f.BoolVar(&hostNodes, "host-virtual-nodes", true, "run each virtual node created with a kubeconfig as a local vnode-kubelet process, as the cloud runs it")
	f.StringVar(&tunnel.Server, "vnode-tunnel-server", "", "host:port of the edge tunnel servers hosted TLS-bootstrap nodes join (their --tunnel-server); empty: no tunnel")
	f.StringVar(&tunnel.ServerName, "vnode-tunnel-server-name", "", "name in the tunnel servers' certificate (default: --vnode-tunnel-server's host)")
	f.StringVar(&tunnel.CAFile, "vnode-tunnel-ca", "", "CA bundle the hosted nodes verify the tunnel servers with (required with --vnode-tunnel-server)")
	f.StringVar(&network.Namespace, "vnode-netns", "", "network namespace (ip netns) the hosted nodes run in, so their kubelet API is on a non-loopback address kube-apiserver proxies to; --listen and the API server must be reachable from it")
	f.StringVar(&network.IP, "vnode-ip", "", "the hosted nodes' address in --vnode-netns: each registers and serves its kubelet API there")
	f.DurationVar(&joinTimeout, "vnode-join-timeout", vnodehost.DefaultJoinTimeout, "how long a hosted virtual node may take to be Ready before it is Failed with the reason (unreachable API server, certificate not approved, Node not Ready); rejected credentials fail it at once")
	f.StringVar(&vnodeKubelet, "vnode-kubelet", "", "the vnode-kubelet binary hosted virtual nodes run (default: the one beside eci-emulator, then PATH)")
	return cmd
}
