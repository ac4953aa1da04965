package emulator

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vnode-project/vnode/eci/emulator/sandbox"
)

// runtime runs (or pretends to run) a group's containers.
type runtime interface {
	start(g *group)
	stop(g *group, grace time.Duration)
	// resume takes over a group that was Running when a previous
	// emulator on the same DataDir stopped.
	resume(g *group)
}

// simRuntime runs nothing: containers are Running and Ready at once.
type simRuntime struct{ e *Emulator }

func (s simRuntime) start(g *group) {
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	if g.Status != "Pending" && g.Status != "Restarting" {
		return
	}
	g.Status = "Running"
	now := time.Now().UTC().Format(time.RFC3339Nano)
	for _, c := range g.InitContainers {
		c.CurrentState = state{State: "Terminated", Reason: "Completed", StartTime: now, FinishTime: now}
	}
	for _, c := range g.Containers {
		c.CurrentState = state{State: "Running", StartTime: now}
		c.Ready = true
	}
	s.e.changedLocked(g)
}

func (simRuntime) stop(*group, time.Duration) {}

// resume has nothing to do: sim containers have no process to lose, so
// they are still Running.
func (simRuntime) resume(*group) {}

// standIn is what a container without a command runs: something long-lived
// that stops cleanly on SIGTERM, like most images' entrypoints.
var standIn = []string{"/bin/sh", "-c", `trap "exit 0" TERM; while :; do sleep 1; done`}

// processRuntime runs every container as a local process group inside
// its instance's isolation (package sandbox): the instance's own mount,
// PID and UTS namespaces, its root the host's read-only beneath a
// writable layer, its volumes at their mount paths, its processes root in
// a user namespace and unprivileged outside. It keeps the host's network
// (no network namespace): the kubelet API, the tunnel and pods'
// IntranetIP handling reach processes on the host's loopback.
type processRuntime struct {
	root string
	e    *Emulator

	mu        sync.Mutex
	procs     map[string]*proc             // group id + "/" + container
	stops     map[string]bool              // groups being stopped: no restarts
	instances map[string]*sandbox.Instance // group id -> its running instance
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the exit is recorded in the container's state
	code int           // the exit code, once done
}

// newProcessRuntime refuses, with probe's reason, where instances cannot
// be isolated: it never runs a pod's processes unisolated.
func newProcessRuntime(root string, e *Emulator, probe func() error) (*processRuntime, error) {
	if err := probe(); err != nil {
		return nil, fmt.Errorf("the process runtime cannot isolate instances here (%w); use the sim runtime (--runtime sim) instead", err)
	}
	return &processRuntime{root: root, e: e, procs: map[string]*proc{}, stops: map[string]bool{}, instances: map[string]*sandbox.Instance{}}, nil
}

func (r *processRuntime) sandbox(g *group) string { return filepath.Join(r.root, g.ContainerGroupID) }

func (r *processRuntime) logPath(g *group, c string, previous bool) string {
	name := c + ".log"
	if previous {
		name = c + ".previous.log"
	}
	return filepath.Join(r.sandbox(g), "logs", name)
}

// env is a container's environment, with the instance IP resolved.
func (r *processRuntime) env(g *group, c *container) []string {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=" + g.hostName(), "HOME=/root"}
	for _, v := range c.EnvironmentVars {
		val := v.Value
		if v.FieldPath == "status.podIP" {
			val = g.IntranetIP
		}
		env = append(env, v.Key+"="+val)
	}
	return env
}

// instance is g's running instance, nil when it has none.
func (r *processRuntime) instance(g *group) *sandbox.Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.instances[g.ContainerGroupID]
}

// command is argv run in g's instance as container c runs.
func (r *processRuntime) command(g *group, c *container, argv []string) (*exec.Cmd, error) {
	in := r.instance(g)
	if in == nil {
		return nil, errors.New("the instance is not running")
	}
	return in.Command(c.WorkingDir, argv, r.env(g, c)), nil
}

// mounts are the instance's volume mounts: its containers share one
// mount namespace, so a path is mounted once, read-write if any
// container mounts it read-write.
func mounts(g *group) []sandbox.Mount {
	var out []sandbox.Mount
	at := map[string]int{}
	for _, c := range append(append([]*container{}, g.InitContainers...), g.Containers...) {
		for _, m := range c.VolumeMounts {
			src := filepath.Join("volumes", m.Name, m.SubPath)
			if i, ok := at[m.MountPath]; ok {
				out[i].ReadOnly = out[i].ReadOnly && m.ReadOnly
				continue
			}
			at[m.MountPath] = len(out)
			out = append(out, sandbox.Mount{Source: src, Target: m.MountPath, ReadOnly: m.ReadOnly})
		}
	}
	return out
}

func argv(c *container) []string {
	if len(c.Commands) > 0 {
		return append(append([]string{}, c.Commands...), c.Args...)
	}
	if len(c.Args) > 0 {
		return c.Args
	}
	return standIn
}

func (r *processRuntime) start(g *group) {
	if err := privateDir(filepath.Join(r.sandbox(g), "logs")); err != nil {
		r.e.log.WithError(err).Error("creating a sandbox")
		return
	}
	// An update swaps these lists: take them under the lock.
	r.e.mu.Lock()
	inits, containers, volumes := g.InitContainers, g.Containers, g.Volumes
	// The emulator's data (its credentials, every instance's volumes and
	// logs) is hidden from the instance: rootless, the instance's root is
	// the emulator's user and could read it.
	spec := sandbox.Spec{Hostname: g.hostName(), Mounts: mounts(g), LayerSize: layerSize(g.Memory)}
	if data, err := filepath.Abs(r.e.cfg.DataDir); err == nil {
		spec.Hide = []string{data}
	}
	r.e.mu.Unlock()
	// Volumes are directories in the sandbox, the instance's to use;
	// configuration volumes' files hold secrets: private unless their
	// mode says otherwise, in 0700 directories whatever DataDir's mode
	// and the umask.
	for _, v := range volumes {
		dir := filepath.Join(r.sandbox(g), "volumes", v.Name)
		if err := privateDir(dir); err != nil {
			r.e.log.WithError(err).WithField("volume", v.Name).Error("creating a volume directory")
			continue
		}
		for _, f := range v.ConfigFile {
			p := filepath.Join(dir, f.Path)
			if err := privateDir(filepath.Dir(p)); err != nil {
				r.e.log.WithError(err).WithField("volume", v.Name).Error("creating a volume directory")
				continue
			}
			if err := writeFileMode(p, f.Content, f.mode(v)); err != nil {
				r.e.log.WithError(err).WithField("volume", v.Name).Error("writing a volume file")
			}
		}
	}
	// A subPath of a volume is made when missing, as the kubelet does.
	for _, m := range spec.Mounts {
		if _, err := os.Lstat(filepath.Join(r.sandbox(g), m.Source)); errors.Is(err, os.ErrNotExist) {
			if err := privateDir(filepath.Join(r.sandbox(g), m.Source)); err != nil {
				r.e.log.WithError(err).WithField("path", m.Source).Error("creating a volume's subPath")
			}
		}
	}
	r.mu.Lock()
	delete(r.stops, g.ContainerGroupID)
	r.mu.Unlock()
	in, err := sandbox.Start(r.sandbox(g), spec)
	if err != nil {
		r.e.log.WithError(err).WithField("group", g.ContainerGroupID).Error("starting an instance")
		r.e.mu.Lock()
		for _, c := range append(append([]*container{}, inits...), containers...) {
			c.CurrentState = state{State: "Waiting", Reason: "RunContainerError", Message: err.Error()}
		}
		g.Status = "Failed"
		g.FailedTime = time.Now().UTC().Format(timeFormat)
		r.e.addEventLocked(g, "Warning", "FailedCreatePodSandBox", "Failed to create the instance's sandbox: "+err.Error())
		r.e.mu.Unlock()
		return
	}
	r.mu.Lock()
	if old := r.instances[g.ContainerGroupID]; old != nil {
		defer old.Stop()
	}
	r.instances[g.ContainerGroupID] = in
	r.mu.Unlock()
	go func() {
		for _, c := range inits {
			if code := r.runToEnd(g, c); code != 0 {
				// Stopped, not failed.
				if r.stopping(g) {
					return
				}
				r.e.mu.Lock()
				g.Status = "Failed"
				g.FailedTime = time.Now().UTC().Format(timeFormat)
				r.e.addEventLocked(g, "Warning", "InitContainerFailed", fmt.Sprintf("init container %s exited with %d", c.Name, code))
				r.e.mu.Unlock()
				return
			}
		}
		// Containers start first, so a Running group has running containers.
		procs := make([]*proc, len(containers))
		for i, c := range containers {
			procs[i], _ = r.spawn(g, c)
		}
		if r.stopping(g) {
			return
		}
		r.e.mu.Lock()
		if g.Status == "Pending" || g.Status == "Restarting" {
			g.Status = "Running"
		}
		r.e.addEventLocked(g, "Normal", "Started", "Started the container group")
		r.e.mu.Unlock()
		for i, c := range containers {
			if procs[i] != nil {
				go r.supervise(g, c, procs[i])
			}
		}
	}()
}

// stopping: stop was called for g and no start since.
func (r *processRuntime) stopping(g *group) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stops[g.ContainerGroupID]
}

// runToEnd runs an init container to completion.
func (r *processRuntime) runToEnd(g *group, c *container) int {
	p, err := r.spawn(g, c)
	if err != nil {
		return 128
	}
	<-p.done
	return p.code
}

// supervise runs a container and restarts it per the restart policy.
func (r *processRuntime) supervise(g *group, c *container, p *proc) {
	for {
		<-p.done
		code := p.code
		// Stopped (deleted, expired, restarted or updated): whoever
		// stopped it decides what runs next.
		if r.stopping(g) || !r.current(g, c, p) {
			return
		}
		r.e.mu.Lock()
		policy := g.RestartPolicy
		r.e.mu.Unlock()
		if policy != "Always" && (policy != "OnFailure" || code == 0) {
			r.settle(g)
			return
		}
		time.Sleep(time.Second) // a small CrashLoopBackOff
		// Stopped during the back-off: no new run.
		if r.stopping(g) || !r.current(g, c, p) {
			return
		}
		r.e.mu.Lock()
		c.RestartCount++
		r.e.changedLocked(g)
		r.e.mu.Unlock()
		_ = os.Rename(r.logPath(g, c.Name, false), r.logPath(g, c.Name, true))
		var err error
		if p, err = r.spawn(g, c); err != nil {
			return
		}
	}
}

// current: p is still the registered run of container c (a stop
// unregisters it, a new start registers another).
func (r *processRuntime) current(g *group, c *container, p *proc) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.procs[g.ContainerGroupID+"/"+c.Name] == p
}

// settle sets the group's final status once no container runs any more.
func (r *processRuntime) settle(g *group) {
	r.e.mu.Lock()
	defer r.e.mu.Unlock()
	failed := false
	for _, c := range g.Containers {
		if c.CurrentState.State != "Terminated" {
			return
		}
		failed = failed || c.CurrentState.ExitCode != 0
	}
	now := time.Now().UTC().Format(timeFormat)
	if failed {
		g.Status, g.FailedTime = "Failed", now
	} else {
		g.Status, g.SucceededTime = "Succeeded", now
	}
	r.e.changedLocked(g)
}

func (r *processRuntime) spawn(g *group, c *container) (*proc, error) {
	cmd, err := r.command(g, c, argv(c))
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// A log may print secrets: the user's alone, like the volume files.
	logf, err := os.OpenFile(r.logPath(g, c.Name, false), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err == nil {
		err = logf.Chmod(0o600) // a log an older emulator left 0644
		if err != nil {
			logf.Close()
		}
	}
	if err != nil {
		return nil, err
	}
	lw := &lineStamper{w: logf}
	cmd.Stdout, cmd.Stderr = lw, lw
	if err := cmd.Start(); err != nil {
		logf.Close()
		r.e.mu.Lock()
		c.CurrentState = state{State: "Waiting", Reason: "RunContainerError", Message: err.Error()}
		r.e.addEventLocked(g, "Warning", "Failed", fmt.Sprintf("Error: failed to start container %s: %v", c.Name, err))
		r.e.mu.Unlock()
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	r.e.mu.Lock()
	prev := c.CurrentState
	if prev.State == "Terminated" {
		c.PreviousState = prev
	}
	c.CurrentState = state{State: "Running", StartTime: time.Now().UTC().Format(time.RFC3339Nano)}
	c.Ready = true
	r.e.addEventLocked(g, "Normal", "Started", "Started container "+c.Name)
	r.e.mu.Unlock()
	// A stop that came while this process started has not seen it: it is
	// not registered, and ends at once.
	r.mu.Lock()
	stopping := r.stops[g.ContainerGroupID]
	if !stopping {
		r.procs[g.ContainerGroupID+"/"+c.Name] = p
	}
	r.mu.Unlock()
	// The exit is recorded (after Running above) before done closes, so
	// whoever waits for done (stop, before an update swaps the containers)
	// sees the final state.
	go func() { _ = cmd.Wait(); lw.flush(); logf.Close(); p.code = r.finished(g, c, p); close(p.done) }()
	if stopping {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return nil, errors.New("the group is being stopped")
	}
	return p, nil
}

func (r *processRuntime) finished(g *group, c *container, p *proc) int {
	code := p.cmd.ProcessState.ExitCode()
	sig := 0
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		sig = int(ws.Signal())
		code = 128 + sig
	}
	reason := "Completed"
	if code != 0 {
		reason = "Error"
	}
	r.e.mu.Lock()
	c.CurrentState = state{State: "Terminated", ExitCode: code, Signal: sig, Reason: reason,
		StartTime: c.CurrentState.StartTime, FinishTime: time.Now().UTC().Format(time.RFC3339Nano)}
	c.Ready = false
	r.e.changedLocked(g)
	r.e.mu.Unlock()
	return code
}

// resume takes over a group that was Running when the previous emulator
// stopped. Its processes died with that emulator, which is what a host
// restart does to a pod, so it is handled as one: every container that
// was not yet Terminated becomes Terminated with Reason Unknown and exit
// code 255 (what the kubelet reports for containers lost in a reboot),
// with a SandboxChanged event; then the restart policy decides. Always and
// OnFailure (255 is a failure) start the group again, init containers
// first, each lost container's RestartCount one up and its log of the lost
// run kept as the previous log; Never leaves the group Failed.
func (r *processRuntime) resume(g *group) {
	r.e.mu.Lock()
	restarts := g.RestartPolicy != "Never"
	now := time.Now().UTC().Format(time.RFC3339Nano)
	var lost []*container
	markLost := func(cs []*container, count bool) {
		for _, c := range cs {
			if c.CurrentState.State == "Terminated" {
				continue
			}
			c.CurrentState = state{State: "Terminated", Reason: "Unknown", ExitCode: 255, StartTime: c.CurrentState.StartTime, FinishTime: now,
				Message: "the process was lost when the emulator stopped"}
			c.Ready = false
			if count && restarts {
				c.RestartCount++
			}
			lost = append(lost, c)
		}
	}
	markLost(g.InitContainers, false)
	markLost(g.Containers, true)
	if len(lost) > 0 {
		r.e.addEventLocked(g, "Warning", "SandboxChanged", "Pod sandbox changed (the emulator restarted), it will be killed and re-created.")
	}
	r.e.mu.Unlock()
	if len(lost) == 0 || !restarts {
		r.settle(g)
		return
	}
	for _, c := range lost {
		_ = os.Rename(r.logPath(g, c.Name, false), r.logPath(g, c.Name, true))
	}
	r.start(g)
}

func (r *processRuntime) stop(g *group, grace time.Duration) {
	r.e.mu.Lock()
	cs := append(append([]*container{}, g.InitContainers...), g.Containers...)
	r.e.mu.Unlock()
	r.mu.Lock()
	r.stops[g.ContainerGroupID] = true
	var ps []*proc
	for _, c := range cs {
		if p, ok := r.procs[g.ContainerGroupID+"/"+c.Name]; ok {
			ps = append(ps, p)
			delete(r.procs, g.ContainerGroupID+"/"+c.Name)
		}
	}
	r.mu.Unlock()
	for _, p := range ps {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	}
	deadline := time.After(grace)
	for _, p := range ps {
		select {
		case <-p.done:
		case <-deadline:
		}
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	// The instance goes with its processes: its PID 1 killed, the kernel
	// ends what is left in its PID namespace and drops its mounts.
	r.mu.Lock()
	in := r.instances[g.ContainerGroupID]
	delete(r.instances, g.ContainerGroupID)
	r.mu.Unlock()
	if in != nil {
		in.Stop()
	}
	// A deleted group's sandbox (volumes, logs) goes with it.
	r.e.mu.Lock()
	_, kept := r.e.groups[g.ContainerGroupID]
	r.e.mu.Unlock()
	if !kept {
		if err := os.RemoveAll(r.sandbox(g)); err != nil {
			r.e.log.WithError(err).WithField("group", g.ContainerGroupID).Warn("removing a deleted group's sandbox")
		}
	}
}

// pid returns the main process of a running container (as the host sees
// it), for metrics: the child nsenter started in the instance.
func (r *processRuntime) pid(g *group, c string) int {
	r.mu.Lock()
	p, ok := r.procs[g.ContainerGroupID+"/"+c]
	r.mu.Unlock()
	if !ok || p.cmd.Process == nil {
		return 0
	}
	select {
	case <-p.done:
		return 0
	default:
		return childOf(p.cmd.Process.Pid)
	}
}

// childOf is a child of process pid (0 if none), found in /proc: the
// kernel's children lists are not always built in.
func childOf(pid int) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if fields := statFields(e.Name()); len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			return child
		}
	}
	return 0
}

// statFields are the fields of /proc/<pid>/stat after "pid (comm)" (comm
// may hold spaces and parentheses): state, ppid, ...; nil if unreadable.
func statFields(pid string) []string {
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return nil
	}
	return strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
}

// layerSize bounds an instance's writable layer by its memory (GiB), as
// the layer is memory.
func layerSize(memGiB float64) string {
	if memGiB <= 0 {
		return ""
	}
	return strconv.FormatInt(int64(memGiB*(1<<30)), 10)
}

// lineStamper prefixes each output line with its RFC 3339 time, the form
// DescribeContainerLog returns with Timestamps=true.
type lineStamper struct {
	mu      sync.Mutex
	w       io.Writer
	partial []byte
}

func (l *lineStamper) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	data := append(l.partial, p...)
	l.partial = nil
	// One write per chunk the process wrote, not one per line.
	var out bytes.Buffer
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		out.WriteString(time.Now().UTC().Format(time.RFC3339Nano))
		out.WriteByte(' ')
		out.Write(data[:i+1])
		data = data[i+1:]
	}
	if out.Len() > 0 {
		if _, err := l.w.Write(out.Bytes()); err != nil {
			return 0, err
		}
	}
	l.partial = append([]byte(nil), data...)
	return len(p), nil
}

func (l *lineStamper) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		fmt.Fprintf(l.w, "%s %s\n", time.Now().UTC().Format(time.RFC3339Nano), l.partial)
		l.partial = nil
	}
}

// privateDir makes dir and its missing parents 0700, and makes dir 0700 if
// it already was there with a wider mode.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}

// writeFileMode writes data to path with mode, also when path already
// exists with another mode (os.WriteFile keeps an existing mode).
func writeFileMode(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
