package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
)

// Probe starts a small instance (a volume, a command inside) and says
// what the kernel or the privileges here do not allow, or nil when
// instances can be isolated.
func Probe() error {
	dir, err := os.MkdirTemp("", "vnode-sandbox-probe-")
	if err != nil {
		return fmt.Errorf("making a directory to try an instance in: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Join(dir, "volumes", "v"), 0o700); err != nil {
		return err
	}
	in, err := Start(dir, Spec{Hostname: "probe", Mounts: []Mount{{Source: "volumes/v", Target: "/probe", ReadOnly: true}}, LayerSize: "1m"})
	if err != nil {
		return err
	}
	defer in.Stop()
	out, err := in.Command("", []string{"/bin/sh", "-c", "hostname"}, nil).CombinedOutput()
	if err != nil || string(out) != "probe\n" {
		return fmt.Errorf("running a command in an instance with nsenter: %v: %s", err, out)
	}
	return nil
}
