package vnodectl

import "github.com/spf13/cobra"

func newVNodeCommands(g *globals) []*cobra.Command { return nil }
