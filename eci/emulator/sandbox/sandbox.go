// Package sandbox isolates one instance (container group) of the ECI
// emulator's process runtime: it sets up the instance's namespaces and
// mounts, and runs commands inside them.
//
// An instance is a PID 1 of its own: the binary that links this package
// re-executed (/proc/self/exe) in new mount, PID and UTS namespaces. It
// makes its mounts private, sets the hostname, and builds the instance's
// root: the host's root file system (not its other mounts) as a read-only
// lower layer under a tmpfs writable layer (overlayfs), so writes are the
// instance's alone and go with it; a fresh /proc of its PID namespace; a
// minimal /dev (null, zero, full, random, urandom, tty bound from the
// host, a devpts and /dev/shm of its own); a tmpfs /tmp; its volumes
// bound at their mount paths (read-only where asked). Then it pivots into
// that root, detaches the host's, and starts a holder of the instance's
// user namespace: root inside, unprivileged outside (HostRoot). The
// instance's processes run in that user namespace, which owns no mount
// namespace: they cannot mount, unmount or remount anything. The host
// network is kept (no network namespace): pods' IntranetIP handling, the
// kubelet API and the tunnel reach processes on the host's loopback.
//
// As root, PID 1 is root in the host's user namespace and the holder's
// namespace maps root to a range of its own (100000-165535). Rootless (the
// emulator is not root), PID 1 is root only in a user namespace of its
// own that maps root to the emulator's user, and the holder's namespace
// is nested in it; the host's root cannot be one lower layer there (its
// submounts are locked), so each of its top directories is one.
//
// Commands run inside through nsenter(1) (util-linux): Go cannot setns
// into a user or mount namespace from its multi-threaded runtime.
//
// The re-execution is caught by this package's init function, so every
// binary that links the process runtime (the emulator's mains and test
// binaries alike) serves as an instance's PID 1 without a hook to forget:
// a forgotten hook would run the whole binary again as PID 1.
package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// specEnv carries an instance's Spec to its PID 1, and marks the process
// as one.
const specEnv = "VNODE_SANDBOX_SPEC"

// holdEnv marks the process that holds an instance's user namespace.
const holdEnv = "VNODE_SANDBOX_HOLD"

// The uid and gid range an instance's users map to when the emulator
// runs as root: above the usual subordinate ranges' start, unprivileged
// on the host.
const (
	rootRangeStart = 100000
	rootRangeSize  = 65536
)

func init() {
	if s, ok := os.LookupEnv(specEnv); ok {
		os.Exit(runInit(s))
	}
	if _, ok := os.LookupEnv(holdEnv); ok {
		hold()
	}
}

// Mount is one volume of an instance: Source, a path inside the
// instance's directory, bound at Target inside the instance.
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly"`
}

// Spec is what an instance's PID 1 sets up.
type Spec struct {
	Dir      string  `json:"dir"` // set by Start
	Hostname string  `json:"hostname"`
	Mounts   []Mount `json:"mounts"`
	// LayerSize bounds the writable layer (a tmpfs size, e.g. "1g");
	// empty is the tmpfs default (half the memory).
	LayerSize string `json:"layerSize,omitempty"`
	// Hide are host directories the instance must not read (the
	// emulator's data): an empty read-only tmpfs covers each. Rootless,
	// the user's home is hidden too.
	Hide []string `json:"hide,omitempty"`
	// Rootless (set by Start): the emulator is not root, so PID 1 runs
	// in a user namespace of its own (the emulator's uid as root).
	Rootless bool `json:"rootless,omitempty"`
}

// HostRoot is the host uid and gid the instance's root is: a range of
// its own when the emulator is root, else the emulator's user. Files the
// instance must own (its volumes) belong to them.
func HostRoot() (uid, gid int) {
	if os.Geteuid() != 0 {
		return os.Geteuid(), os.Getegid()
	}
	return rootRangeStart, rootRangeStart
}

// holderMaps map the holder's user namespace's root to HostRoot, as its
// parent (PID 1's namespace) names it.
func holderMaps(rootless bool) (uids, gids []syscall.SysProcIDMap) {
	if rootless {
		m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}}
		return m, m
	}
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: rootRangeStart, Size: rootRangeSize}}
	return m, m
}

// Instance is a running instance's PID 1.
type Instance struct {
	cmd      *exec.Cmd
	nsenter  string
	rootless bool
	holder   string // the holder's pid in the instance
	done     chan struct{}
}

// Start starts an instance in dir, a directory of its own that holds its
// volumes' sources (Spec.Mounts) and gets its layer's mount point.
// Nothing of the instance is left once Stop returns but dir's files.
func Start(dir string, spec Spec) (*Instance, error) {
	rootless := os.Geteuid() != 0
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, fmt.Errorf("finding nsenter (util-linux) to run commands in an instance: %w", err)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o700); err != nil {
		return nil, fmt.Errorf("creating the instance's layer mount point: %w", err)
	}
	// The instance's root owns its volumes: they are its to read and
	// write. The directories above stay the emulator's (0700), so no
	// other instance or host user reaches them.
	if !rootless {
		uid, gid := HostRoot()
		if err := chownTree(filepath.Join(dir, "volumes"), uid, gid); err != nil {
			return nil, fmt.Errorf("giving the instance its volumes: %w", err)
		}
	}
	spec.Dir, spec.Rootless = dir, rootless
	if home, err := os.UserHomeDir(); rootless && err == nil {
		// Rootless, the instance's root is the user: not for its files.
		spec.Hide = append(spec.Hide, home)
	}
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	rd, wr, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{"vnode-sandbox", dir} // ps shows whose it is
	cmd.Env = []string{specEnv + "=" + string(js)}
	cmd.ExtraFiles = []*os.File{wr} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS,
		// The instance dies with the emulator; its PID namespace, and
		// every process in it, with it.
		Pdeathsig: syscall.SIGKILL,
	}
	if rootless {
		// Root only in a user namespace of its own: the emulator's user
		// outside.
		a := cmd.SysProcAttr
		a.Cloneflags |= syscall.CLONE_NEWUSER
		a.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		a.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
		a.Credential = &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true}
	}
	if err := cmd.Start(); err != nil {
		wr.Close()
		return nil, fmt.Errorf("creating the instance's mount, PID and UTS namespaces: %w", err)
	}
	wr.Close()
	in := &Instance{cmd: cmd, nsenter: nsenter, rootless: rootless, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(in.done) }()
	msg, _ := io.ReadAll(rd)
	holder, ok := strings.CutPrefix(string(msg), ready+" ")
	if !ok {
		in.Stop()
		if len(msg) == 0 {
			msg = []byte("the instance's PID 1 ended before it was set up")
		}
		return nil, errors.New(string(msg))
	}
	in.holder = holder
	return in, nil
}

// Pid is the instance's PID 1 as the host sees it.
func (in *Instance) Pid() int { return in.cmd.Process.Pid }

// Done is closed once the instance's PID 1 has ended.
func (in *Instance) Done() <-chan struct{} { return in.done }

// Command is argv run inside the instance as its root, in workdir (made
// if missing; empty is /) with env (nothing else of the emulator's).
func (in *Instance) Command(workdir string, argv, env []string) *exec.Cmd {
	var args []string
	if in.rootless {
		// nsenter enters PID 1's user namespace (the emulator's user owns
		// it) and its mount, PID and UTS namespaces; a second nsenter,
		// inside, the holder's user namespace, which owns no mount.
		// Both keep their uid (already root there): these namespaces deny
		// setgroups, which nsenter would otherwise call.
		args = []string{"--target", strconv.Itoa(in.Pid()), "--user", "--mount", "--pid", "--uts", "--root", "--wd", "--preserve-credentials", "--",
			"nsenter", "--user=/proc/" + in.holder + "/ns/user", "--preserve-credentials", "--"}
	} else {
		// nsenter enters the mount, PID and UTS namespaces as root, then
		// the holder's user namespace (reached through the instance's root
		// and /proc), where it becomes the instance's root.
		userNS := fmt.Sprintf("/proc/%d/root/proc/%s/ns/user", in.Pid(), in.holder)
		args = []string{"--target", strconv.Itoa(in.Pid()), "--mount", "--pid", "--uts", "--user=" + userNS, "--root", "--wd", "--"}
	}
	if workdir != "" && workdir != "/" {
		// nsenter's --wd=DIR is a host path: change directory inside.
		args = append(args, "/bin/sh", "-c", `mkdir -p -- "$0" 2>/dev/null; cd -- "$0" && exec "$@"`, workdir)
	}
	cmd := exec.Command(in.nsenter, append(args, argv...)...)
	cmd.Env = env
	return cmd
}

// Stop kills the instance's PID 1 and so every process of the instance
// (the kernel ends a PID namespace with its init) and its mounts.
func (in *Instance) Stop() {
	_ = in.cmd.Process.Kill()
	<-in.done
}

// chownTree gives every file under root (if it exists) to uid and gid.
func chownTree(root string, uid, gid int) error {
	err := filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// OpenPTY opens a terminal of the instance's own devpts: the process
// given the peer sees its terminal as /dev/pts/N inside, as a container
// runtime's console does.
func (in *Instance) OpenPTY() (master, peer *os.File, err error) {
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/root/dev/pts/ptmx", in.Pid()), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("opening the instance's terminal multiplexer: %w", err)
	}
	master = os.NewFile(uintptr(fd), "ptmx")
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlocking a terminal: %w", err)
	}
	pfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		err = errno
		master.Close()
		return nil, nil, fmt.Errorf("opening a terminal's peer: %w", err)
	}
	return master, os.NewFile(pfd, "pts"), nil
}
