package local

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/vnode-project/vnode/integration/controlplane"
)

// What manifests/metrics-server names.
const (
	metricsNamespace  = "kube-system"
	metricsServer     = "metrics-server"
	metricsAPIService = "v1beta1.metrics.k8s.io"
	// metricsServiceHost is the name kube-apiserver checks metrics-server's
	// serving certificate against: <service>.<namespace>.svc.
	metricsServiceHost = metricsServer + "." + metricsNamespace + ".svc"
)

// metricsServer applies manifests/metrics-server and runs metrics-server
// (built from its module into the cache) as a local process under the
// manifest's ServiceAccount, with the Deployment's arguments, behind
// kube-apiserver's aggregation layer. It scrapes every node's kubelet API
// directly (not through the API server), as it does in a cluster.
//
// How kube-apiserver reaches it: without --enable-aggregator-routing, the
// aggregator dials the APIService's Service at its cluster IP, which
// nothing routes on this host; with it, it dials the Service's endpoints,
// which may not be loopback addresses (EndpointSlice validation refuses
// 127.0.0.0/8) while this host may have no other address. An ExternalName
// Service needs neither: the aggregator dials <externalName>:<APIService
// port> (k8s.io/apiserver's proxy.ResolveCluster), here 127.0.0.1 and the
// process's port. (With --enable-aggregator-routing it refuses an
// ExternalName Service.) With the edge tunnel as the "cluster" egress,
// the aggregator's connection goes through edge-tunnel-server too, whose
// direct route (--direct-cidrs 127.0.0.1/32, tunnel.go) dials it: as
// a cluster's tunnel server reaches metrics-server on the cloud side's
// pod network. kube-apiserver still verifies metrics-server's serving
// certificate as metrics-server.kube-system.svc, against a caBundle: the
// process serves a certificate from a CA of its own instead of upstream's
// self-signed one with insecureSkipTLSVerify.
func (s *System) metricsServer(ctx context.Context) error {
	dir := filepath.Join(s.manifests, metricsServer)
	args, err := deploymentArgs(filepath.Join(dir, "deployment.yaml"))
	if err != nil {
		return err
	}
	fmt.Fprintf(s.out, "# metrics-server %s is built from its module into the cache (once)\n", controlplane.MetricsServerVersion)
	bins, err := controlplane.EnsureMetricsServer(ctx, controlplane.BuildOptions{Progress: s.out})
	if err != nil {
		return err
	}
	if err := s.show(ctx, "apply", "-k", dir); err != nil {
		return err
	}
	if err := s.outsideCluster(ctx, metricsNamespace, metricsServer); err != nil {
		return err
	}
	addr, err := freeAddr("127.0.0.1")
	if err != nil {
		return err
	}
	_, p, _ := net.SplitHostPort(addr) // freeAddr's own host:port
	port, err := strconv.Atoi(p)
	if err != nil {
		return fmt.Errorf("the port of %s: %w", addr, err)
	}
	if err := s.pointAPIServiceAt(ctx, port); err != nil {
		return err
	}
	tlsDir := filepath.Join(s.CP.Dir, "addons", metricsServer+"-tls")
	ca, err := controlplane.NewCA(tlsDir, metricsServer+"-ca")
	if err != nil {
		return fmt.Errorf("creating metrics-server's serving CA: %w", err)
	}
	serving, err := ca.ServingCert(metricsServer, []string{metricsServiceHost}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	if err := s.setAPIServiceCA(ctx, ca.CAPEM()); err != nil {
		return err
	}
	kubeconfig, err := s.serviceAccountKubeconfig(ctx, metricsNamespace, metricsServer)
	if err != nil {
		return err
	}
	// Outside the cluster: no in-cluster config (the ServiceAccount's token
	// in a kubeconfig, for the API server, delegated authn/authz and the
	// kubelet APIs alike), loopback and a free port instead of the pod's
	// :10250, and the certificate the APIService's caBundle vouches for.
	args = append(args, controlplane.DelegatingServerFlags(kubeconfig, port, serving)...)
	if err := s.process(ctx, bins.Path(controlplane.MetricsServer), args...); err != nil {
		return err
	}
	return s.waitFor(ctx, "the metrics API to be available", func(ctx context.Context) (bool, error) {
		_, err := s.CP.Client.Discovery().ServerResourcesForGroupVersion("metrics.k8s.io/v1beta1")
		return err == nil, nil
	})
}

// overriddenOutside are the Deployment's flags replaced outside the
// cluster; they are dropped rather than repeated, so the printed command
// says each once.
var overriddenOutside = []string{"--cert-dir", "--secure-port", "--bind-address", "--kubeconfig", "--tls-cert-file", "--tls-private-key-file"}

// deploymentArgs reads the arguments of the Deployment's only container,
// without the flags overridden outside the cluster.
func deploymentArgs(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading metrics-server's Deployment: %w", err)
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict(b, &d); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	if c := d.Spec.Template.Spec.Containers; len(c) != 1 || c[0].Name != metricsServer {
		return nil, fmt.Errorf("%s: want one container named %s", path, metricsServer)
	}
	var out []string
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		if name, _, _ := strings.Cut(a, "="); !slices.Contains(overriddenOutside, name) {
			out = append(out, a)
		}
	}
	return out, nil
}

// pointAPIServiceAt replaces the manifest's Service (whose selector
// matches no pod here) by an ExternalName one naming this host, and sets
// the APIService's port to the process's.
func (s *System) pointAPIServiceAt(ctx context.Context, port int) error {
	fmt.Fprintf(s.out, "# kube-apiserver reaches metrics-server at 127.0.0.1:%d: Service %s/%s becomes an ExternalName one, the APIService names the port\n",
		port, metricsNamespace, metricsServer)
	svcs := s.CP.Client.CoreV1().Services(metricsNamespace)
	if err := svcs.Delete(ctx, metricsServer, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting Service %s/%s: %w", metricsNamespace, metricsServer, err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: metricsServer, Namespace: metricsNamespace, Labels: map[string]string{"k8s-app": metricsServer}},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "127.0.0.1"},
	}
	if _, err := svcs.Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the ExternalName Service %s/%s: %w", metricsNamespace, metricsServer, err)
	}
	return s.patchAPIService(ctx, map[string]any{"service": map[string]any{"port": port}})
}

// setAPIServiceCA makes kube-apiserver verify metrics-server's certificate.
func (s *System) setAPIServiceCA(ctx context.Context, caPEM []byte) error {
	fmt.Fprintf(s.out, "# the APIService verifies metrics-server's certificate (caBundle) instead of the manifest's insecureSkipTLSVerify\n")
	return s.patchAPIService(ctx, map[string]any{"insecureSkipTLSVerify": false, "caBundle": caPEM})
}

var apiServiceResource = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

func (s *System) patchAPIService(ctx context.Context, spec map[string]any) error {
	patch, err := json.Marshal(map[string]any{"spec": spec})
	if err != nil {
		return err
	}
	client, err := dynamic.NewForConfig(s.CP.AdminConfig)
	if err != nil {
		return err
	}
	if _, err := client.Resource(apiServiceResource).Patch(ctx, metricsAPIService, "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patching APIService %s: %w", metricsAPIService, err)
	}
	return nil
}

// showTop waits until metrics-server has two scrapes of the virtual node
// and of every sample pod (it reports a rate, so one scrape is not
// enough), then shows them as `kubectl top` does.
func (s *System) showTop(ctx context.Context) error {
	s.section("9. kubectl top: metrics-server scrapes the virtual node's kubelet API (/metrics/resource) and serves metrics.k8s.io through kube-apiserver")
	err := s.waitFor(ctx, "metrics of "+s.NodeName+" and the sample's pods", func(ctx context.Context) (bool, error) {
		if ok, err := s.hasMetrics(ctx, "/apis/metrics.k8s.io/v1beta1/nodes/"+s.NodeName, ""); !ok || err != nil {
			return false, err
		}
		pods, err := s.CP.Client.CoreV1().Pods(SampleNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=hello"})
		if err != nil {
			return false, nil
		}
		for _, p := range pods.Items {
			if ok, err := s.hasMetrics(ctx, "/apis/metrics.k8s.io/v1beta1/namespaces/"+SampleNamespace+"/pods/"+p.Name, p.Name); !ok || err != nil {
				return false, err
			}
		}
		return len(pods.Items) > 0, nil
	})
	if err != nil {
		return err
	}
	if err := s.show(ctx, "top", "node"); err != nil {
		return err
	}
	return s.show(ctx, "-n", SampleNamespace, "top", "pod")
}

// hasMetrics reports whether the metrics API answers path with a usage
// (for a pod: of at least one container). Not yet there is no error.
func (s *System) hasMetrics(ctx context.Context, path, pod string) (bool, error) {
	b, err := s.CP.Client.CoreV1().RESTClient().Get().AbsPath(path).DoRaw(ctx)
	if err != nil {
		return false, nil
	}
	var m struct {
		Usage      corev1.ResourceList `json:"usage"`
		Containers []struct {
			Usage corev1.ResourceList `json:"usage"`
		} `json:"containers"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return false, fmt.Errorf("reading %s: %w", path, err)
	}
	if pod != "" {
		return len(m.Containers) > 0, nil
	}
	_, ok := m.Usage[corev1.ResourceMemory]
	return ok, nil
}
