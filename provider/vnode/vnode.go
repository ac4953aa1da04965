// Package vnode assembles a running virtual node from its parts: the
// Kubernetes identity (a kubeconfig, or TLS bootstrap), the ECI provider,
// virtual-kubelet's node and pod controllers, and the secured kubelet API.
// cmd/vnode-kubelet parses flags into Options and calls Run; the end-to-end
// tests call Run in-process.
package vnode

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"path"
	"time"

	"github.com/sirupsen/logrus"
	vklog "github.com/virtual-kubelet/virtual-kubelet/log"
	logruslogger "github.com/virtual-kubelet/virtual-kubelet/log/logrus"
	vknode "github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"

	"github.com/vnode-project/vnode/provider"
	"github.com/vnode-project/vnode/provider/bootstrap"
	"github.com/vnode-project/vnode/provider/kubeletapi"
	"github.com/vnode-project/vnode/provider/nodeobject"
	"github.com/vnode-project/vnode/provider/translate"
	"github.com/vnode-project/vnode/tunnel"
)

// Options are everything one virtual node needs.
type Options struct {
	NodeName string
	Node     nodeobject.Config
	Pods     translate.NodeSettings
	Cloud    provider.Cloud
	// Checker tells whether ECI answers; the node is Ready only then.
	Checker nodeobject.Checker
	// Kube authenticates to the API server as the virtual node.
	Kube *rest.Config
	// Listener serves the kubelet API (TLS is added here); the node
	// advertises Node.InternalIP and Node.KubeletPort.
	Listener net.Listener
	// ClientCAFile, CertFile, KeyFile secure the kubelet API.
	ClientCAFile, CertFile, KeyFile string
	// RotateServerCertificates, instead of CertFile and KeyFile, requests
	// the kubelet API's certificate by a kubernetes.io/kubelet-serving CSR
	// as the node (Kube) once its Node is registered, keeps it in CertDir
	// and renews it (the kubelet's --rotate-server-certificates). Until it
	// is signed the kubelet API refuses handshakes.
	RotateServerCertificates bool
	CertDir                  string
	Version                  string
	SyncInterval             time.Duration
	GCInterval               time.Duration
	// DescribeQuota is the DescribeContainerGroups calls a minute Cloud
	// keeps to (provider.Config.DescribeQuota; 0: no limit known).
	DescribeQuota   int
	LogPollInterval time.Duration
	Workers         int
	Log             *logrus.Entry
	// Ready, if set, is closed once the node is registered and serving.
	Ready chan<- struct{}
	// Tunnel, if set, runs the edge tunnel agent in-process, and the
	// node's Ready condition follows its sessions.
	Tunnel *TunnelOptions
	// AnonymousAuth admits kubelet API requests without credentials as
	// system:anonymous, still authorised by SubjectAccessReview (the
	// kubelet's --anonymous-auth); pods/proxy to vnode's own pod needs it.
	AnonymousAuth bool
	// Profiling serves net/http/pprof at /debug/pprof/ on the kubelet
	// API, behind its authentication and the nodes/proxy authorization.
	Profiling bool
	// MaxLogStreams caps concurrent kubectl logs on the node (more get
	// 429); 0 means kubeletapi.DefaultMaxLogStreams.
	MaxLogStreams int
}

// Protobuf is a copy of cfg whose clients speak protobuf, JSON only where
// the server offers nothing else, as kubelet's do (its
// --kube-api-content-type). client-go's generated methods prefer protobuf
// already, but not the calls written by hand: the event sink's and the
// token requests went as JSON, about 3 s of the node's CPU at 10,000 pods.
// The node's clients use built-in types only.
func Protobuf(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.ContentType = runtime.ContentTypeProtobuf
	c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return c
}

// Run runs the virtual node until ctx ends.
func Run(ctx context.Context, o Options) error {
	if o.Log == nil {
		o.Log = logrus.NewEntry(logrus.New())
	}
	log := o.Log.WithField("node", o.NodeName)
	ctx = vklog.WithLogger(ctx, vkLogger{Logger: logruslogger.FromLogrus(log)})
	kube, err := kubernetes.NewForConfig(Protobuf(o.Kube))
	if err != nil {
		return fmt.Errorf("creating the Kubernetes client: %w", err)
	}
	broadcaster := record.NewBroadcaster()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events(corev1.NamespaceAll)})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: path.Join(o.NodeName, "vnode")})

	var agent *tunnel.Agent
	if o.Tunnel != nil {
		if agent, err = newTunnelAgent(o.Tunnel, o.NodeName, log); err != nil {
			return err
		}
	}

	// Started before the node, shut down after it; not awaited: a pod
	// that needs it waits (is retried) until it has synced.
	namespaces := newNamespaceCache(kube)
	nsCtx, stopNamespaces := context.WithCancel(ctx)
	namespaces.factory.Start(nsCtx.Done())
	// Shutdown waits for the informer, which stops only with its context
	// (Run may return before ctx ends).
	defer func() { stopNamespaces(); namespaces.factory.Shutdown() }()

	var prov *provider.Provider
	var nodeProvider *nodeobject.Provider
	mux := http.NewServeMux()
	if o.Profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	workers := o.Workers
	if workers <= 0 {
		workers = 20 // cloud calls wait on the network, not the CPU
	}
	n, err := NewVKNode(VKNodeConfig{
		Name: o.NodeName, Client: newTrimmedClient(kube), InformerResync: time.Minute, Workers: workers,
		Recorder: recorder, Mux: mux,
		// vnode resolves env itself: virtual-kubelet cannot resolve
		// status.podIP or resourceFieldRef (ECI resolves the IP).
		SkipDownwardAPIResolution: true,
	}, func(pc nodeutil.ProviderConfig) (nodeutil.Provider, vknode.NodeProvider, error) {
		nodeobject.Apply(pc.Node, o.Node)
		src := translate.Sources{
			Objects:    listerObjects{pc},
			Claims:     apiClaims{kube},
			Namespaces: namespaces,
		}
		prov = provider.New(provider.Config{
			Node: o.Pods, Version: o.Version, SyncInterval: o.SyncInterval, GCInterval: o.GCInterval, DescribeQuota: o.DescribeQuota,
			LogPollInterval: o.LogPollInterval, Tokens: tokenIssuer{kube}, Log: log,
		}, o.Cloud, kube, src, recorder)
		prov.SetPodLister(pc.Pods)
		nodeProvider = nodeobject.NewProvider(pc.Node, o.Checker, 0, log)
		if agent != nil {
			nodeProvider.WithTunnel(agent, o.Tunnel.CheckInterval)
		}
		return prov, nodeProvider, nil
	})
	if err != nil {
		return fmt.Errorf("creating the virtual node: %w", err)
	}
	if err := prov.Recover(ctx); err != nil {
		return fmt.Errorf("recovering state: %w", err)
	}

	apiCfg := kubeletapi.ServerConfig{
		NodeName: o.NodeName, Client: kube, ClientCAFile: o.ClientCAFile, CertFile: o.CertFile, KeyFile: o.KeyFile,
		Anonymous: o.AnonymousAuth,
	}
	var serving *bootstrap.Serving
	if o.RotateServerCertificates {
		if serving, err = newServing(o, recorder, log); err != nil {
			return err
		}
		defer serving.Stop()
		apiCfg.GetCertificate = serving.GetCertificate
	}
	handler, tlsCfg, err := kubeletapi.Secure(apiCfg, kubeletapi.LimitLogStreams(o.MaxLogStreams, mux))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler, TLSConfig: tlsCfg, ReadHeaderTimeout: 30 * time.Second}
	go func() {
		if err := srv.ServeTLS(o.Listener, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.WithError(err).Error("kubelet API server stopped")
		}
	}()
	defer srv.Close()

	if agent != nil {
		actx, stopAgent := context.WithCancel(ctx)
		agentDone := make(chan struct{})
		go func() { defer close(agentDone); _ = agent.Run(actx) }()
		// The agent drains its streams before Run returns.
		defer func() { stopAgent(); <-agentDone }()
	}
	go prov.Run(ctx)
	errc := make(chan error, 1)
	go func() { errc <- n.Run(ctx) }()
	select {
	case <-n.Ready():
		if serving != nil {
			// Now that the Node carries its addresses, the approver can
			// check the CSR's against them.
			if !serving.Start() {
				recorder.Event(nodeRef(o.NodeName), corev1.EventTypeWarning, "ServingCertificatePending", bootstrap.PendingMessage)
			}
		}
		log.WithField("address", o.Listener.Addr().String()).Info("virtual node ready")
		if o.Ready != nil {
			close(o.Ready)
		}
	case err := <-errc:
		return fmt.Errorf("virtual node stopped before it was ready: %w", err)
	}
	err = <-errc
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// nodeRef is what the node's own events are about (a kubelet's UID for
// its Node's events is the node name).
func nodeRef(name string) *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: "Node", Name: name, UID: types.UID(name)}
}

// newServing is the kubelet-serving certificate of the node: its name and
// the address it registers. Its first certificate and each renewal are
// events on the Node (kubectl describe node).
func newServing(o Options, recorder record.EventRecorder, log logrus.FieldLogger) (*bootstrap.Serving, error) {
	if o.CertDir == "" {
		return nil, errors.New("rotating the serving certificate needs a certificate directory")
	}
	ip := net.ParseIP(o.Node.InternalIP)
	if ip == nil {
		return nil, fmt.Errorf("the node's address %q is not an IP address; the serving certificate names it", o.Node.InternalIP)
	}
	return bootstrap.NewServing(bootstrap.ServingConfig{
		NodeName: o.NodeName, IPs: []net.IP{ip}, CertDir: o.CertDir, Client: o.Kube, Log: log,
		OnRotation: func(cert *x509.Certificate, renewed bool) {
			reason := "ServingCertificateReady"
			if renewed {
				reason = "ServingCertificateRenewed"
			}
			recorder.Eventf(nodeRef(o.NodeName), corev1.EventTypeNormal, reason, "kubelet API serving certificate valid until %s", cert.NotAfter.UTC().Format(time.RFC3339))
		},
	})
}

// listerObjects reads configMaps and secrets from virtual-kubelet's informers.
type listerObjects struct{ pc nodeutil.ProviderConfig }

func (l listerObjects) ConfigMap(ns, name string) (*corev1.ConfigMap, error) {
	return l.pc.ConfigMaps.ConfigMaps(ns).Get(name)
}

func (l listerObjects) Secret(ns, name string) (*corev1.Secret, error) {
	return l.pc.Secrets.Secrets(ns).Get(name)
}

// apiClaims reads claims directly: one read per pod creation does not
// justify two more cluster-wide informers.
type apiClaims struct{ kube kubernetes.Interface }

func (a apiClaims) PersistentVolumeClaim(ns, name string) (*corev1.PersistentVolumeClaim, error) {
	return a.kube.CoreV1().PersistentVolumeClaims(ns).Get(context.TODO(), name, metav1.GetOptions{})
}

func (a apiClaims) PersistentVolume(name string) (*corev1.PersistentVolume, error) {
	return a.kube.CoreV1().PersistentVolumes().Get(context.TODO(), name, metav1.GetOptions{})
}
