package vnodectl

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/vnode-project/vnode/internal/config"
)

// defaultConfig is what `vnode config default` prints: seed 004's example
// with every key the seed documents; optional ones are commented out.
const defaultConfig = `kind: vnode
contexts:
  - name: default
    region-id: cn-hangzhou
    access-key-id: <yourAccessKeyID>
    access-key-secret: <yourAccessKeySecret>
    vswitch-id: vsw-xxxxxxxxxxxxxxxxxxxxx
    security-group-id: sg-xxxxxxxxxxxxxxxxxxxx
    kubeconfig: ~/.vnode/deploy/kubeconfig
    # vnode-name: leave unset: the node is named <region-id>.<VirtualNodeId>
    # resource-group-id: rg-xxxxxxxxxxxxxxxx
    # taints: ["dedicated=eci:NoSchedule"]
    # tags: {team: blue}
    # network-type: vpc          # empty: the public endpoint
    # endpoint: http://127.0.0.1:8880  # vnode: the ECI API address (the local emulator)
current-context: default
`

func (g *globals) configFile() (string, error) {
	if g.configPath != "" {
		return g.configPath, nil
	}
	return config.DefaultPath()
}

// loadConfig reads the vnode config file, saying how to make one when it
// is missing.
func (g *globals) loadConfig() (*config.File, string, error) {
	path, err := g.configFile()
	if err != nil {
		return nil, "", err
	}
	f, err := config.Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, path, fmt.Errorf("no vnode config at %s: run `vnode config default > %s` and edit it", path, path)
	}
	return f, path, err
}

// context returns the context in use (--context, else current-context)
// with the environment's credentials applied and validated.
func (g *globals) context() (*config.Context, *config.File, string, error) {
	f, path, err := g.loadConfig()
	if err != nil {
		return nil, nil, path, err
	}
	c, err := f.Context(g.contextName)
	if err != nil {
		return nil, nil, path, fmt.Errorf("vnode config %s: %w", path, err)
	}
	c.ApplyEnv()
	if err := c.Validate(); err != nil {
		return nil, nil, path, fmt.Errorf("vnode config %s: %w", path, err)
	}
	return c, f, path, nil
}

func newConfigCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show and validate the current context of ~/.vnode/config (secrets masked)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, path, err := g.context()
			if err != nil {
				return err
			}
			out, err := yaml.Marshal(c.Redacted())
			if err != nil {
				return fmt.Errorf("encoding context %q: %w", c.Name, err)
			}
			fmt.Fprintf(g.out, "# %s, context %q: valid\n%s", path, c.Name, out)
			return nil
		},
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "default",
		Short: "Print a template of ~/.vnode/config (redirect it to the file and edit it)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprint(g.out, defaultConfig)
			return err
		},
	}, &cobra.Command{
		Use:   "set-context NAME",
		Short: "Make NAME the current context of ~/.vnode/config",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			f, path, err := g.loadConfig()
			if err != nil {
				return err
			}
			if _, err := f.Context(args[0]); err != nil {
				return fmt.Errorf("vnode config %s: %w", path, err)
			}
			if g.dry {
				fmt.Fprintf(g.out, "would set current-context to %q in %s\n", args[0], path)
				return nil
			}
			if f.CurrentContext == args[0] {
				fmt.Fprintf(g.out, "current-context is already %q\n", args[0])
				return nil
			}
			f.CurrentContext = args[0]
			if err := f.Save(path); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "switched to context %q\n", args[0])
			return nil
		},
	})
	return cmd
}
