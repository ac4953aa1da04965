package controlplane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// The releases the control plane is built from. They are pinned in the build
// modules under k8sbuild/; these constants only stamp versions and name the
// cache so that a change of release never reuses old binaries.
const (
	KubernetesVersion = "v1.35.4"
	EtcdVersion       = "v3.6.16"
)

// Binary names in the cache.
const (
	KubeAPIServer         = "kube-apiserver"
	KubeControllerManager = "kube-controller-manager"
	KubeScheduler         = "kube-scheduler"
	Kubectl               = "kubectl"
	Etcd                  = "etcd"
)

// Binaries are the paths of the built control-plane programs.
type Binaries struct {
	Dir   string
	Built bool // true when this call compiled something
}

// Path returns the absolute path of one binary.
func (b *Binaries) Path(name string) string { return filepath.Join(b.Dir, name) }

// BuildOptions says where the cache lives and where build output goes.
type BuildOptions struct {
	// CacheDir overrides the cache root (default: $VNODE_CACHE_DIR, else
	// $XDG_CACHE_HOME/vnode, else ~/.cache/vnode).
	CacheDir string
	// SourceDir is the k8sbuild directory (default: $VNODE_K8SBUILD_DIR, else
	// the k8sbuild folder next to this source file).
	SourceDir string
	// Progress receives one line per binary built; nil discards.
	Progress io.Writer
}

type buildTarget struct {
	name, module, pkg string
	versionStamp      bool // built with the set's ldflags, else "-s -w"
}

// buildSet is one cached build: a folder of the cache with its own stamp
// and lock, holding what its k8sbuild modules build. Each set is keyed
// only by its own modules, so adding or changing one set (metrics-server)
// never rebuilds another (the control plane, minutes of work).
type buildSet struct {
	dir     string   // the folder's name in the cache
	modules []string // k8sbuild modules whose go.mod and go.sum key the build
	ldflags string   // for targets with versionStamp
	targets []buildTarget
}

var controlPlaneSet = buildSet{
	dir:     "k8s-" + KubernetesVersion + "-etcd-" + EtcdVersion,
	modules: []string{"kubernetes", "etcd"},
	ldflags: versionLDFlags(),
	targets: []buildTarget{
		{KubeAPIServer, "kubernetes", "k8s.io/kubernetes/cmd/kube-apiserver", true},
		{KubeControllerManager, "kubernetes", "k8s.io/kubernetes/cmd/kube-controller-manager", true},
		{KubeScheduler, "kubernetes", "k8s.io/kubernetes/cmd/kube-scheduler", true},
		{Kubectl, "kubernetes", "k8s.io/kubernetes/cmd/kubectl", true},
		{Etcd, "etcd", "go.etcd.io/etcd/server/v3", false},
	},
}

// DefaultCacheDir is where built binaries live unless overridden.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("VNODE_CACHE_DIR"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "vnode"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("finding the cache directory (set VNODE_CACHE_DIR): %w", err)
	}
	return filepath.Join(home, ".cache", "vnode"), nil
}

func defaultSourceDir() (string, error) {
	if d := os.Getenv("VNODE_K8SBUILD_DIR"); d != "" {
		return d, nil
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the k8sbuild modules: set VNODE_K8SBUILD_DIR")
	}
	dir := filepath.Join(filepath.Dir(file), "k8sbuild")
	if _, err := os.Stat(filepath.Join(dir, "kubernetes", "go.mod")); err != nil {
		return "", fmt.Errorf("the k8sbuild modules are not at %s (run from a vnode checkout or set VNODE_K8SBUILD_DIR): %w", dir, err)
	}
	return dir, nil
}

// EnsureBinaries builds the control plane into the cache unless a build for
// exactly these sources and this Go toolchain is already there. Concurrent
// callers (parallel test binaries) serialise on a lock file, so only one of
// them builds.
func EnsureBinaries(ctx context.Context, opts BuildOptions) (*Binaries, error) {
	return ensure(ctx, opts, controlPlaneSet)
}

// ensure builds set into its folder of the cache unless its stamp says
// this exact build is there.
func ensure(ctx context.Context, opts BuildOptions, set buildSet) (*Binaries, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, errors.New("the Go toolchain is not on PATH: install Go 1.26 (https://go.dev/dl) to build the test control plane")
	}
	src := opts.SourceDir
	if src == "" {
		if src, err = defaultSourceDir(); err != nil {
			return nil, err
		}
	}
	root := opts.CacheDir
	if root == "" {
		if root, err = DefaultCacheDir(); err != nil {
			return nil, err
		}
	}
	key, err := buildKey(ctx, goBin, src, set)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, set.dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cache directory %s cannot be created (set VNODE_CACHE_DIR to a writable directory): %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	defer lock.Close()

	b := &Binaries{Dir: dir}
	stamp := filepath.Join(dir, ".stamp")
	if prev, err := os.ReadFile(stamp); err == nil && string(prev) == key && allPresent(dir, set.targets) {
		return b, nil
	}
	_ = os.Remove(stamp)
	for i, t := range set.targets {
		what := fmt.Sprintf("%s (%d of %d)", t.name, i+1, len(set.targets))
		err := withProgress(opts.Progress, what, progressEvery, func() error {
			return buildOne(ctx, goBin, src, dir, set.ldflags, t)
		})
		if err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(stamp, []byte(key), 0o644); err != nil {
		return nil, fmt.Errorf("writing cache stamp: %w", err)
	}
	b.Built = true
	return b, nil
}

func allPresent(dir string, targets []buildTarget) bool {
	for _, t := range targets {
		if fi, err := os.Stat(filepath.Join(dir, t.name)); err != nil || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// buildKey identifies a set's build: its pinned module files, its ldflags
// and the Go version. A change to any of them rebuilds the set.
func buildKey(ctx context.Context, goBin, src string, set buildSet) (string, error) {
	h := sha256.New()
	for _, m := range set.modules {
		for _, f := range []string{"go.mod", "go.sum"} {
			data, err := os.ReadFile(filepath.Join(src, m, f))
			if err != nil {
				return "", fmt.Errorf("reading build module %s/%s: %w", m, f, err)
			}
			h.Write(data)
		}
	}
	out, err := exec.CommandContext(ctx, goBin, "env", "GOVERSION").Output()
	if err != nil {
		return "", fmt.Errorf("asking go for its version: %w", err)
	}
	h.Write(out)
	h.Write([]byte(set.ldflags))
	return hex.EncodeToString(h.Sum(nil)), nil
}

func versionLDFlags() string {
	flags := []string{"-s", "-w"}
	for _, p := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		flags = append(flags,
			"-X", p+".gitVersion="+KubernetesVersion,
			"-X", p+".gitMajor=1",
			"-X", p+".gitMinor=35",
			"-X", p+".gitTreeState=clean",
			"-X", p+".buildDate=2026-04-01T00:00:00Z",
		)
	}
	return strings.Join(flags, " ")
}

func buildOne(ctx context.Context, goBin, src, dir, ldflags string, t buildTarget) error {
	ld := "-s -w"
	if t.versionStamp {
		ld = ldflags
	}
	tmp := filepath.Join(dir, "."+t.name+".tmp")
	cmd := exec.CommandContext(ctx, goBin, "build", "-mod=readonly", "-ldflags", ld, "-o", tmp, t.pkg)
	cmd.Dir = filepath.Join(src, t.module)
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("building %s (go build %s in %s) failed: %w\n%s", t.name, t.pkg, cmd.Dir, err, tail(out.String(), 40))
	}
	if err := os.Rename(tmp, filepath.Join(dir, t.name)); err != nil {
		return fmt.Errorf("installing %s into the cache: %w", t.name, err)
	}
	return nil
}

// lockDir takes an exclusive flock on dir/.lock; closing the file releases it.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cache directory %s is not writable (set VNODE_CACHE_DIR to a writable directory): %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking the cache directory %s: %w", dir, err)
	}
	return f, nil
}

func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// progressEvery is how often a long build says it is still going: the
// first build of kube-apiserver takes minutes, and silence looks hung.
const progressEvery = 15 * time.Second

// withProgress runs build, telling out what it builds, how long it has
// taken every interval, and when it is done. nil out: silent.
func withProgress(out io.Writer, what string, interval time.Duration, build func() error) error {
	if out == nil {
		return build()
	}
	start := time.Now()
	fmt.Fprintf(out, "building %s ...\n", what)
	done := make(chan struct{})
	ticked := make(chan struct{})
	go func() {
		defer close(ticked)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				fmt.Fprintf(out, "  still building %s: %s so far\n", what, time.Since(start).Round(time.Second))
			}
		}
	}()
	err := build()
	close(done)
	<-ticked // no line after the last
	if err == nil {
		fmt.Fprintf(out, "built %s in %s\n", what, time.Since(start).Round(time.Second))
	}
	return err
}
