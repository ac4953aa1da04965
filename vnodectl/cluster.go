package vnodectl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"

	"github.com/vnode-project/vnode/internal/config"
	"github.com/vnode-project/vnode/internal/identity"
)

// Where ServiceAccount mode keeps the node's account and its token.
const (
	vnodeNamespace     = "vnode-system"
	serviceAccountName = "vnode"
	serviceAccountTok  = "vnode-token"
	saBindingName      = "system:vnode:serviceaccount"
)

// tokenPartRE is Kubernetes' rule for each half of a bootstrap token
// ([a-z0-9]{6}.[a-z0-9]{16}, k8s.io/cluster-bootstrap).
var (
	tokenIDRE     = regexp.MustCompile(`^` + `[a-z0-9]{6}` + `$`)
	tokenSecretRE = regexp.MustCompile(`^` + `[a-z0-9]{16}` + `$`)
)

type setupOptions struct {
	bootstrap   bool
	tokenID     string
	tokenSecret string
	ttl         time.Duration
	apiserver   string
	caPath      string
	output      string
}

func defaultDeployKubeconfig() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".vnode", "deploy", "kubeconfig")
	}
	return filepath.Join(home, ".vnode", "deploy", "kubeconfig")
}

func newClusterCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Set the cluster up for virtual nodes, validate it, clean it"}
	o := &setupOptions{}
	setup := &cobra.Command{
		Use:   "setup",
		Short: "Create the RBAC and the credential virtual nodes join with, and write ~/.vnode/deploy/kubeconfig",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.setup(cmd.Context(), o)
		},
	}
	f := setup.Flags()
	f.BoolVar(&o.bootstrap, "bootstrap", false, "TLS bootstrap mode: a bootstrap token; vnode-approver approves the node's certificate (recommended)")
	f.StringVar(&o.tokenID, "bootstrap-token-id", "", "the bootstrap token's id: 6 characters [a-z0-9]")
	f.StringVar(&o.tokenSecret, "bootstrap-token-secret", "", "the bootstrap token's secret: 16 characters [a-z0-9]")
	f.DurationVar(&o.ttl, "bootstrap-token-ttl", 24*time.Hour, "how long the bootstrap token authenticates")
	f.StringVar(&o.apiserver, "apiserver-address", "", "the API server's URL as virtual nodes reach it, e.g. https://10.0.0.1:6443")
	f.StringVar(&o.caPath, "cluster-ca-path", "", "the CA that signed the API server's certificate (PEM)")
	f.StringVar(&o.output, "output", defaultDeployKubeconfig(), "where to write the virtual node's kubeconfig (0600)")
	cmd.AddCommand(setup, newValidateCommand(g), newCleanCommand(g))
	return cmd
}

// check validates the flags; it touches nothing.
func (o *setupOptions) check() (caPEM []byte, err error) {
	var errs []error
	if o.bootstrap {
		if !tokenIDRE.MatchString(o.tokenID) {
			errs = append(errs, fmt.Errorf("--bootstrap-token-id %q: must be exactly 6 characters, lower-case letters and digits ([a-z0-9]{6}, Kubernetes' bootstrap token rule)", o.tokenID))
		}
		if !tokenSecretRE.MatchString(o.tokenSecret) {
			errs = append(errs, fmt.Errorf("--bootstrap-token-secret: must be exactly 16 characters, lower-case letters and digits ([a-z0-9]{16}, Kubernetes' bootstrap token rule)"))
		}
		if o.ttl <= 0 {
			errs = append(errs, fmt.Errorf("--bootstrap-token-ttl %s: must be positive", o.ttl))
		}
	} else if o.tokenID != "" || o.tokenSecret != "" {
		errs = append(errs, errors.New("--bootstrap-token-id and --bootstrap-token-secret need --bootstrap"))
	}
	if o.apiserver == "" {
		errs = append(errs, errors.New("--apiserver-address is required: the API server's URL as virtual nodes reach it (e.g. https://10.0.0.1:6443)"))
	} else if u, perr := url.Parse(o.apiserver); perr != nil || u.Scheme != "https" || u.Host == "" {
		errs = append(errs, fmt.Errorf("--apiserver-address %q: must be https://host[:port]", o.apiserver))
	}
	if o.caPath == "" {
		errs = append(errs, errors.New("--cluster-ca-path is required: the CA of the API server's certificate (kube-apiserver's --client-ca-file on kubeadm clusters)"))
	} else if caPEM, err = readCA(o.caPath); err != nil {
		errs = append(errs, err)
	}
	if o.output == "" {
		errs = append(errs, errors.New("--output must not be empty"))
	}
	return caPEM, errors.Join(errs...)
}

func readCA(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--cluster-ca-path: %w", err)
	}
	if _, err := caPool(data); err != nil {
		return nil, fmt.Errorf("--cluster-ca-path %s: %w", path, err)
	}
	return data, nil
}

func caPool(data []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("a certificate does not parse: %w", err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("holds no PEM certificate")
	}
	return pool, nil
}

// probeAPIServer checks that the API server answers at addr with a
// certificate caPEM verifies: any HTTP answer will do, an anonymous
// request may well be refused.
func probeAPIServer(ctx context.Context, addr string, caPEM []byte, caName string) error {
	pool, err := caPool(caPEM)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, addr+"/version", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		var unknown x509.UnknownAuthorityError
		var invalid x509.CertificateInvalidError
		var host x509.HostnameError
		var verify *tls.CertificateVerificationError
		switch {
		case errors.As(err, &unknown) || errors.As(err, &verify) && !errors.As(err, &host) && !errors.As(err, &invalid):
			return fmt.Errorf("the API server at %s presents a certificate that the CA in %s did not sign: pass the CA of the API server's certificate", addr, caName)
		case errors.As(err, &host):
			return fmt.Errorf("the API server's certificate is not valid for %s (%v): use an address the certificate names", addr, host)
		}
		return fmt.Errorf("cannot reach the API server at %s: %w", addr, err)
	}
	resp.Body.Close()
	return nil
}

func (g *globals) setup(ctx context.Context, o *setupOptions) error {
	caPEM, err := o.check()
	if err != nil {
		return err
	}
	var a *admin
	if !g.dry {
		if err := probeAPIServer(ctx, o.apiserver, caPEM, o.caPath); err != nil {
			return err
		}
		if a, err = g.admin(ctx); err != nil {
			return err
		}
	}
	ap := a.applier(g)
	rbac, err := manifestDir("vnode")
	if err != nil {
		return err
	}
	var token, mode string
	if o.bootstrap {
		secret, err := toUnstructured(bootstrapTokenSecret(o.tokenID, o.tokenSecret, time.Now().Add(o.ttl)))
		if err != nil {
			return err
		}
		if err := ap.apply(ctx, append(rbac, secret)); err != nil {
			return err
		}
		token = bootstraputil.TokenFromIDAndSecret(o.tokenID, o.tokenSecret)
		mode = fmt.Sprintf("TLS bootstrap: token %s expires %s; the node's certificate is approved by vnode-approver (`vnode addon enable vnode-approver`) and rotated", o.tokenID, time.Now().Add(o.ttl).UTC().Format(time.RFC3339))
	} else {
		objs, err := serviceAccountObjects(rbac)
		if err != nil {
			return err
		}
		if err := ap.apply(ctx, append(rbac, objs...)); err != nil {
			return err
		}
		if !g.dry {
			if token, err = waitServiceAccountToken(ctx, a); err != nil {
				return err
			}
		}
		mode = fmt.Sprintf("ServiceAccount %s/%s: this token does not expire and is NOT rotated; delete Secret %s/%s to revoke it, then re-run setup", vnodeNamespace, serviceAccountName, vnodeNamespace, serviceAccountTok)
	}
	if g.dry {
		fmt.Fprintf(g.out, "would write %s (0600): server %s, CA from %s, token masked\n%s\n", o.output, o.apiserver, o.caPath, mode)
		return nil
	}
	if err := writeKubeconfig(o.output, o.apiserver, caPEM, token); err != nil {
		return err
	}
	fmt.Fprintf(g.out, "wrote %s\n%s\n", o.output, mode)
	return nil
}

func bootstrapTokenSecret(id, secret string, expires time.Time) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name: bootstraputil.BootstrapTokenSecretName(id), Namespace: metav1.NamespaceSystem,
			Labels: map[string]string{partOfLabel: partOfValue},
		},
		Type: bootstrapapi.SecretTypeBootstrapToken,
		Data: map[string][]byte{
			bootstrapapi.BootstrapTokenIDKey:               []byte(id),
			bootstrapapi.BootstrapTokenSecretKey:           []byte(secret),
			bootstrapapi.BootstrapTokenExpirationKey:       []byte(expires.UTC().Format(time.RFC3339)),
			bootstrapapi.BootstrapTokenUsageAuthentication: []byte("true"),
			bootstrapapi.BootstrapTokenExtraGroupsKey:      []byte(identity.BootstrapGroup),
			bootstrapapi.BootstrapTokenDescriptionKey:      []byte("vnode: TLS bootstrap of virtual nodes (vnode cluster setup)"),
		},
	}
}

// findObject returns the first object of kind in objs.
func findObject(objs []*unstructured.Unstructured, kind string) (*unstructured.Unstructured, error) {
	for _, u := range objs {
		if u.GetKind() == kind {
			return u, nil
		}
	}
	return nil, fmt.Errorf("manifests/vnode has no %s", kind)
}

// serviceAccountObjects are ServiceAccount mode's account, its long-lived
// token and its bindings to the roles manifests/vnode defines.
func serviceAccountObjects(rbac []*unstructured.Unstructured) ([]*unstructured.Unstructured, error) {
	clusterRole, err := findObject(rbac, "ClusterRole")
	if err != nil {
		return nil, err
	}
	role, err := findObject(rbac, "Role")
	if err != nil {
		return nil, err
	}
	labels := map[string]string{partOfLabel: partOfValue}
	subject := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: serviceAccountName, Namespace: vnodeNamespace}}
	typed := []runtime.Object{
		vnodeNamespaceObject(),
		&corev1.ServiceAccount{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}, ObjectMeta: metav1.ObjectMeta{Name: serviceAccountName, Namespace: vnodeNamespace, Labels: labels}},
		&corev1.Secret{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Name: serviceAccountTok, Namespace: vnodeNamespace, Labels: labels,
				Annotations: map[string]string{corev1.ServiceAccountNameKey: serviceAccountName}},
			Type: corev1.SecretTypeServiceAccountToken,
		},
		&rbacv1.ClusterRoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: saBindingName, Labels: labels},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole.GetName()},
			Subjects:   subject,
		},
		&rbacv1.RoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: saBindingName, Namespace: role.GetNamespace(), Labels: labels},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.GetName()},
			Subjects:   subject,
		},
	}
	var out []*unstructured.Unstructured
	for _, t := range typed {
		u, err := toUnstructured(t)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

// vnodeNamespaceObject is the namespace vnode's own objects live in.
func vnodeNamespaceObject() *corev1.Namespace {
	return &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: vnodeNamespace, Labels: map[string]string{partOfLabel: partOfValue}}}
}

// waitServiceAccountToken waits for the token controller to fill the
// ServiceAccount's token Secret.
func waitServiceAccountToken(ctx context.Context, a *admin) (string, error) {
	var token string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		s, err := a.client.CoreV1().Secrets(vnodeNamespace).Get(ctx, serviceAccountTok, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		token = string(s.Data[corev1.ServiceAccountTokenKey])
		return token != "", nil
	})
	if err != nil {
		return "", fmt.Errorf("waiting for kube-controller-manager to fill Secret %s/%s with the ServiceAccount's token (is its token controller running with --service-account-private-key-file?): %w", vnodeNamespace, serviceAccountTok, err)
	}
	return token, nil
}

// writeKubeconfig writes the node's kubeconfig atomically, 0600.
func writeKubeconfig(path, server string, caPEM []byte, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["vnode"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["vnode"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["vnode"] = &clientcmdapi.Context{Cluster: "vnode", AuthInfo: "vnode"}
	cfg.CurrentContext = "vnode"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("encoding the node's kubeconfig: %w", err)
	}
	return config.WriteSecretFile(path, data)
}

// writeSecretFile writes data to path 0600 through a temporary file.
func newCleanCommand(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "clean",
		Short: "Remove what `cluster setup` and the add-ons created, and the node's kubeconfig",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.clean(cmd.Context(), output)
		},
	}
	cmd.Flags().StringVar(&output, "output", defaultDeployKubeconfig(), "the node's kubeconfig that setup wrote")
	return cmd
}

func (g *globals) clean(ctx context.Context, output string) error {
	var a *admin
	var err error
	if !g.dry {
		if a, err = g.admin(ctx); err != nil {
			return err
		}
	}
	// In-cluster nodes first: their Secrets hold AccessKeys.
	if err := g.cleanInCluster(ctx, a); err != nil {
		return err
	}
	ap := a.applier(g)
	for _, ad := range addons {
		objs, err := manifestDir(ad.dir)
		if err != nil {
			continue // not in this build: nothing of it was applied
		}
		if err := ap.remove(ctx, objs); err != nil {
			return err
		}
	}
	rbac, err := manifestDir("vnode")
	if err != nil {
		return err
	}
	sa, err := serviceAccountObjects(rbac)
	if err != nil {
		return err
	}
	if err := ap.remove(ctx, append(rbac, sa...)); err != nil {
		return err
	}
	// Bootstrap tokens setup made, whatever their ids.
	sel := metav1.ListOptions{LabelSelector: partOfLabel + "=" + partOfValue, FieldSelector: "type=" + string(bootstrapapi.SecretTypeBootstrapToken)}
	if g.dry {
		fmt.Fprintf(g.out, "would delete kube-system Secrets of type %s labelled %s=%s\nwould remove %s\n", bootstrapapi.SecretTypeBootstrapToken, partOfLabel, partOfValue, output)
		return nil
	}
	secrets, err := a.client.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, sel)
	if err != nil {
		return fmt.Errorf("listing vnode's bootstrap tokens: %w", err)
	}
	for _, s := range secrets.Items {
		if err := a.client.CoreV1().Secrets(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting Secret %s/%s: %w", s.Namespace, s.Name, err)
		}
		fmt.Fprintf(g.out, "Secret %s/%s deleted\n", s.Namespace, s.Name)
	}
	if err := os.Remove(output); err == nil {
		fmt.Fprintf(g.out, "removed %s\n", output)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", output, err)
	}
	return nil
}
