package vnodectl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/vnode-project/vnode/eci"
	"github.com/vnode-project/vnode/internal/certs"
	"github.com/vnode-project/vnode/internal/config"
)

// A virtual node hosted in the cluster (`vnode create --in-cluster`): the
// Deployment of manifests/vnode/in-cluster, filled in per node, and a
// Secret with its config context, kubeconfig and serving certificate.
const (
	inClusterDir     = "vnode/in-cluster"
	inClusterApp     = "vnode-kubelet" // app.kubernetes.io/name of every in-cluster node
	nameLabel        = "app.kubernetes.io/name"
	instanceLabel    = "app.kubernetes.io/instance"
	secretChecksum   = "vnode.io/secret-checksum"
	inClusterContext = "in-cluster"
	// Where the pod sees the Secret and its writable state (the template's
	// volume mounts).
	secretMount = "/etc/vnode"
	stateMount  = "/var/lib/vnode"
)

// Keys of the node's Secret.
const (
	keyConfig              = "config"
	keyKubeconfig          = "kubeconfig"
	keyBootstrapKubeconfig = "bootstrap-kubeconfig"
	keyCA                  = "ca.crt"
	keyServingCert         = "tls.crt"
	keyServingKey          = "tls.key"
)

// inClusterNodeName is the Node's name: --name, the context's vnode-name,
// else <region-id>.in-cluster (VNodectl's <region-id>.<id> with no id).
func inClusterNodeName(spec eci.VirtualNodeSpec, region string) string {
	if spec.Name != "" {
		return spec.Name
	}
	return region + ".in-cluster"
}

// inClusterObjectName names the node's Deployment and Secret: a DNS label
// (pod names and host names come from it), so dots become dashes.
func inClusterObjectName(node string) (string, error) {
	name := "vnode-" + strings.ReplaceAll(node, ".", "-")
	if msgs := validation.IsDNS1123Label(name); len(msgs) > 0 {
		return "", fmt.Errorf("--in-cluster: node name %q makes the object name %q, which is not a DNS label (%s): use a name of at most %d characters",
			node, name, strings.Join(msgs, "; "), validation.DNS1123LabelMaxLength-len("vnode-"))
	}
	return name, nil
}

// inClusterNode is what `create --in-cluster` applies for one node.
type inClusterNode struct {
	node, object string
	bootstrap    bool
	// secret holds the Secret's values; shown is what --dry prints.
	secret, shown map[string]string
	// kubeletArgs are the flags for CreateVirtualNode's parameters.
	kubeletArgs []string
}

// newInClusterNode builds the node's settings from the context and the
// flags already checked into spec.
func (c *cloud) newInClusterNode(spec eci.VirtualNodeSpec) (*inClusterNode, error) {
	node := inClusterNodeName(spec, c.ctx.RegionID)
	object, err := inClusterObjectName(node)
	if err != nil {
		return nil, err
	}
	n := &inClusterNode{node: node, object: object, bootstrap: spec.TLSBootstrapEnabled}
	kc, err := clientcmd.Load(spec.KubeConfig)
	if err != nil {
		return nil, fmt.Errorf("the context's kubeconfig: %w", err)
	}
	rc, err := clientcmd.NewDefaultClientConfig(*kc, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("the context's kubeconfig: %w", err)
	}
	ca := rc.TLSClientConfig.CAData
	if len(ca) == 0 && rc.TLSClientConfig.CAFile != "" {
		if ca, err = os.ReadFile(rc.TLSClientConfig.CAFile); err != nil {
			return nil, fmt.Errorf("the context's kubeconfig names CA file %s: %w", rc.TLSClientConfig.CAFile, err)
		}
	}
	if len(ca) == 0 {
		return nil, errors.New("the context's kubeconfig carries no cluster CA: the in-cluster node verifies the API server and its callers with it")
	}
	// The kubeconfig goes into the Secret self-contained: a file it names
	// on this machine would not exist in the pod.
	if err := clientcmdapi.FlattenConfig(kc); err != nil {
		return nil, fmt.Errorf("the context's kubeconfig: %w", err)
	}
	kubeconfig, err := clientcmd.Write(*kc)
	if err != nil {
		return nil, fmt.Errorf("encoding the node's kubeconfig: %w", err)
	}

	cc := *c.ctx
	cc.Name, cc.VNodeName, cc.VirtualNodeID = inClusterContext, node, ""
	cc.VSwitchIDs = config.StringList(strings.Split(spec.VSwitchID, ","))
	cc.SecurityGroupID, cc.ResourceGroupID, cc.Tags = spec.SecurityGroupID, spec.ResourceGroupID, spec.Tags
	if spec.ZoneID != "" {
		cc.ZoneIDs = config.StringList{spec.ZoneID}
	}
	cc.Taints = nil
	for _, t := range spec.Taints {
		cc.Taints = append(cc.Taints, config.Taint{Key: t.Key, Value: t.Value, Effect: t.Effect})
	}
	if len(spec.CustomResources) > 0 {
		capacity := map[string]string{}
		for k, v := range cc.Capacity {
			capacity[k] = v
		}
		for k, v := range spec.CustomResources {
			capacity[k] = strconv.FormatInt(v, 10)
		}
		cc.Capacity = capacity
	}
	keyKC := keyKubeconfig
	cc.Kubeconfig = secretMount + "/" + keyKubeconfig
	if n.bootstrap {
		// TLS bootstrap writes the node's own kubeconfig beside its certificates.
		keyKC = keyBootstrapKubeconfig
		cc.Kubeconfig = stateMount + "/" + keyKubeconfig
	}
	if err := cc.Validate(); err != nil {
		return nil, err
	}
	configFile := func(cc config.Context) (string, error) {
		data, err := yaml.Marshal(config.File{Kind: config.Kind, CurrentContext: inClusterContext, Contexts: []config.Context{cc}})
		return string(data), err
	}
	cfg, err := configFile(cc)
	if err != nil {
		return nil, fmt.Errorf("encoding the node's config context: %w", err)
	}
	shownCfg, err := configFile(cc.Redacted())
	if err != nil {
		return nil, fmt.Errorf("encoding the node's config context: %w", err)
	}
	n.secret = map[string]string{keyConfig: cfg, keyKC: string(kubeconfig), keyCA: string(ca)}
	n.shown = map[string]string{keyConfig: shownCfg, keyKC: "<masked: the node's kubeconfig>", keyCA: string(ca)}
	if !n.bootstrap {
		n.shown[keyServingCert], n.shown[keyServingKey] = "<generated on apply: a self-signed serving certificate>", "<masked: its key>"
	}
	return n, nil
}

// servingPair, for a ServiceAccount-mode node (no node identity to ask the
// cluster for a serving certificate with), keeps the serving certificate
// the node's Secret already holds, so a re-apply changes nothing; else it
// makes one. It is self-signed: an API server that verifies kubelets'
// serving certificates (--kubelet-certificate-authority) refuses logs and
// exec to it.
func (n *inClusterNode) servingPair(ctx context.Context, a *admin) error {
	s, err := a.client.CoreV1().Secrets(vnodeNamespace).Get(ctx, n.object, metav1.GetOptions{})
	switch {
	case err == nil && len(s.Data[keyServingCert]) > 0 && len(s.Data[keyServingKey]) > 0:
		n.secret[keyServingCert], n.secret[keyServingKey] = string(s.Data[keyServingCert]), string(s.Data[keyServingKey])
		return nil
	case err != nil && !apierrors.IsNotFound(err):
		return fmt.Errorf("reading Secret %s/%s: %w", vnodeNamespace, n.object, err)
	}
	certPEM, keyPEM, err := certs.SelfSignedPEM(n.node)
	if err != nil {
		return fmt.Errorf("making the node's serving certificate: %w", err)
	}
	n.secret[keyServingCert], n.secret[keyServingKey] = string(certPEM), string(keyPEM)
	return nil
}

// objects are the node's Namespace, Secret (values, or with shown the
// masked ones) and Deployment, image replacing the template's when given.
func (n *inClusterNode) objects(image string, shown bool) ([]*unstructured.Unstructured, error) {
	labels := map[string]string{partOfLabel: partOfValue, nameLabel: inClusterApp, instanceLabel: n.object}
	values := n.secret
	if shown {
		values = n.shown
	}
	secret := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: n.object, Namespace: vnodeNamespace, Labels: labels},
		Type:       corev1.SecretTypeOpaque,
		StringData: values,
	}
	tmpl, err := manifestDir(inClusterDir)
	if err != nil {
		return nil, err
	}
	du, err := findObject(tmpl, "Deployment")
	if err != nil {
		return nil, err
	}
	var d appsv1.Deployment
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(du.Object, &d); err != nil {
		return nil, fmt.Errorf("manifests/%s: %w", inClusterDir, err)
	}
	d.Name, d.Namespace = n.object, vnodeNamespace
	d.Labels = merge(d.Labels, labels)
	d.Spec.Selector.MatchLabels = merge(d.Spec.Selector.MatchLabels, map[string]string{instanceLabel: n.object})
	d.Spec.Template.Labels = merge(d.Spec.Template.Labels, map[string]string{instanceLabel: n.object})
	// A changed Secret restarts the node: it reads its files at start.
	d.Spec.Template.Annotations = merge(d.Spec.Template.Annotations, map[string]string{secretChecksum: checksum(n.secret, keyServingCert, keyServingKey)})
	// Not on a virtual node: it would run as an ECI instance of itself.
	d.Spec.Template.Spec.Affinity, _ = excludeVirtualNodes(d.Spec.Template.Spec.Affinity)
	for i := range d.Spec.Template.Spec.Volumes {
		if v := &d.Spec.Template.Spec.Volumes[i]; v.Secret != nil {
			v.Secret.SecretName = n.object
		}
	}
	if len(d.Spec.Template.Spec.Containers) != 1 {
		return nil, fmt.Errorf("manifests/%s: the Deployment must have one container", inClusterDir)
	}
	c := &d.Spec.Template.Spec.Containers[0]
	if image != "" {
		c.Image = image
	}
	c.Args = append(c.Args, "--nodename="+n.node)
	if n.bootstrap {
		// A bootstrapped node asks the cluster for its serving certificate
		// (a kubelet-serving CSR vnode-approver approves), kept with its
		// client pair under the state volume: no pair in the Secret.
		c.Args = slices.DeleteFunc(c.Args, func(a string) bool {
			return strings.HasPrefix(a, "--tls-cert-file=") || strings.HasPrefix(a, "--tls-private-key-file=")
		})
		c.Args = append(c.Args, "--bootstrap-kubeconfig="+secretMount+"/"+keyBootstrapKubeconfig, "--rotate-server-certificates")
	}
	c.Args = append(c.Args, n.kubeletArgs...)
	out := []*unstructured.Unstructured{}
	for _, o := range []runtime.Object{vnodeNamespaceObject(), secret, &d} {
		u, err := toUnstructured(o)
		if err != nil {
			return nil, err
		}
		unstructured.RemoveNestedField(u.Object, "spec", "template", "metadata", "creationTimestamp")
		out = append(out, u)
	}
	return out, nil
}

func merge(dst, src map[string]string) map[string]string {
	if dst == nil {
		dst = map[string]string{}
	}
	for k, v := range src {
		dst[k] = v
	}
	return dst
}

// checksum hashes the values but those of skip, in key order.
func checksum(values map[string]string, skip ...string) string {
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		if contains(skip, k) {
			continue
		}
		fmt.Fprintf(h, "%s=%d:%s;", k, len(values[k]), values[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// createInCluster applies the node's objects and manifests/vnode's RBAC
// (server-side apply: a re-run updates them); with --dry it prints them,
// secrets masked.
func (g *globals) createInCluster(ctx context.Context, c *cloud, spec eci.VirtualNodeSpec, image string) (*inClusterNode, error) {
	n, err := c.newInClusterNode(spec)
	if err != nil {
		return nil, err
	}
	n.kubeletArgs = kubeletArgs(spec)
	rbac, err := manifestDir("vnode")
	if err != nil {
		return nil, err
	}
	a, err := g.adminUnlessDry(ctx)
	if err != nil {
		return nil, err
	}
	if a != nil && !n.bootstrap {
		if err := n.servingPair(ctx, a); err != nil {
			return nil, err
		}
	}
	objs, err := n.objects(image, g.dry)
	if err != nil {
		return nil, err
	}
	if err := a.applier(g).apply(ctx, append(rbac, objs...)); err != nil {
		return nil, err
	}
	if !g.dry {
		fmt.Fprintf(g.out, "virtual node %s runs in the cluster: Deployment %s/%s\n", n.node, vnodeNamespace, n.object)
	}
	return n, nil
}

// kubeletArgs are vnode-kubelet's flags for what CreateVirtualNode takes
// as parameters (the rest is in the node's config context).
func kubeletArgs(spec eci.VirtualNodeSpec) []string {
	var args []string
	if len(spec.ClusterDNS) > 0 {
		args = append(args, "--cluster-dns="+strings.Join(spec.ClusterDNS, ","))
	}
	if spec.ClusterDomain != "" {
		args = append(args, "--cluster-domain="+spec.ClusterDomain)
	}
	return args
}

// stub names an object for delete.
func stub(apiVersion, kind, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	u.SetName(name)
	u.SetNamespace(vnodeNamespace)
	return u
}

func secretStub(name string) *unstructured.Unstructured { return stub("v1", "Secret", name) }
func deploymentStub(name string) *unstructured.Unstructured {
	return stub("apps/v1", "Deployment", name)
}

// inClusterStubs are the node's objects in apply order (remove deletes in
// reverse: the Deployment before the Secret it mounts).
func inClusterStubs(object string) []*unstructured.Unstructured {
	return []*unstructured.Unstructured{secretStub(object), deploymentStub(object)}
}

// deleteInCluster removes the in-cluster node's Deployment and Secret,
// refusing while pods are bound to its Node: their instances would be
// left running with no node to delete them.
func (g *globals) deleteInCluster(ctx context.Context, node string) error {
	object, err := inClusterObjectName(node)
	if err != nil {
		return err
	}
	a, err := g.adminUnlessDry(ctx)
	if err != nil {
		return err
	}
	if a != nil {
		pods, err := a.client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		if err != nil {
			return fmt.Errorf("listing the pods bound to %s: %w", node, err)
		}
		live := 0
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
				live++
			}
		}
		if live > 0 {
			return fmt.Errorf("virtual node %s still has %d pod(s), whose instances it alone deletes: "+
				"drain it first: `kubectl cordon %s && kubectl drain %s --ignore-daemonsets --delete-emptydir-data`, then run `vnode delete --in-cluster %s` again",
				node, live, node, node, node)
		}
		if _, err := a.client.AppsV1().Deployments(vnodeNamespace).Get(ctx, object, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return fmt.Errorf("no in-cluster virtual node %s (no Deployment %s/%s)", node, vnodeNamespace, object)
		}
	}
	if err := a.applier(g).remove(ctx, inClusterStubs(object)); err != nil {
		return err
	}
	if !g.dry {
		fmt.Fprintf(g.out, "virtual node %s deleted; its Node stays NotReady until `kubectl delete node %s`\n", node, node)
	}
	return nil
}

// cleanInCluster deletes every in-cluster node's Deployment and Secret.
func (g *globals) cleanInCluster(ctx context.Context, a *admin) error {
	sel := nameLabel + "=" + inClusterApp + "," + partOfLabel + "=" + partOfValue
	if g.dry {
		fmt.Fprintf(g.out, "would delete the Deployments and Secrets in %s labelled %s\n", vnodeNamespace, sel)
		return nil
	}
	ds, err := a.client.AppsV1().Deployments(vnodeNamespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return fmt.Errorf("listing in-cluster virtual nodes: %w", err)
	}
	ss, err := a.client.CoreV1().Secrets(vnodeNamespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return fmt.Errorf("listing in-cluster virtual nodes' Secrets: %w", err)
	}
	// In apply order: remove deletes the Deployments first.
	var objs []*unstructured.Unstructured
	for _, s := range ss.Items {
		objs = append(objs, secretStub(s.Name))
	}
	for _, d := range ds.Items {
		objs = append(objs, deploymentStub(d.Name))
	}
	return a.applier(g).remove(ctx, objs)
}

// waitInClusterReady shows the in-cluster node's progress until its Node
// is Ready.
func (g *globals) waitInClusterReady(ctx context.Context, n *inClusterNode, timeout time.Duration) error {
	a, err := g.admin(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		pod := "no pod yet"
		if d, err := a.client.AppsV1().Deployments(vnodeNamespace).Get(ctx, n.object, metav1.GetOptions{}); err == nil {
			pod = fmt.Sprintf("%d/%d ready", d.Status.ReadyReplicas, derefReplicas(d))
		}
		nodeState := "not registered"
		if nd, err := a.client.CoreV1().Nodes().Get(ctx, n.node, metav1.GetOptions{}); err == nil {
			nodeState = "NotReady"
			if nodeReady(nd) {
				nodeState = "Ready"
			}
		}
		line := fmt.Sprintf("Deployment %s/%s: %s; Node %s: %s", vnodeNamespace, n.object, pod, n.node, nodeState)
		if line != last {
			fmt.Fprintln(g.out, line)
			last = line
		}
		if nodeState == "Ready" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for Node %s to be Ready (last: %s; `kubectl -n %s logs deploy/%s` says why): %w", n.node, last, vnodeNamespace, n.object, ctx.Err())
		case <-tick.C:
		}
	}
}
