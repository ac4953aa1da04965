package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vnode-project/vnode/internal/memlimit"
)

// memCgroup is a memory cgroup with a hard limit that a benchmark makes
// for the process it measures: a child of the benchmark's own memory
// cgroup, so that whatever limits the benchmark also limits it. Both
// cgroup v1 (the memory controller at /sys/fs/cgroup/memory) and v2 (a
// unified hierarchy at /sys/fs/cgroup).
type memCgroup struct {
	dir   string
	v2    bool
	limit int64
}

// cgroupStats are what the cgroup's memory controller saw of the process.
type cgroupStats struct {
	peakMiB float64 // highest usage: v1 memory.max_usage_in_bytes, v2 memory.peak
	// limitHits counts the times usage reached the hard limit (and the
	// kernel reclaimed or failed a charge): v1 memory.failcnt, v2
	// memory.events' max.
	limitHits int64
	oomKills  int64 // processes the kernel's OOM killer ended in the group
}

func (s cgroupStats) String() string {
	return fmt.Sprintf("cgroup peak %.0f MiB, hard limit reached %d times, %d OOM kills", s.peakMiB, s.limitHits, s.oomKills)
}

// newMemCgroup makes a fresh memory cgroup limited to limit bytes. It is
// empty: start a process in it with wrap.
func newMemCgroup(limit int64) (*memCgroup, error) {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		return nil, fmt.Errorf("a memory cgroup: /sys/fs/cgroup: %w", err)
	}
	v2 := st.Type == unix.CGROUP2_SUPER_MAGIC
	if !v2 {
		if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err != nil {
			return nil, fmt.Errorf("a memory cgroup: /sys/fs/cgroup is not cgroup v2 and has no cgroup v1 memory controller at /sys/fs/cgroup/memory: %w", err)
		}
	}
	own, err := memlimit.Cgroups(os.DirFS("/"))
	if err != nil {
		return nil, fmt.Errorf("a memory cgroup: %w", err)
	}
	i := slices.IndexFunc(own, func(c memlimit.Cgroup) bool { return c.V2 == v2 })
	if i < 0 {
		return nil, fmt.Errorf("a memory cgroup: /proc/self/cgroup names no memory cgroup (cgroup v2: %v)", v2)
	}
	parent := "/" + own[i].Dir()
	if v2 {
		// A child is limited only if its parent delegates the memory
		// controller; cgroup v2 refuses that to a group holding processes
		// (the benchmark's own) unless it is the root.
		ctl, err := os.ReadFile(filepath.Join(parent, "cgroup.subtree_control"))
		if err != nil {
			return nil, fmt.Errorf("a memory cgroup: %w", err)
		}
		if !slices.Contains(strings.Fields(string(ctl)), "memory") {
			if err := os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte("+memory"), 0o644); err != nil {
				return nil, fmt.Errorf("a memory cgroup: enabling the memory controller for children of %s: %w "+
					"(cgroup v2 allows it only in a group without processes of its own: run the benchmark from a cgroup that delegates memory)", parent, err)
			}
		}
	}
	g := &memCgroup{v2: v2, limit: limit}
	if g.dir, err = os.MkdirTemp(parent, "vnode-bench-"); err != nil {
		return nil, fmt.Errorf("a memory cgroup: %w", err)
	}
	// The limit on memory only: limiting swap too (v1 memsw) stops the
	// kernel counting failcnt, and the benchmark machine has no swap.
	limitFile := filepath.Join(g.dir, own[i].LimitFile())
	if err := os.WriteFile(limitFile, []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		_ = g.remove()
		return nil, fmt.Errorf("a memory cgroup: setting %s: %w", limitFile, err)
	}
	return g, nil
}

// wrap makes cmd start inside the cgroup from its first instruction, so
// that everything it maps or allocates is charged there (its binary
// evicted from the page cache first, to be charged too): on v2 the kernel
// places it (clone3 with CLONE_INTO_CGROUP); on v1 a shell joins the
// group and then execs cmd, keeping its pid. Call the returned function
// once cmd has started.
func (g *memCgroup) wrap(cmd *exec.Cmd) (started func(), err error) {
	if err := evict(cmd.Path); err != nil {
		return nil, err
	}
	if g.v2 {
		f, err := os.Open(g.dir)
		if err != nil {
			return nil, fmt.Errorf("opening cgroup %s: %w", g.dir, err)
		}
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(f.Fd())
		return func() { f.Close() }, nil
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		return nil, err
	}
	cmd.Args = append([]string{"sh", "-c", `echo $$ > "$0" && exec "$@"`, filepath.Join(g.dir, "cgroup.procs"), cmd.Path}, cmd.Args[1:]...)
	cmd.Path = sh
	return func() {}, nil
}

// evict drops file from the page cache, so that the process that maps
// it next (the binary under test, just written by go build and so charged
// to the benchmark's own cgroup) faults it in afresh and is charged for
// it in its own cgroup, as a container starting its binary is.
func evict(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil { // dirty pages are not dropped
		return fmt.Errorf("evicting %s from the page cache: %w", file, err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("evicting %s from the page cache: %w", file, err)
	}
	return nil
}

// stats reads what the memory controller saw, also after the process ended.
func (g *memCgroup) stats() (cgroupStats, error) {
	var s cgroupStats
	if g.v2 {
		peak, err := readInt(filepath.Join(g.dir, "memory.peak"))
		if err != nil {
			return s, err
		}
		ev, err := readKeyed(filepath.Join(g.dir, "memory.events"))
		if err != nil {
			return s, err
		}
		s.peakMiB, s.limitHits, s.oomKills = float64(peak)/(1<<20), ev["max"], ev["oom_kill"]
		return s, nil
	}
	peak, err := readInt(filepath.Join(g.dir, "memory.max_usage_in_bytes"))
	if err != nil {
		return s, err
	}
	if s.limitHits, err = readInt(filepath.Join(g.dir, "memory.failcnt")); err != nil {
		return s, err
	}
	oom, err := readKeyed(filepath.Join(g.dir, "memory.oom_control"))
	if err != nil {
		return s, err
	}
	s.peakMiB, s.oomKills = float64(peak)/(1<<20), oom["oom_kill"]
	return s, nil
}

// remove deletes the cgroup; its processes must have ended.
func (g *memCgroup) remove() error {
	if err := os.Remove(g.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing cgroup %s: %w", g.dir, err)
	}
	return nil
}

func readInt(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}

// readKeyed reads a file of "key value" lines (memory.events,
// memory.oom_control).
func readKeyed(path string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				out[k] = n
			}
		}
	}
	return out, sc.Err()
}
