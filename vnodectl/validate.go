package vnodectl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"

	"github.com/vnode-project/vnode/internal/identity"
)

// errEmptyKubeconfig is seed 004's own message.
var errEmptyKubeconfig = errors.New("kubeconfig can't be empty")

type validateOptions struct {
	nodeKubeconfig string
	nodeName       string
}

func newValidateCommand(g *globals) *cobra.Command {
	o := &validateOptions{}
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check that virtual nodes can join with the kubeconfig setup wrote; each failed check says how to fix it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.validate(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVar(&o.nodeKubeconfig, "node-kubeconfig", "", "the virtual node's kubeconfig (default: the config context's kubeconfig, else ~/.vnode/deploy/kubeconfig)")
	cmd.Flags().StringVar(&o.nodeName, "node-name", "", "the node name whose permissions to check (default: the context's vnode-name, else <region-id>.vnd-validate)")
	return cmd
}

// checklist prints one line per check and counts failures.
type checklist struct {
	g      *globals
	failed int
}

func (c *checklist) pass(format string, args ...any) {
	fmt.Fprintf(c.g.out, "[PASS] %s\n", fmt.Sprintf(format, args...))
}

func (c *checklist) fail(fix string, format string, args ...any) {
	c.failed++
	fmt.Fprintf(c.g.out, "[FAIL] %s\n       fix: %s\n", fmt.Sprintf(format, args...), fix)
}

// nodeDefaults reads, from the config file if there is one, the node's
// kubeconfig path and name.
func (g *globals) nodeDefaults(o *validateOptions) (path, name string) {
	path, name = o.nodeKubeconfig, o.nodeName
	f, _, err := g.loadConfig()
	if err == nil {
		if c, err := f.Context(g.contextName); err == nil {
			if path == "" {
				path, _ = c.KubeconfigPath()
			}
			if name == "" {
				switch {
				case c.VNodeName != "":
					name = c.VNodeName
				case c.RegionID != "" && c.VirtualNodeID != "":
					name = c.RegionID + "." + c.VirtualNodeID
				case c.RegionID != "":
					name = c.RegionID + ".vnd-validate"
				}
			}
		}
	}
	if path == "" {
		path = defaultDeployKubeconfig()
	}
	if name == "" {
		name = "vnode-validate"
	}
	return path, name
}

func (g *globals) validate(ctx context.Context, o *validateOptions) error {
	path, nodeName := g.nodeDefaults(o)
	data, err := os.ReadFile(path)
	if err != nil || len(strings.TrimSpace(string(data))) == 0 {
		return errEmptyKubeconfig
	}
	c := &checklist{g: g}
	nodeCfg, err := clientcmd.RESTConfigFromKubeConfig(data)
	if err != nil {
		c.fail("re-run `vnode cluster setup` to rewrite it", "kubeconfig %s parses: %v", path, err)
		return c.result()
	}
	c.pass("kubeconfig %s exists and parses (server %s)", path, nodeCfg.Host)
	if g.dry {
		fmt.Fprintln(g.out, "--dry: the checks against the cluster are skipped")
		return c.result()
	}
	bootstrapID, isBootstrap := bootstrapTokenID(nodeCfg.BearerToken)
	nodeClient, err := kubernetes.NewForConfig(nodeCfg)
	if err != nil {
		c.fail("re-run `vnode cluster setup`", "kubeconfig %s makes a client: %v", path, err)
		return c.result()
	}
	v, err := nodeClient.Discovery().ServerVersion()
	if err != nil {
		c.fail("check --apiserver-address (reachable from here and from the nodes) and that --cluster-ca-path is the CA of the API server's certificate, then re-run `vnode cluster setup`",
			"the API server %s answers with the kubeconfig's CA: %v", nodeCfg.Host, err)
		return c.result()
	}
	c.pass("the API server %s answers with the kubeconfig's CA", nodeCfg.Host)
	version := v.GitVersion
	if g.kubernetesVersion != "" {
		version = g.kubernetesVersion
	}
	if err := checkKubernetesVersion(version, "the cluster"); err != nil {
		c.fail("run a supported Kubernetes ("+supportedRange()+")", "%v", err)
	} else {
		c.pass("Kubernetes %s is supported (%s)", version, supportedRange())
	}
	want := serviceAccountUser()
	if isBootstrap {
		want = bootstrapapi.BootstrapUserPrefix + bootstrapID
	}
	c.identity(ctx, nodeClient, want, isBootstrap)

	a, err := g.admin(ctx)
	if err != nil {
		c.fail("pass the cluster admin's kubeconfig with --kubeconfig (a node's own credentials cannot check its rights)", "admin connection: %v", err)
		return c.result()
	}
	if isBootstrap {
		c.bootstrapToken(ctx, a, bootstrapID)
		c.permissions(ctx, a, identity.VNodeUser(nodeName), []string{identity.VNodesGroup, "system:authenticated"})
		c.bootstrapPermissions(ctx, a, want)
		ad, _ := findAddon("vnode-approver")
		if s := ad.status(ctx, a, nil, ""); strings.HasPrefix(s, "Running") {
			c.pass("vnode-approver is %s", s)
		} else {
			c.fail("`vnode addon enable vnode-approver`: in TLS bootstrap mode it approves the nodes' certificates", "vnode-approver is running: %s", s)
		}
	} else {
		c.permissions(ctx, a, want, []string{"system:serviceaccounts", "system:serviceaccounts:" + vnodeNamespace, "system:authenticated"})
	}
	c.daemonSets(ctx, a)
	return c.result()
}

func (c *checklist) result() error {
	if c.failed > 0 {
		return fmt.Errorf("%d check(s) failed", c.failed)
	}
	fmt.Fprintln(c.g.out, "the cluster is ready for virtual nodes")
	return nil
}

func serviceAccountUser() string {
	return "system:serviceaccount:" + vnodeNamespace + ":" + serviceAccountName
}

// bootstrapTokenID returns the id of a bootstrap token.
func bootstrapTokenID(token string) (string, bool) {
	if !bootstraputil.IsValidBootstrapToken(token) {
		return "", false
	}
	id, _, _ := strings.Cut(token, ".")
	return id, true
}

// identity asks the API server who the kubeconfig is (SelfSubjectReview).
func (c *checklist) identity(ctx context.Context, cl kubernetes.Interface, want string, bootstrap bool) {
	r, err := cl.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		c.fail("re-run `vnode cluster setup` (the token may have expired or been deleted)", "the kubeconfig's credentials are accepted: %v", err)
		return
	}
	u := r.Status.UserInfo
	if u.Username != want {
		c.fail("re-run `vnode cluster setup`", "the kubeconfig authenticates as %s, want %s", u.Username, want)
		return
	}
	if bootstrap && !contains(u.Groups, identity.BootstrapGroup) {
		c.fail("re-run `vnode cluster setup --bootstrap` (the token Secret must carry auth-extra-groups "+identity.BootstrapGroup+")", "%s is in group %s (has %v)", u.Username, identity.BootstrapGroup, u.Groups)
		return
	}
	c.pass("the kubeconfig authenticates as %s %v", u.Username, u.Groups)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// bootstrapToken checks the token's Secret: present and unexpired.
func (c *checklist) bootstrapToken(ctx context.Context, a *admin, id string) {
	name := bootstraputil.BootstrapTokenSecretName(id)
	s, err := a.client.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		c.fail("re-run `vnode cluster setup --bootstrap`", "bootstrap token Secret kube-system/%s: %v", name, err)
		return
	}
	exp := string(s.Data[bootstrapapi.BootstrapTokenExpirationKey])
	if exp != "" {
		t, err := time.Parse(time.RFC3339, exp)
		if err != nil || time.Now().After(t) {
			c.fail("re-run `vnode cluster setup --bootstrap` with a longer --bootstrap-token-ttl", "bootstrap token %s is unexpired (expires %s)", id, exp)
			return
		}
	}
	c.pass("bootstrap token %s is valid until %s", id, exp)
}

// permissions checks, one SubjectAccessReview per verb made with the
// admin's credentials, that user may do what the roles of manifests/vnode
// grant a virtual node.
func (c *checklist) permissions(ctx context.Context, a *admin, user string, groups []string) {
	attrs, err := requiredPermissions()
	if err != nil {
		c.fail("this build's manifests/vnode is broken", "reading the permissions a node needs: %v", err)
		return
	}
	denied := 0
	for _, at := range attrs {
		ok, err := allowed(ctx, a, user, groups, at)
		if err != nil {
			c.fail("check that the admin kubeconfig may create SubjectAccessReviews", "SubjectAccessReview for %s: %v", user, err)
			return
		}
		if !ok {
			denied++
			c.fail("run `vnode cluster setup` (it applies the RBAC of manifests/vnode)", "%s may %s", user, describeAttrs(at))
		}
	}
	if denied == 0 {
		c.pass("%s has all %d permissions a virtual node needs", user, len(attrs))
	}
}

// bootstrapPermissions: the bootstrap token may create CSRs, and vnode's
// CSRs (certificatesigningrequests/vnodeclient, what vnode-approver checks).
func (c *checklist) bootstrapPermissions(ctx context.Context, a *admin, user string) {
	groups := []string{bootstrapapi.BootstrapDefaultGroup, identity.BootstrapGroup, "system:authenticated"}
	for _, at := range []authzv1.ResourceAttributes{
		{Group: "certificates.k8s.io", Resource: "certificatesigningrequests", Verb: "create"},
		{Group: "certificates.k8s.io", Resource: "certificatesigningrequests", Subresource: "vnodeclient", Verb: "create"},
	} {
		ok, err := allowed(ctx, a, user, groups, at)
		switch {
		case err != nil:
			c.fail("check that the admin kubeconfig may create SubjectAccessReviews", "SubjectAccessReview for %s: %v", user, err)
		case !ok && at.Subresource == "vnodeclient":
			c.fail("`vnode addon enable vnode-approver` (it binds "+identity.BootstrapGroup+" to this)", "%s may %s", user, describeAttrs(at))
		case !ok:
			c.fail("run `vnode cluster setup --bootstrap`", "%s may %s", user, describeAttrs(at))
		default:
			c.pass("%s may %s", user, describeAttrs(at))
		}
	}
}

func allowed(ctx context.Context, a *admin, user string, groups []string, at authzv1.ResourceAttributes) (bool, error) {
	attrs := at
	r, err := a.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{
		Spec: authzv1.SubjectAccessReviewSpec{User: user, Groups: groups, ResourceAttributes: &attrs},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	return r.Status.Allowed, nil
}

func describeAttrs(at authzv1.ResourceAttributes) string {
	res := at.Resource
	if at.Group != "" {
		res += "." + at.Group
	}
	if at.Subresource != "" {
		res += "/" + at.Subresource
	}
	where := "cluster-wide"
	if at.Namespace != "" {
		where = "in " + at.Namespace
	}
	return fmt.Sprintf("%s %s %s", at.Verb, res, where)
}

// requiredPermissions are the rules of manifests/vnode's ClusterRole and
// Role, one attribute set per verb and resource.
func requiredPermissions() ([]authzv1.ResourceAttributes, error) {
	objs, err := manifestDir("vnode")
	if err != nil {
		return nil, err
	}
	var out []authzv1.ResourceAttributes
	for _, u := range objs {
		var rules []rbacv1.PolicyRule
		switch u.GetKind() {
		case "ClusterRole":
			var r rbacv1.ClusterRole
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &r); err != nil {
				return nil, err
			}
			rules = r.Rules
		case "Role":
			var r rbacv1.Role
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &r); err != nil {
				return nil, err
			}
			rules = r.Rules
		default:
			continue
		}
		for _, rule := range rules {
			for _, grp := range rule.APIGroups {
				for _, res := range rule.Resources {
					resource, sub, _ := strings.Cut(res, "/")
					for _, verb := range rule.Verbs {
						out = append(out, authzv1.ResourceAttributes{Namespace: u.GetNamespace(), Group: grp, Resource: resource, Subresource: sub, Verb: verb})
					}
				}
			}
		}
	}
	return out, nil
}
