package emulator

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func (e *Emulator) container(p params) (*group, *container, *apiError) {
	g, apiErr := e.lookup(p)
	if apiErr != nil {
		return nil, nil, apiErr
	}
	name := p.get("ContainerName")
	if name == "" {
		return nil, nil, missingParam("ContainerName")
	}
	// An update swaps the container list: read it under the lock.
	e.mu.Lock()
	cs := append(append([]*container{}, g.Containers...), g.InitContainers...)
	e.mu.Unlock()
	for _, c := range cs {
		if c.Name == name {
			return g, c, nil
		}
	}
	return nil, nil, errf(http.StatusBadRequest, "InvalidContainer.NotFound", "The specified container "+name+" is not found.")
}

// describeLog implements DescribeContainerLog with kubelet semantics: lines
// from StartTime (or SinceSeconds ago), the last Tail of them, then at most
// LimitBytes (and never more than ECI's 1 MB); LastTime reads the previous
// instance of the container.
func (e *Emulator) describeLog(p params) (map[string]any, *apiError) {
	g, c, apiErr := e.container(p)
	if apiErr != nil {
		return nil, apiErr
	}
	tail, apiErr := p.int("Tail", 0)
	if apiErr != nil {
		return nil, apiErr
	}
	if tail < 0 || tail > 2000 {
		return nil, invalidParam("Tail", "must be 0-2000")
	}
	limit, apiErr := p.int("LimitBytes", 0)
	if apiErr != nil {
		return nil, apiErr
	}
	if limit < 0 || limit > 1<<20 {
		return nil, invalidParam("LimitBytes", "must be 1-1048576")
	}
	since, apiErr := p.int("SinceSeconds", 0)
	if apiErr != nil {
		return nil, apiErr
	}
	var from time.Time
	if s := p.get("StartTime"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, invalidParam("StartTime", "not RFC 3339")
		}
		from = t
	} else if since > 0 {
		from = time.Now().Add(-time.Duration(since) * time.Second)
	}
	stamps, apiErr := p.bool("Timestamps")
	if apiErr != nil {
		return nil, apiErr
	}
	previous, apiErr := p.bool("LastTime")
	if apiErr != nil {
		return nil, apiErr
	}
	pr, ok := e.runtime.(*processRuntime)
	if !ok {
		return map[string]any{"ContainerName": c.Name, "Content": ""}, nil
	}
	content, err := readLogPage(pr.logPath(g, c.Name, previous), logQuery{from: from, tail: tail, limit: limit, timestamps: stamps})
	if err != nil {
		return nil, errf(0, "InternalError", "reading the log: "+err.Error())
	}
	return map[string]any{"ContainerName": c.Name, "Content": content}, nil
}

type execSession struct {
	group     *group
	container *container
	cmd       []string
	tty       bool
	stdin     bool
	expires   time.Time
}

// execCommand implements ExecContainerCommand: it checks the command and
// returns a one-time WebSocketUri for the session.
func (e *Emulator) execCommand(r *http.Request, p params) (map[string]any, *apiError) {
	g, c, apiErr := e.container(p)
	if apiErr != nil {
		return nil, apiErr
	}
	var cmd []string
	if err := json.Unmarshal([]byte(p.get("Command")), &cmd); err != nil || len(cmd) == 0 {
		if p.get("Command") == "" {
			return nil, missingParam("Command")
		}
		return nil, invalidParam("Command", "must be a JSON array of strings")
	}
	if len(cmd) > 20 {
		return nil, invalidParam("Command", "at most 20 elements")
	}
	for _, a := range cmd {
		if len(a) > 256 {
			return nil, invalidParam("Command", "elements of at most 256 characters")
		}
	}
	tty, apiErr := p.bool("TTY")
	if apiErr != nil {
		return nil, apiErr
	}
	stdin := true
	if p.get("Stdin") != "" {
		if stdin, apiErr = p.bool("Stdin"); apiErr != nil {
			return nil, apiErr
		}
	}
	e.mu.Lock()
	running := g.Status == "Running" && c.CurrentState.State == "Running"
	e.mu.Unlock()
	if !running {
		return nil, errf(http.StatusBadRequest, "IncorrectStatus", "The container "+c.Name+" is not running.")
	}
	if _, ok := e.runtime.(*processRuntime); !ok {
		return nil, errf(http.StatusBadRequest, "OperationDenied", "exec needs the process runtime")
	}
	sync, apiErr := p.bool("Sync")
	if apiErr != nil {
		return nil, apiErr
	}
	if sync {
		if tty {
			return nil, invalidParam("Sync", "Sync needs TTY=false")
		}
		ec, err := e.runtime.(*processRuntime).command(g, c, cmd)
		if err != nil {
			return nil, errf(http.StatusBadRequest, "IncorrectStatus", "The container "+c.Name+" is not running: "+err.Error())
		}
		out, _ := ec.CombinedOutput()
		return map[string]any{"SyncResponse": string(out)}, nil
	}
	token := randomSuffix() + randomSuffix() + randomSuffix()
	e.mu.Lock()
	e.sessions[token] = &execSession{group: g, container: c, cmd: cmd, tty: tty, stdin: stdin, expires: time.Now().Add(30 * time.Second)}
	e.mu.Unlock()
	scheme := "ws://"
	if r.TLS != nil {
		scheme = "wss://"
	}
	return map[string]any{"WebSocketUri": scheme + r.Host + "/exec/?s=" + token}, nil
}

var upgrader = websocket.Upgrader{ReadBufferSize: 32 * 1024, WriteBufferSize: 32 * 1024}

const (
	chanStdin  = 0
	chanStdout = 1
	chanStderr = 2
	chanStatus = 3
	chanResize = 4
	chanClose  = 255
)

func (e *Emulator) serveExec(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("s")
	e.mu.Lock()
	s, ok := e.sessions[token]
	delete(e.sessions, token) // one use
	e.mu.Unlock()
	if !ok || time.Now().After(s.expires) {
		http.Error(w, "unknown or expired session", http.StatusForbidden)
		return
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	var wmu sync.Mutex
	send := func(ch byte, b []byte) {
		wmu.Lock()
		defer wmu.Unlock()
		_ = conn.WriteMessage(websocket.BinaryMessage, append([]byte{ch}, b...))
	}
	// Exec runs inside the container's instance, as its containers do.
	cmd, err := e.runtime.(*processRuntime).command(s.group, s.container, s.cmd)
	if err != nil {
		send(chanStatus, statusJSON(126, err.Error()))
		return
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: s.tty, Setpgid: !s.tty}
	// One reader for the whole session; a closed channel means the client
	// went away.
	msgs := make(chan []byte, 64)
	go func() {
		defer close(msgs)
		for {
			_, msg, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if len(msg) > 0 {
				msgs <- msg
			}
		}
	}()
	var (
		stdin interface {
			Write([]byte) (int, error)
			Close() error
		}
		ptmx  *os.File
		early [][]byte
		// drained is closed when the terminal's output has all been read.
		drained = make(chan struct{})
	)
	if s.tty {
		// Start the process at the client's terminal size: wait briefly
		// for its first resize (kubectl sends one at once), keeping any
		// input that comes first.
		size := &pty.Winsize{Rows: 24, Cols: 80}
		timeout := time.After(time.Second)
	wait:
		for {
			select {
			case msg, ok := <-msgs:
				if !ok {
					return
				}
				if msg[0] == chanResize {
					var sz struct{ Width, Height uint16 }
					if json.Unmarshal(msg[1:], &sz) == nil && sz.Width > 0 && sz.Height > 0 {
						size = &pty.Winsize{Cols: sz.Width, Rows: sz.Height}
					}
					break wait
				}
				early = append(early, msg)
			case <-timeout:
				break wait
			}
		}
		ptmx, err = startOnTerminal(s.group, e.runtime.(*processRuntime), cmd, size)
		if err != nil {
			send(chanStatus, statusJSON(127, err.Error()))
			return
		}
		defer ptmx.Close()
		stdin = ptmx
		go func() {
			defer close(drained)
			buf := make([]byte, 32*1024)
			for {
				n, err := ptmx.Read(buf)
				if n > 0 {
					send(chanStdout, buf[:n])
				}
				if err != nil {
					return
				}
			}
		}()
	} else {
		in, _ := cmd.StdinPipe()
		stdin = in
		cmd.Stdout = writerFunc(func(b []byte) (int, error) { send(chanStdout, b); return len(b), nil })
		cmd.Stderr = writerFunc(func(b []byte) (int, error) { send(chanStderr, b); return len(b), nil })
		if err := cmd.Start(); err != nil {
			send(chanStatus, statusJSON(127, err.Error()))
			return
		}
		if !s.stdin {
			in.Close()
		}
	}
	handle := func(msg []byte) {
		switch msg[0] {
		case chanStdin:
			if s.stdin {
				_, _ = stdin.Write(msg[1:])
			}
		case chanResize:
			var size struct{ Width, Height uint16 }
			if json.Unmarshal(msg[1:], &size) == nil && ptmx != nil {
				_ = pty.Setsize(ptmx, &pty.Winsize{Cols: size.Width, Rows: size.Height})
			}
		case chanClose:
			if len(msg) > 1 && msg[1] == chanStdin {
				if ptmx != nil {
					_, _ = ptmx.Write([]byte{4}) // ^D: end of input on a terminal
				} else {
					stdin.Close()
				}
			}
		}
	}
	go func() {
		for _, m := range early {
			handle(m)
		}
		for msg := range msgs {
			handle(msg)
		}
		// The client went away: end the command.
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
	}()
	err = cmd.Wait()
	code := 0
	msg := ""
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
		msg = ee.Error()
	} else if err != nil {
		code, msg = 126, err.Error()
	}
	if ptmx != nil {
		// The terminal reads EIO once the output is drained and no
		// process holds it; a background process that keeps it open
		// gets a second.
		select {
		case <-drained:
		case <-time.After(time.Second):
		}
	}
	send(chanStatus, statusJSON(code, msg))
	wmu.Lock()
	_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	wmu.Unlock()
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// startOnTerminal starts cmd on a terminal of g's instance at size and
// returns the terminal's master.
func startOnTerminal(g *group, pr *processRuntime, cmd *exec.Cmd, size *pty.Winsize) (*os.File, error) {
	in := pr.instance(g)
	if in == nil {
		return nil, errors.New("the instance is not running")
	}
	master, peer, err := in.OpenPTY()
	if err != nil {
		return nil, err
	}
	defer peer.Close()
	if err := pty.Setsize(master, size); err != nil {
		master.Close()
		return nil, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = peer, peer, peer
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		master.Close()
		return nil, err
	}
	return master, nil
}

func statusJSON(code int, msg string) []byte {
	st := metav1.Status{Status: metav1.StatusSuccess}
	if code != 0 {
		st = metav1.Status{Status: metav1.StatusFailure, Reason: "NonZeroExitCode", Message: msg,
			Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: "ExitCode", Message: strconv.Itoa(code)}}}}
	}
	b, _ := json.Marshal(st)
	return b
}

// usage reads a process's CPU time (ns) and RSS (bytes) from /proc: its
// own run time to the nanosecond (schedstat: stat's utime and stime count
// whole ticks, 0 for minutes for an idle shell, and metrics-server drops a
// container whose counter is 0), plus the time of the children it waited
// for (a shell's commands).
func usage(pid int) (cpuNs, rss uint64) {
	if pid <= 0 {
		return 0, 0
	}
	fields := statFields(strconv.Itoa(pid))
	if len(fields) > 22 {
		tick := uint64(time.Second / 100) // USER_HZ is 100 on Linux
		ut, _ := strconv.ParseUint(fields[11], 10, 64)
		st, _ := strconv.ParseUint(fields[12], 10, 64)
		cut, _ := strconv.ParseUint(fields[13], 10, 64)
		cst, _ := strconv.ParseUint(fields[14], 10, 64)
		own := (ut + st) * tick
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/schedstat"); err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				if ns, err := strconv.ParseUint(f[0], 10, 64); err == nil {
					own = ns
				}
			}
		}
		cpuNs = own + (cut+cst)*tick
		pages, _ := strconv.ParseUint(fields[21], 10, 64)
		rss = pages * uint64(os.Getpagesize())
	}
	return cpuNs, rss
}

type metricRecord struct {
	Timestamp  string            `json:"Timestamp"`
	CPU        map[string]uint64 `json:"CPU"`
	Memory     map[string]uint64 `json:"Memory"`
	Network    map[string]any    `json:"Network"`
	Containers []map[string]any  `json:"Containers"`
}

func (e *Emulator) record(g *group) metricRecord {
	now := time.Now().UTC()
	rec := metricRecord{Timestamp: now.Format(timeFormat), Network: map[string]any{"Interfaces": []map[string]any{{"Name": "eth0", "RxBytes": 0, "TxBytes": 0, "RxErrors": 0, "TxErrors": 0}}}}
	// Status and sizes change (lifecycle, updates): read them under the lock.
	e.mu.Lock()
	containers := append([]*container(nil), g.Containers...)
	running, groupCPU, groupMem := g.Status == "Running", g.Cpu, g.Memory
	e.mu.Unlock()
	var totalCPU, totalMem uint64
	for _, c := range containers {
		var cpuNs, rss uint64
		if pr, ok := e.runtime.(*processRuntime); ok {
			cpuNs, rss = usage(pr.pid(g, c.Name))
		} else if running {
			// sim: deterministic figures that grow with age
			age := uint64(now.Sub(g.created).Seconds())
			cpuNs, rss = age*uint64(time.Millisecond)*10, 64<<20
		}
		totalCPU += cpuNs
		totalMem += rss
		rec.Containers = append(rec.Containers, map[string]any{"Name": c.Name,
			"CPU":    map[string]uint64{"UsageCoreNanoSeconds": cpuNs, "UsageNanoCores": 0, "Limit": uint64(c.Cpu * 1000)},
			"Memory": map[string]uint64{"WorkingSet": rss, "UsageBytes": rss, "Rss": rss}})
	}
	rec.CPU = map[string]uint64{"UsageCoreNanoSeconds": totalCPU, "UsageNanoCores": 0, "Limit": uint64(groupCPU * 1000)}
	rec.Memory = map[string]uint64{"WorkingSet": totalMem, "UsageBytes": totalMem, "Rss": totalMem, "AvailableBytes": uint64(groupMem*(1<<30)) - min(totalMem, uint64(groupMem*(1<<30)))}
	return rec
}

func (e *Emulator) describeMultiMetric(p params) (map[string]any, *apiError) {
	var ids []string
	if err := json.Unmarshal([]byte(p.get("ContainerGroupIds")), &ids); err != nil || len(ids) == 0 {
		if p.get("ContainerGroupIds") == "" {
			return nil, missingParam("ContainerGroupIds")
		}
		return nil, invalidParam("ContainerGroupIds", "must be a JSON array of ids")
	}
	if len(ids) > 20 {
		return nil, invalidParam("ContainerGroupIds", "at most 20 ids")
	}
	var out []map[string]any
	for _, id := range ids {
		e.mu.Lock()
		g, ok := e.groups[id]
		e.mu.Unlock()
		if !ok {
			continue
		}
		out = append(out, map[string]any{"ContainerGroupId": id, "Records": []metricRecord{e.record(g)}})
	}
	return map[string]any{"MonitorDatas": out}, nil
}

func (e *Emulator) describeMetric(p params) (map[string]any, *apiError) {
	g, apiErr := e.lookup(p)
	if apiErr != nil {
		return nil, apiErr
	}
	return map[string]any{"ContainerGroupId": g.ContainerGroupID, "Records": []metricRecord{e.record(g)}}, nil
}
