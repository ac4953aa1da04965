// Package cli holds what every vnode command does alike before it wires
// its packages together: a context that ends on SIGINT or SIGTERM, and a
// logger at the level --log-level names, which client-go's lines share.
package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

// Start returns a context that ends on SIGINT or SIGTERM (stop releases
// the signals) and a logger at level, or an error naming --log-level.
// client-go's klog lines go through the same logger: one log format.
func Start(parent context.Context, level string) (ctx context.Context, stop context.CancelFunc, logger *logrus.Logger, err error) {
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--log-level: %w", err)
	}
	logger = logrus.New()
	logger.SetLevel(lvl)
	RouteKlog(logger)
	ctx, stop = signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	return ctx, stop, logger, nil
}

// Execute runs a binary's root command and exits non-zero, naming the
// binary, when it fails.
func Execute(cmd *cobra.Command) {
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, cmd.Name()+":", err)
		os.Exit(1)
	}
}
