package emulator

import (
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	sdkeci "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"
)

// A pod's processes run isolated in their instance: what they write, delete
// or remount leaves the host unchanged; its volumes are at their mount
// paths with their modes, an init container's writes to an emptyDir are
// the main container's to read, its hostname is the requested one, exec
// runs inside, and nothing of it (mount, process, directory) is left once
// it is deleted.
func TestInstanceIsolation(t *testing.T) {
	// The data dir on the host's root file system (not a tmpfs /tmp),
	// where the pod could see it unless it is hidden.
	dir := hostDir(t, "/var/tmp", 0o700)
	e, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "process", DataDir: dir})
	c := sdkClient(t, ep, testID, testSecret)

	// A file the pod can see (the host's root is its lower layer, /var/tmp
	// is on it) in a directory everyone may write.
	victimDir := hostDir(t, "/var/tmp", 0o777)
	victim := filepath.Join(victimDir, "keep")
	if err := os.WriteFile(victim, []byte("host"), 0o666); err != nil {
		t.Fatal(err)
	}
	etcFile := "/etc/" + filepath.Base(victimDir)
	tmpFile := "/tmp/" + filepath.Base(victimDir)

	req := createRequest("iso", "tok-iso")
	req.RestartPolicy = "Never"
	req.QueryParams["HostName"] = "web-0"
	req.Volume = &[]sdkeci.CreateContainerGroupVolume{
		{Name: "shared", Type: "EmptyDirVolume"},
		{Name: "cfg", Type: "ConfigFileVolume", ConfigFileVolume: sdkeci.CreateContainerGroupConfigFileVolume{
			ConfigFileToPath: &[]sdkeci.CreateContainerGroupConfigFileToPath{
				{Path: "secret", Content: base64.StdEncoding.EncodeToString([]byte("s3cret")), Mode: "256"}, // 0400
				{Path: "conf/app.conf", Content: base64.StdEncoding.EncodeToString([]byte("k=v"))}}}}}
	req.QueryParams["Volume.2.ConfigFileVolume.DefaultMode"] = "420" // 0644
	req.InitContainer = &[]sdkeci.CreateContainerGroupInitContainer{{Name: "init", Image: "busybox",
		Command:     sh("echo from-init > /shared/init.txt"),
		VolumeMount: &[]sdkeci.CreateContainerGroupVolumeMount{{Name: "shared", MountPath: "/shared"}}}}
	app := &(*req.Container)[0]
	app.VolumeMount = &[]sdkeci.CreateContainerGroupVolumeMount{
		{Name: "shared", MountPath: "/shared"}, {Name: "cfg", MountPath: "/etc/app", ReadOnly: "true"}}
	app.Command = sh(strings.Join([]string{
		"echo x > " + etcFile + " && echo wrote-etc",
		"echo x > " + tmpFile + " && echo wrote-tmp",
		"rm -f " + victim + " 2>/dev/null && [ ! -e " + victim + " ] && echo removed-victim",
		"mount -o remount,rw / 2>/dev/null; echo remount-root=$?",
		"mount -o remount,rw /etc/app 2>/dev/null; echo remount-volume=$?",
		"umount /etc/app 2>/dev/null; echo umount-volume=$?",
		"echo y 2>/dev/null > /etc/app/secret; echo write-readonly=$?",
		"echo hostname=$(hostname)",
		"echo datadir-entries=$(ls -A " + dir + " 2>/dev/null | wc -l)",
		"echo home-entries=$(ls -A '" + os.Getenv("HOME") + "' 2>/dev/null | wc -l)",
		"echo init-wrote=$(cat /shared/init.txt)",
		"stat -c 'mode %a %n' /etc/app/secret /etc/app/conf/app.conf",
		"echo secret=$(cat /etc/app/secret)",
		"echo pid=$$",
		"echo done",
		"sleep 60",
	}, "; "))
	r, err := c.CreateContainerGroup(req)
	if err != nil {
		t.Fatal(err)
	}
	id := r.ContainerGroupId
	var log string
	waitFor(t, "the pod's checks", func() bool {
		l := sdkeci.CreateDescribeContainerLogRequest()
		l.Scheme, l.ContainerGroupId, l.ContainerName = "http", id, "app"
		lr, err := c.DescribeContainerLog(l)
		if err == nil {
			log = lr.Content
		}
		return strings.Contains(log, "done\n")
	})
	wants := []string{"wrote-etc\n", "wrote-tmp\n", "write-readonly=",
		"hostname=web-0\n", "datadir-entries=0\n", "init-wrote=from-init\n", "mode 400 /etc/app/secret\n", "mode 644 /etc/app/conf/app.conf\n",
		"secret=s3cret\n"}
	if os.Geteuid() == 0 {
		// Rootless, a host directory of another user cannot be copied up
		// (its owner has no uid inside): the delete fails there.
		wants = append(wants, "removed-victim\n")
	} else {
		// Rootless, the instance's root is the user: its home is hidden.
		wants = append(wants, "home-entries=0\n")
	}
	for _, want := range wants {
		if !strings.Contains(log, want) {
			t.Errorf("the pod printed no %q:\n%s", want, log)
		}
	}
	for _, refused := range []string{"remount-root=0\n", "remount-volume=0\n", "umount-volume=0\n", "write-readonly=0\n"} {
		if strings.Contains(log, refused) {
			t.Errorf("the pod could %q:\n%s", refused, log)
		}
	}
	// Its own PID namespace: PID 1 is the instance's, the shell a low one.
	if strings.Contains(log, "pid=1\n") || !strings.Contains(log, "pid=") {
		t.Errorf("pid in the pod:\n%s", log)
	}
	for _, p := range []string{etcFile, tmpFile} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the pod's write reached the host: %s: %v", p, err)
			os.Remove(p)
		}
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "host" {
		t.Errorf("the pod's delete reached the host: %q %v", b, err)
	}

	// Exec runs in the same instance.
	out, err := commonCall(c, "http", "ExecContainerCommand", map[string]string{"RegionId": "cn-hangzhou", "ContainerGroupId": id,
		"ContainerName": "app", "Command": `["/bin/sh","-c","hostname; cat /shared/init.txt; cat /etc/app/conf/app.conf; ls ` + tmpFile + `"]`,
		"Sync": "true", "TTY": "false"})
	if err != nil {
		t.Fatal(err)
	}
	if got := out["SyncResponse"]; got != "web-0\nfrom-init\nk=v"+tmpFile+"\n" {
		t.Errorf("exec printed %q", got)
	}

	// Deleted: no mount, process or directory is left.
	pr := e.runtime.(*processRuntime)
	e.mu.Lock()
	g := e.groups[id]
	e.mu.Unlock()
	init, container := pr.instance(g).Pid(), pr.pid(g, "app")
	if init == 0 || container == 0 {
		t.Fatalf("pids: instance %d container %d", init, container)
	}
	d := sdkeci.CreateDeleteContainerGroupRequest()
	d.Scheme, d.ContainerGroupId = "http", id
	if _, err := c.DeleteContainerGroup(d); err != nil {
		t.Fatal(err)
	}
	sandbox := filepath.Join(dir, "sandboxes", id)
	waitFor(t, "the sandbox to go", func() bool {
		_, err := os.Stat(sandbox)
		return errors.Is(err, os.ErrNotExist)
	})
	for _, pid := range []int{init, container} {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d is left: %v", pid, err)
		}
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), sandbox) {
		t.Errorf("mounts left:\n%s", mi)
	}
}

// Where instances cannot be isolated the process runtime is refused, with
// what is missing and the way out, never run unisolated.
func TestProcessRuntimeRefusedWithoutIsolation(t *testing.T) {
	_, err := New(Config{Credentials: map[string]string{testID: testSecret}, Runtime: "process", DataDir: t.TempDir(),
		IsolationProbe: func() error { return errors.New("no user namespaces") }})
	if err == nil || !strings.Contains(err.Error(), "no user namespaces") || !strings.Contains(err.Error(), "--runtime sim") {
		t.Fatalf("New: %v", err)
	}
}

// Run by an unprivileged user, the process runtime isolates instances as
// well: TestInstanceIsolation passes as uid 65534.
func TestInstanceIsolationUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unprivileged already: TestInstanceIsolation is this test")
	}
	// The test binary, where an unprivileged uid may run it.
	dir := hostDir(t, os.TempDir(), 0o755)
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "emulator.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestInstanceIsolation$", "-test.count=1", "-test.v")
	cmd.Dir = dir
	// A home with a file in it, which the pods must not see.
	home := hostDir(t, "/var/tmp", 0o755)
	if err := os.WriteFile(filepath.Join(home, "private"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	// -test.v: the child says it ran the test, not that none matched.
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestInstanceIsolation") {
		t.Fatalf("as uid 65534: %v\n%s", err, out)
	}
}

// hostDir is a new directory in parent with mode, removed after the test
// (t.TempDir's are in a private tmp directory: not for other users, and
// in a pod's /tmp only the pod's own files are).
func hostDir(t *testing.T, parent string, mode os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp(parent, "vnode-iso-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}
