// Package local runs the whole vnode system on this machine, on the
// embedded default: a real control plane, the ECI emulator (process
// runtime), and a virtual node configured through a vnode config file whose
// context points at the emulator — the same file format that points a
// virtual node at the cloud. It is what `make run` starts.
package local

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/integration/controlplane"
	"github.com/vnode-project/vnode/internal/config"
	"github.com/vnode-project/vnode/internal/identity"
	"github.com/vnode-project/vnode/internal/version"
	"github.com/vnode-project/vnode/provider/vnode"
)

// Options configure the local system.
type Options struct {
	Dir       string // state, certificates and logs (default: a temporary directory)
	Manifests string // the repository's manifests directory
	NodeName  string
	// Sample applies manifests/samples/hello.yaml and waits for it.
	Sample bool
	Out    io.Writer
}

// System is the running local system.
type System struct {
	CP         *controlplane.ControlPlane
	Emulator   *emulator.Emulator
	ConfigPath string
	NodeName   string
	stop       []func()
}

// Start brings everything up; Stop tears it down.
func Start(ctx context.Context, o Options) (_ *System, err error) {
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	if o.NodeName == "" {
		o.NodeName = "cn-hangzhou.vnd-local"
	}
	s := &System{NodeName: o.NodeName}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	fmt.Fprintln(out, "starting the control plane (the first run builds it, a few minutes)")
	s.CP, err = controlplane.Start(ctx, controlplane.Options{Dir: o.Dir, Progress: out})
	if err != nil {
		return nil, err
	}
	s.stop = append(s.stop, s.CP.Stop)
	if b, err := s.CP.Kubectl(ctx, "apply", "-k", filepath.Join(o.Manifests, "vnode")).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("applying the vnode RBAC: %v\n%s", err, b)
	}

	// The emulator, with a fresh AccessKey pair.
	id, secret := "LTAI-local-"+random(6), random(16)
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	var emulatorAddr string
	var stopEmulator func()
	s.Emulator, emulatorAddr, stopEmulator, err = emulator.StartLocal(emulator.Config{Credentials: map[string]string{id: secret},
		Runtime: "process", DataDir: filepath.Join(s.CP.Dir, "eci"), Logger: logger})
	if err != nil {
		return nil, err
	}
	s.stop = append(s.stop, stopEmulator)
	fmt.Fprintf(out, "ECI emulator listening on http://%s\n", emulatorAddr)

	// The node's identity and its kubelet API certificate.
	nodeCfg, err := s.CP.UserConfig(identity.VNodeUser(o.NodeName), identity.VNodesGroup)
	if err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(s.CP.Dir, "vnode", "kubeconfig")
	if err := controlplane.WriteKubeconfig(kubeconfig, nodeCfg, identity.VNodeUser(o.NodeName)); err != nil {
		return nil, err
	}
	serving, err := s.CP.PKI.ServingCert("vnode-kubelet", []string{o.NodeName}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		return nil, err
	}
	// The same config file format a cloud user writes, pointed at the emulator.
	s.ConfigPath = filepath.Join(s.CP.Dir, "vnode", "config")
	file := &config.File{Kind: config.Kind, CurrentContext: "local", Contexts: []config.Context{{
		Name: "local", VNodeName: o.NodeName, RegionID: "cn-hangzhou", AccessKeyID: id, AccessKeySecret: secret,
		VSwitchIDs: config.StringList{"vsw-local"}, ZoneIDs: config.StringList{"cn-hangzhou-a"}, SecurityGroupID: "sg-local",
		Kubeconfig: kubeconfig, Endpoint: "http://" + emulatorAddr,
	}}}
	if err := file.Save(s.ConfigPath); err != nil {
		return nil, err
	}
	loaded, err := config.Load(s.ConfigPath)
	if err != nil {
		return nil, err
	}
	cc, err := loaded.Context("")
	if err != nil {
		return nil, err
	}
	if err := cc.Validate(); err != nil {
		return nil, err
	}
	kl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the kubelet API: %w", err)
	}
	ready := make(chan struct{})
	opts, err := vnode.FromContext(cc, vnode.Settings{
		Kube: nodeCfg, Listener: kl, NodeIP: "127.0.0.1",
		ClientCAFile: s.CP.PKI.CACertPath, CertFile: serving.CertPath, KeyFile: serving.KeyPath,
		ClusterDomain: "cluster.local", KubeletVersion: version.Kubelet(), Version: version.Version(),
		SyncInterval: 2 * time.Second, GCInterval: 30 * time.Second, Log: logrus.NewEntry(logger), Ready: ready,
	})
	if err != nil {
		return nil, err
	}
	vctx, vcancel := context.WithCancel(context.Background())
	vdone := make(chan error, 1)
	go func() { vdone <- vnode.Run(vctx, opts) }()
	s.stop = append(s.stop, func() {
		vcancel()
		select {
		case <-vdone:
		case <-time.After(30 * time.Second):
		}
	})
	select {
	case <-ready:
	case err := <-vdone:
		return nil, fmt.Errorf("the virtual node stopped: %w", err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	fmt.Fprintf(out, "virtual node %s ready\n", o.NodeName)

	if o.Sample {
		if b, err := s.CP.Kubectl(ctx, "apply", "-f", filepath.Join(o.Manifests, "samples", "hello.yaml")).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("applying the sample: %v\n%s", err, b)
		}
		err := wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
			l, err := s.CP.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=hello"})
			if err != nil || len(l.Items) != 2 {
				return false, nil
			}
			for _, p := range l.Items {
				if p.Status.Phase != "Running" {
					return false, nil
				}
			}
			return true, nil
		})
		if err != nil {
			return nil, fmt.Errorf("the sample Deployment did not become Running: %w", err)
		}
		b, _ := s.CP.Kubectl(ctx, "get", "pods", "-o", "wide").CombinedOutput()
		fmt.Fprintf(out, "\n%s\n", b)
	}
	return s, nil
}

// Stop stops the virtual node, the emulator (and its processes) and the
// control plane.
func (s *System) Stop() {
	for i := len(s.stop) - 1; i >= 0; i-- {
		s.stop[i]()
	}
	s.stop = nil
}

func random(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}
