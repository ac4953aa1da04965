// Command eci-emulator serves a local Alibaba Cloud ECI API for tests and
// for running vnode without a cloud account.
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/vnode-project/vnode/integration/eciemulator"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "eci-emulator:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var (
		listen, id, secret, runtime, dataDir, region, adminToken string
		scheduling, pending                                      time.Duration
	)
	cmd := &cobra.Command{
		Use:           "eci-emulator",
		Short:         "Serve a local Alibaba Cloud ECI API (2018-08-08)",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" || secret == "" {
				return errors.New("--access-key-id and --access-key-secret are required (or ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET)")
			}
			e, err := eciemulator.New(eciemulator.Config{
				Credentials: map[string]string{id: secret}, Region: region, Runtime: runtime, DataDir: dataDir,
				Delays: eciemulator.Delays{Scheduling: scheduling, Pending: pending}, AdminToken: adminToken, Logger: logrus.New(),
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
			fmt.Fprintf(cmd.OutOrStdout(), "listening on http://%s\n", l.Addr())
			return e.Serve(ctx, l)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:8880", "address to serve the ECI API on")
	f.StringVar(&id, "access-key-id", os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_ID"), "AccessKey id clients sign with")
	f.StringVar(&secret, "access-key-secret", os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET"), "AccessKey secret clients sign with")
	f.StringVar(&runtime, "runtime", "process", "process (run containers as local processes) or sim (run nothing)")
	f.StringVar(&dataDir, "data-dir", "", "directory for sandboxes and logs (default: a temporary one)")
	f.StringVar(&region, "region", "cn-hangzhou", "the region the emulator serves")
	f.StringVar(&adminToken, "admin-token", "", "bearer token for /admin/ (fault injection); empty disables it")
	f.DurationVar(&scheduling, "scheduling-delay", 200*time.Millisecond, "time a new group stays Scheduling")
	f.DurationVar(&pending, "pending-delay", 200*time.Millisecond, "time a new group stays Pending")
	return cmd
}
