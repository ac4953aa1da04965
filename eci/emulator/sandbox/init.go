package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// ready is what PID 1 reports once the instance is set up; anything
// else it reports is what failed.
const ready = "ready"

// readyFD is the descriptor PID 1 reports on.
const readyFD = 3

// runInit is an instance's PID 1: it sets the instance up, reports, then
// reaps the orphans of its PID namespace until it is killed.
func runInit(specJSON string) int {
	// Nothing it starts keeps the report open.
	unix.CloseOnExec(readyFD)
	report := os.NewFile(readyFD, "ready")
	var spec Spec
	err := json.Unmarshal([]byte(specJSON), &spec)
	if err == nil {
		err = setUp(spec)
	}
	var holder int
	if err == nil {
		holder, err = startHolder(spec.Rootless)
	}
	if err != nil {
		fmt.Fprint(report, err.Error())
		return 1
	}
	fmt.Fprintf(report, "%s %d", ready, holder)
	report.Close()
	children := make(chan os.Signal, 1)
	signal.Notify(children, unix.SIGCHLD)
	for range children {
		for {
			var ws unix.WaitStatus
			if pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
	return 0
}

// step wraps err with what was being done.
func step(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

func setUp(spec Spec) error {
	// Nothing mounted here reaches the host, nor the other way.
	if err := step("making the instance's mounts private", unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")); err != nil {
		return err
	}
	if err := step("setting the hostname", unix.Sethostname([]byte(spec.Hostname))); err != nil {
		return err
	}
	dirFD, err := unix.Open(spec.Dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return step("opening the instance's directory", err)
	}
	defer unix.Close(dirFD)
	if err := step("entering the instance's directory", unix.Fchdir(dirFD)); err != nil {
		return err
	}
	// The volumes' sources, opened now: after the pivot only the
	// descriptors reach them. A source is resolved beneath the instance's
	// directory, whatever links its volumes hold.
	sources := make([]int, len(spec.Mounts))
	for i, m := range spec.Mounts {
		fd, err := unix.Openat2(dirFD, m.Source, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS})
		if err != nil {
			return fmt.Errorf("opening volume source %s: %w", m.Source, err)
		}
		sources[i] = fd
	}
	// The instance's root as PID 1 names it.
	uid, gid := HostRoot()
	if spec.Rootless {
		uid, gid = 0, 0
	}
	layerOpts := "mode=0755"
	if spec.LayerSize != "" {
		layerOpts += ",size=" + spec.LayerSize
	}
	if err := step("mounting the writable layer (tmpfs)", unix.Mount("tmpfs", "rootfs", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, layerOpts)); err != nil {
		return err
	}
	for _, d := range []string{"rootfs/upper", "rootfs/work", "rootfs/merged"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return step("making the layer's directories", err)
		}
	}
	// The host's files are not the instance root's (it is an
	// unprivileged uid outside): a directory the layer holds is. So the
	// top directories are made in the layer first, the instance root's,
	// with the host's modes: the instance can write in them.
	if err := seedLayer("rootfs/upper", uid, gid); err != nil {
		return err
	}
	if spec.Rootless {
		if err := mountRootsParts(); err != nil {
			return err
		}
	} else if err := step("mounting the overlay over the host's root (overlayfs)",
		unix.Mount("overlay", "rootfs/merged", "overlay", 0, "lowerdir=/,upperdir=rootfs/upper,workdir=rootfs/work")); err != nil {
		return err
	}
	if err := os.Chdir("rootfs/merged"); err != nil {
		return step("entering the instance's root", err)
	}
	if err := step("mounting /proc of the instance's PID namespace", unix.Mount("proc", "proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")); err != nil {
		return err
	}
	if err := setUpDev(); err != nil {
		return err
	}
	if err := step("mounting /tmp", unix.Mount("tmpfs", "tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777")); err != nil {
		return err
	}
	if err := bindVolumes(filepath.Join(spec.Dir, "rootfs", "merged"), spec.Mounts, sources); err != nil {
		return err
	}
	// pivot_root(".", ".") stacks the old root on the new one; detaching
	// it leaves no way back to the host's mounts.
	if err := step("pivoting into the instance's root", unix.PivotRoot(".", ".")); err != nil {
		return err
	}
	if err := step("detaching the host's root", unix.Unmount(".", unix.MNT_DETACH)); err != nil {
		return err
	}
	if err := step("entering the instance's root", os.Chdir("/")); err != nil {
		return err
	}
	for _, p := range spec.Hide {
		// Resolved in the instance's root now; a path it lacks needs no
		// hiding.
		if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
			continue
		}
		if err := unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=4k,mode=0755"); err != nil {
			return fmt.Errorf("hiding %s: %w", p, err)
		}
	}
	return nil
}

// seedLayer makes, in upper, the host root's top directories with the
// modes they have on the host, owned by uid and gid.
func seedLayer(upper string, uid, gid int) error {
	// The layer's root is the instance's "/".
	if err := os.Lchown(upper, uid, gid); err != nil {
		return step("giving the instance its root directory", err)
	}
	var dirs []string
	tops, err := os.ReadDir("/")
	if err != nil {
		return step("reading the host's root", err)
	}
	for _, t := range tops {
		if t.IsDir() && t.Name() != "proc" && t.Name() != "sys" && t.Name() != "dev" {
			dirs = append(dirs, "/"+t.Name())
		}
	}
	for _, d := range dirs {
		fi, err := os.Lstat(d)
		if err != nil || !fi.IsDir() {
			continue
		}
		p := filepath.Join(upper, d)
		if err := os.Mkdir(p, fi.Mode().Perm()); err != nil {
			return step("making "+d+" in the layer", err)
		}
		if err := os.Chmod(p, fi.Mode().Perm()|fi.Mode()&os.ModeSticky); err != nil {
			return step("making "+d+" in the layer", err)
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			return step("making "+d+" in the layer", err)
		}
	}
	return nil
}

// setUpDev mounts a minimal /dev: the harmless host devices bound in, a
// devpts and /dev/shm of the instance's own.
func setUpDev() error {
	if err := step("mounting /dev", unix.Mount("tmpfs", "dev", "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755")); err != nil {
		return err
	}
	for _, n := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		f, err := os.OpenFile("dev/"+n, os.O_CREATE|os.O_WRONLY, 0o666)
		if err != nil {
			return step("making /dev/"+n, err)
		}
		f.Close()
		if err := step("binding /dev/"+n, unix.Mount("/dev/"+n, "dev/"+n, "", unix.MS_BIND, "")); err != nil {
			return err
		}
	}
	for link, to := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
		"stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"} {
		if err := os.Symlink(to, "dev/"+link); err != nil {
			return step("linking /dev/"+link, err)
		}
	}
	for _, d := range []string{"dev/pts", "dev/shm"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return step("making /"+d, err)
		}
	}
	if err := step("mounting /dev/pts", unix.Mount("devpts", "dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")); err != nil {
		return err
	}
	return step("mounting /dev/shm", unix.Mount("tmpfs", "dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"))
}

// bindVolumes binds each volume's source (open as sources[i]) at its
// target in the instance's root, merged (the working directory). Targets
// are made and resolved inside that root, so a link in the host's files
// cannot lead a mount point out of it.
func bindVolumes(merged string, mounts []Mount, sources []int) error {
	host, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return step("opening the host's root", err)
	}
	defer unix.Close(host)
	if err := step("entering the instance's root", unix.Chroot(".")); err != nil {
		return err
	}
	targets := make([]int, len(mounts))
	var werr error
	for i, m := range mounts {
		if targets[i], werr = mountPoint(sources[i], m.Target); werr != nil {
			break
		}
	}
	// Back to the host's root, whatever happened: the mounts are made
	// there and the pivot follows.
	if err := unix.Fchdir(host); err == nil {
		err = unix.Chroot(".")
	}
	if err == nil {
		err = os.Chdir(merged)
	}
	if err := step("leaving the instance's root", err); err != nil {
		return err
	}
	if werr != nil {
		return werr
	}
	for i, m := range mounts {
		tree, err := unix.OpenTree(sources[i], "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH|unix.AT_RECURSIVE)
		if err != nil {
			return fmt.Errorf("cloning volume %s: %w", m.Source, err)
		}
		if m.ReadOnly {
			err = unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
		}
		if err == nil {
			err = unix.MoveMount(tree, "", targets[i], "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
		}
		unix.Close(tree)
		unix.Close(targets[i])
		unix.Close(sources[i])
		if err != nil {
			return fmt.Errorf("mounting volume %s at %s: %w", m.Source, m.Target, err)
		}
	}
	return nil
}

// mountPoint makes target (a directory when the source open as src is
// one, else a file) and opens it.
func mountPoint(src int, target string) (int, error) {
	var st unix.Stat_t
	if err := unix.Fstat(src, &st); err != nil {
		return -1, step("reading a volume's source", err)
	}
	target = filepath.Clean("/" + target)
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return -1, step("making mount point "+target, err)
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return -1, step("making mount point "+target, err)
		}
		f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o644)
		if err != nil {
			return -1, step("making mount point "+target, err)
		}
		f.Close()
	}
	fd, err := unix.Open(target, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	return fd, step("opening mount point "+target, err)
}

// startHolder starts the process that holds the instance's user
// namespace: root inside, HostRoot's range outside. Commands run in it;
// it does not own the instance's mount namespace, so nothing in it can
// mount, unmount or remount anything there. It returns the holder's pid
// in the instance.
func startHolder(rootless bool) (int, error) {
	uids, gids := holderMaps(rootless)
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{"vnode-sandbox-user"}
	cmd.Env = []string{holdEnv + "=1"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER,
		UidMappings:                uids,
		GidMappings:                gids,
		GidMappingsEnableSetgroups: !rootless, // a rootless instance's namespace denies setgroups
		Pdeathsig:                  syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return 0, step("creating the instance's user namespace", err)
	}
	return cmd.Process.Pid, nil
}

// hold holds a user namespace until killed.
func hold() {
	for {
		_ = unix.Pause()
	}
}

// mountRootsParts builds a rootless instance's root: in a user namespace
// the host's root cannot be a lower layer (its submounts are locked, and
// overlayfs will not clone a mount with locked submounts), so the root is
// a tmpfs with an overlay over each of the host root's top directories
// (its links copied), a directory with locked submounts left empty. In a
// user namespace overlayfs keeps its attributes in user.* extended
// attributes (userxattr).
func mountRootsParts() error {
	if err := step("mounting the instance's root directory (tmpfs)", unix.Mount("tmpfs", "rootfs/merged", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755")); err != nil {
		return err
	}
	tops, err := os.ReadDir("/")
	if err != nil {
		return step("reading the host's root", err)
	}
	for _, t := range tops {
		p := filepath.Join("rootfs/merged", t.Name())
		switch {
		case t.Type()&os.ModeSymlink != 0:
			to, err := os.Readlink("/" + t.Name())
			if err == nil {
				err = os.Symlink(to, p)
			}
			if err != nil {
				return step("linking /"+t.Name(), err)
			}
		case t.IsDir():
			if err := os.Mkdir(p, 0o755); err != nil {
				return step("making /"+t.Name(), err)
			}
			if t.Name() == "proc" || t.Name() == "sys" || t.Name() == "dev" {
				continue
			}
			work := filepath.Join("rootfs/work", t.Name())
			if err := os.Mkdir(work, 0o700); err != nil {
				return step("making /"+t.Name()+"'s work directory", err)
			}
			// A directory with locked submounts cannot be a lower layer:
			// it stays empty.
			_ = unix.Mount("overlay", p, "overlay", 0, "lowerdir=/"+t.Name()+",upperdir=rootfs/upper/"+t.Name()+",workdir="+work+",userxattr")
		}
	}
	return nil
}
