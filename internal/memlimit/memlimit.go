// Package memlimit sets the Go runtime's soft memory limit from a
// --memory-limit flag, read against the cgroup the process runs in.
package memlimit

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Usage is the help of a --memory-limit flag, whose default is Auto.
const Usage = "soft memory limit for Go's collector (as GOMEMLIMIT, which wins if set): a quantity such as 270Mi, auto for the container's memory limit less room for the binary's own pages (90% of it, at most the limit less 64Mi) if it has one, or 0 for none"

// Auto is --memory-limit's default: the cgroup's memory limit less room
// for what is not Go heap (see autoLimit).
const Auto = "auto"

// autoRatio is the share of a container's memory limit given to the Go
// heap in "auto" mode; the rest covers stacks, the runtime and cgo, as in
// Prometheus's --auto-gomemlimit.ratio.
const autoRatio = 0.9

// fileReserve is what auto leaves at least beside the Go heap: the cgroup
// also charges the binary's pages mapped from its file (about 50 MiB of
// vnode-kubelet's RSS) and page cache. Under a 320 MiB limit, 10% left
// them 32 MiB: the kernel kept evicting the code the process runs (139,828
// major faults) and a 10,000-pod node stalled at 8,203 pods Running.
const fileReserve = 64 << 20

// autoLimit is the soft limit auto sets under a cgroup limit l: 90% of
// it, at most l less fileReserve, at least half of it.
func autoLimit(l int64) int64 {
	return max(min(int64(float64(l)*autoRatio), l-fileReserve), l/2)
}

// noLimit is what cgroup v1 reports for an unlimited group (a page-rounded
// MaxInt64); anything this large is no limit.
const noLimit = 1 << 60

// Limit is the soft memory limit (GOMEMLIMIT) that --memory-limit
// asks for: "auto" is autoLimit of the container's cgroup memory limit
// (none when it has none), "0" none, otherwise a quantity such as 270Mi. The
// limit only makes the collector run sooner as memory nears it: the Go
// default, twice the live heap, is most of the RSS of a node with many pods.
func Limit(flag string, root fs.FS) (limit int64, source string, err error) {
	switch flag {
	case Auto:
		l, err := cgroupLimit(root)
		if err != nil || l == 0 {
			return 0, "", err
		}
		return autoLimit(l), "the cgroup memory limit less room for the binary's pages", nil
	case "0", "none":
		return 0, "", nil
	}
	q, err := resource.ParseQuantity(flag)
	if err != nil || q.Sign() < 0 {
		return 0, "", fmt.Errorf("--memory-limit %q: want a quantity such as 270Mi, auto or 0", flag)
	}
	return q.Value(), "--memory-limit", nil
}

// Set applies --memory-limit, unless GOMEMLIMIT is set: the
// runtime already obeys the variable, and an operator's explicit setting
// wins.
func Set(flag string, log logrus.FieldLogger) error {
	if os.Getenv("GOMEMLIMIT") != "" {
		return nil
	}
	limit, source, err := Limit(flag, os.DirFS("/"))
	if err != nil || limit == 0 {
		return err
	}
	debug.SetMemoryLimit(limit)
	log.WithFields(logrus.Fields{"limitMiB": limit >> 20, "source": source}).Info("soft memory limit set")
	return nil
}

// Cgroup is one of this process's memory cgroups, as /proc/self/cgroup
// names it: the unified (v2) hierarchy's, or cgroup v1's memory
// controller's.
type Cgroup struct {
	V2   bool
	Path string // in its hierarchy, e.g. /kubepods/pod1/c1
}

// Dir is the cgroup's directory, relative to the file system root, where
// the hierarchies are mounted as usual: sys/fs/cgroup for v2,
// sys/fs/cgroup/memory for v1.
func (c Cgroup) Dir() string { return path.Join(c.mount(), strings.TrimPrefix(c.Path, "/")) }

func (c Cgroup) mount() string {
	if c.V2 {
		return "sys/fs/cgroup"
	}
	return "sys/fs/cgroup/memory"
}

// LimitFile is where the cgroup's hard memory limit is read and set.
func (c Cgroup) LimitFile() string {
	if c.V2 {
		return "memory.max"
	}
	return "memory.limit_in_bytes"
}

// Cgroups are this process's memory cgroups, read from root's
// proc/self/cgroup (root is the file system root): none when there is no
// such file (not Linux).
func Cgroups(root fs.FS) ([]Cgroup, error) {
	f, err := root.Open("proc/self/cgroup")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Cgroup
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-id:controllers:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			out = append(out, Cgroup{V2: true, Path: parts[2]})
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			out = append(out, Cgroup{Path: parts[2]})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading /proc/self/cgroup: %w", err)
	}
	return out, nil
}

// cgroupLimit is the memory limit of this process's cgroup (v2, or v1's
// memory controller), 0 if there is none. root is the file system root.
func cgroupLimit(root fs.FS) (int64, error) {
	cgroups, err := Cgroups(root)
	if err != nil {
		return 0, fmt.Errorf("--memory-limit auto: %w", err)
	}
	var candidates []string
	for _, c := range cgroups {
		// A container's own cgroup namespace shows "/", and its cgroup
		// is mounted at the hierarchy's mount point.
		candidates = append(candidates, path.Join(c.Dir(), c.LimitFile()), path.Join(c.mount(), c.LimitFile()))
	}
	for _, c := range candidates {
		data, err := fs.ReadFile(root, c)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(data))
		if s == "max" {
			return 0, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("--memory-limit auto: /%s holds %q", c, s)
		}
		if n <= 0 || n >= noLimit {
			return 0, nil
		}
		return n, nil
	}
	return 0, nil
}
