package approver

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/vnode-project/vnode/internal/identity"
)

// The identity a virtual node's certificate carries.
const (
	SignerName = certificatesv1.KubeAPIServerClientSignerName
	// ServingSignerName signs the serving certificates of virtual nodes'
	// kubelet APIs (see serving.go).
	ServingSignerName = certificatesv1.KubeletServingSignerName

	// BootstrapSubresource is what a SubjectAccessReview must allow a
	// bootstrap requestor to create (group certificates.k8s.io). It is
	// vnode-specific so that granting it never lets kube-controller-manager's
	// approver hand out system:node identities (it checks nodeclient).
	BootstrapSubresource = "vnodeclient"

	// DefaultMaxExpiration caps spec.expirationSeconds.
	DefaultMaxExpiration = 365 * 24 * time.Hour
)

// Bootstrap token Secrets, as the API server's bootstrap authenticator reads
// them (k8s.io/cluster-bootstrap/token/api).
const (
	bootstrapUserPrefix    = "system:bootstrap:"
	tokenSecretNamespace   = "kube-system"
	tokenSecretPrefix      = "bootstrap-token-"
	tokenIDKey             = "token-id"
	tokenExpirationKey     = "expiration"
	tokenUsageAuthKey      = "usage-bootstrap-authentication"
	tokenExtraGroupsKey    = "auth-extra-groups"
	maxNodeNameLength      = validation.DNS1123SubdomainMaxLength
	certificateRequestType = "CERTIFICATE REQUEST"
)

// Check names one rule of the policy. Denials and metrics carry it.
type Check string

// The checks, in the order Evaluate applies them.
const (
	CheckPEM          Check = "pem"
	CheckKey          Check = "key"
	CheckCommonName   Check = "common-name"
	CheckOrganization Check = "organization"
	CheckSANs         Check = "subject-alt-names"
	CheckUsages       Check = "usages"
	CheckExpiration   Check = "expiration"
	CheckNode         Check = "node-not-virtual"
	CheckRequestor    Check = "requestor"
	CheckToken        Check = "bootstrap-token"
	CheckAccessReview Check = "access-review"
	// kubelet-serving CSRs only (serving.go).
	CheckNodeNotFound Check = "node-not-found"
	CheckUnregistered Check = "unregistered-address"
	CheckForeign      Check = "address-of-another-node"
)

// Why a CSR was ignored.
const (
	IgnoreNotOurs        = "not-ours"
	IgnoreAlreadyDecided = "already-decided"
	IgnoreDenyDisabled   = "deny-disabled"
)

// ConditionReason is the CSR condition reason for a denial by check c, e.g.
// "VNodeCommonName" for common-name.
func (c Check) ConditionReason() string {
	var b strings.Builder
	b.WriteString("VNode")
	for _, part := range strings.Split(string(c), "-") {
		if part == "" {
			continue
		}
		b.WriteString(strings.ToUpper(part[:1]) + part[1:])
	}
	return b.String()
}

// Verdict is what to do with a CSR.
type Verdict int

const (
	// Ignore: not ours, or already decided; nothing to write.
	Ignore Verdict = iota
	// Approve: every check passed.
	Approve
	// Deny: ours, and Check failed.
	Deny
	// Retry: a fact could not be established (e.g. the SubjectAccessReview
	// failed); try again later.
	Retry
)

func (v Verdict) String() string {
	switch v {
	case Ignore:
		return "ignore"
	case Approve:
		return "approve"
	case Deny:
		return "deny"
	case Retry:
		return "retry"
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// Decision is the outcome of Evaluate.
type Decision struct {
	Verdict Verdict
	// Check that failed (Deny).
	Check Check
	// IgnoreReason says why (Ignore).
	IgnoreReason string
	// Message explains the decision to a human; it goes on the condition.
	Message string
	// Bootstrap is true for a bootstrap request, false for a renewal.
	Bootstrap bool
	// Serving is true for a kubelet-serving certificate.
	Serving bool
	// Err is the failure behind Retry.
	Err error
}

// UserInfo is a CSR's requestor, as the API server recorded it.
type UserInfo struct {
	Username string
	UID      string
	Groups   []string
	Extra    map[string]certificatesv1.ExtraValue
}

// AccessReviewer answers SubjectAccessReviews.
type AccessReviewer interface {
	// CanCreate reports whether user may create certificatesigningrequests/
	// subresource in group certificates.k8s.io. An error means no answer.
	CanCreate(ctx context.Context, user UserInfo, subresource string) (bool, error)
}

// SecretGetter looks up a Secret (a lister in production).
type SecretGetter interface {
	GetSecret(namespace, name string) (*corev1.Secret, error)
}

// NodeGetter returns a Node's labels; found is false when there is no such
// Node (a lister in production).
type NodeGetter interface {
	NodeLabels(name string) (labels map[string]string, found bool, err error)
}

// Facts are where Evaluate gets what the CSR itself does not say.
type Facts struct {
	Access  AccessReviewer
	Secrets SecretGetter
	Nodes   NodeGetter
	// Registered reads a Node as the API server has it now (serving
	// CSRs: its labels and status.addresses).
	Registered NodeReader
	// Now is the time token expiry is judged against.
	Now time.Time
}

// NodeReader reads Nodes as the API server has them now.
type NodeReader interface {
	// GetNode returns Node name, or an error apierrors.IsNotFound
	// recognises when there is none.
	GetNode(ctx context.Context, name string) (*corev1.Node, error)
	// ListNodes returns every Node.
	ListNodes(ctx context.Context) ([]corev1.Node, error)
}

// Policy is the configurable part of the rules.
type Policy struct {
	// MaxExpiration caps spec.expirationSeconds; 0 means DefaultMaxExpiration.
	// A CSR without expirationSeconds gets the signer's duration.
	MaxExpiration time.Duration
	// BootstrapGroup is the group of vnode bootstrap tokens; "" means
	// DefaultBootstrapGroup.
	BootstrapGroup string
}

func (p Policy) bootstrapGroup() string {
	if p.BootstrapGroup == "" {
		return identity.BootstrapGroup
	}
	return p.BootstrapGroup
}

func (p Policy) maxExpiration() time.Duration {
	if p.MaxExpiration <= 0 {
		return DefaultMaxExpiration
	}
	return p.MaxExpiration
}

// Decided reports whether csr already carries an Approved, Denied or Failed
// condition (all terminal) or a certificate.
func Decided(csr *certificatesv1.CertificateSigningRequest) bool {
	if len(csr.Status.Certificate) > 0 {
		return true
	}
	for _, c := range csr.Status.Conditions {
		switch c.Type {
		case certificatesv1.CertificateApproved, certificatesv1.CertificateDenied, certificatesv1.CertificateFailed:
			return true
		}
	}
	return false
}

// Requestor returns the CSR's requestor as recorded by the API server.
func Requestor(csr *certificatesv1.CertificateSigningRequest) UserInfo {
	return UserInfo{Username: csr.Spec.Username, UID: csr.Spec.UID, Groups: csr.Spec.Groups, Extra: csr.Spec.Extra}
}

// Evaluate decides on one CSR. It reads facts but changes nothing, so it can
// run any number of times; only the answers of facts make it vary.
func (p Policy) Evaluate(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, facts Facts) Decision {
	if Decided(csr) {
		return Decision{Verdict: Ignore, IgnoreReason: IgnoreAlreadyDecided, Message: "already approved, denied, failed or issued"}
	}
	switch csr.Spec.SignerName {
	case SignerName:
		return p.evaluateClient(ctx, csr, facts)
	case ServingSignerName:
		return p.evaluateServing(ctx, csr, facts)
	}
	return Decision{Verdict: Ignore, IgnoreReason: IgnoreNotOurs, Message: "signer " + csr.Spec.SignerName}
}

// evaluateClient decides on a client certificate for system:vnode:<node>.
func (p Policy) evaluateClient(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, facts Facts) Decision {
	req, pemErr := parseRequest(csr.Spec.Request)
	if !p.ours(csr, req) {
		return Decision{Verdict: Ignore, IgnoreReason: IgnoreNotOurs, Message: "neither the subject nor the requestor is a virtual node's"}
	}
	if pemErr != nil {
		return deny(CheckPEM, pemErr.Error())
	}
	if err := checkKey(req); err != nil {
		return deny(CheckKey, err.Error())
	}
	node, err := nodeName(req.Subject.CommonName, identity.VNodeUserPrefix)
	if err != nil {
		return deny(CheckCommonName, err.Error())
	}
	if err := checkOrganization(req, identity.VNodesGroup); err != nil {
		return deny(CheckOrganization, err.Error())
	}
	if n := len(req.DNSNames) + len(req.IPAddresses) + len(req.EmailAddresses) + len(req.URIs); n > 0 {
		return deny(CheckSANs, fmt.Sprintf("a client certificate carries no subject alternative names; this request has %d (DNS %q, IP %v, email %q, URI %v)", n, req.DNSNames, req.IPAddresses, req.EmailAddresses, req.URIs))
	}
	if err := checkUsages(csr.Spec.Usages); err != nil {
		return deny(CheckUsages, err.Error())
	}
	if e := csr.Spec.ExpirationSeconds; e != nil && time.Duration(*e)*time.Second > p.maxExpiration() {
		return deny(CheckExpiration, fmt.Sprintf("expirationSeconds %d exceeds the maximum %d", *e, int64(p.maxExpiration()/time.Second)))
	}
	labels, found, err := facts.Nodes.NodeLabels(node)
	if err != nil {
		return retryLater(fmt.Errorf("looking up node %s: %w", node, err))
	}
	if found && labels[identity.NodeTypeLabel] != identity.NodeTypeVirtual {
		return deny(CheckNode, fmt.Sprintf("node %s exists and is not a virtual node (no label %s=%s)", node, identity.NodeTypeLabel, identity.NodeTypeVirtual))
	}

	user := Requestor(csr)
	switch {
	case user.Username == req.Subject.CommonName:
		// Renewal: the node itself, authenticated by its current certificate.
		if !slices.Contains(user.Groups, identity.VNodesGroup) {
			return deny(CheckRequestor, fmt.Sprintf("renewal by %s without group %s", user.Username, identity.VNodesGroup))
		}
		return Decision{Verdict: Approve, Message: "Auto-approving renewal of virtual node client certificate " + req.Subject.CommonName}
	case strings.HasPrefix(user.Username, bootstrapUserPrefix) && slices.Contains(user.Groups, p.bootstrapGroup()):
		d := p.bootstrap(ctx, user, facts)
		if d.Verdict == Approve {
			d.Message = fmt.Sprintf("Auto-approving virtual node client certificate %s for bootstrap token %s after SubjectAccessReview", req.Subject.CommonName, strings.TrimPrefix(user.Username, bootstrapUserPrefix))
		}
		d.Bootstrap = true
		return d
	default:
		return deny(CheckRequestor, fmt.Sprintf("requestor %s (groups %q) is neither %s renewing nor a bootstrap token in %s", user.Username, user.Groups, req.Subject.CommonName, p.bootstrapGroup()))
	}
}

// ours: see the package doc.
func (p Policy) ours(csr *certificatesv1.CertificateSigningRequest, req *x509.CertificateRequest) bool {
	if req != nil && (strings.HasPrefix(req.Subject.CommonName, identity.VNodeLookalikePrefix) || slices.Contains(req.Subject.Organization, identity.VNodesGroup)) {
		return true
	}
	if strings.HasPrefix(csr.Spec.Username, identity.VNodeUserPrefix) || slices.Contains(csr.Spec.Groups, identity.VNodesGroup) {
		return true
	}
	return strings.HasPrefix(csr.Spec.Username, bootstrapUserPrefix) && slices.Contains(csr.Spec.Groups, p.bootstrapGroup())
}

// bootstrap checks a bootstrap token requestor: its Secret must still
// authenticate it in the bootstrap group (KCM's approver replays the recorded
// identity only; a revoked token must not get a certificate), and RBAC must
// let it create vnodeclient CSRs.
func (p Policy) bootstrap(ctx context.Context, user UserInfo, facts Facts) Decision {
	id := strings.TrimPrefix(user.Username, bootstrapUserPrefix)
	name := tokenSecretPrefix + id
	s, err := facts.Secrets.GetSecret(tokenSecretNamespace, name)
	switch {
	case apierrors.IsNotFound(err):
		return deny(CheckToken, fmt.Sprintf("bootstrap token %s no longer exists (Secret %s/%s)", id, tokenSecretNamespace, name))
	case err != nil:
		return retryLater(fmt.Errorf("looking up bootstrap token Secret %s/%s: %w", tokenSecretNamespace, name, err))
	}
	if msg := tokenProblem(s, id, p.bootstrapGroup(), facts.Now); msg != "" {
		return deny(CheckToken, fmt.Sprintf("bootstrap token %s: %s", id, msg))
	}
	ok, err := facts.Access.CanCreate(ctx, user, BootstrapSubresource)
	if err != nil {
		return retryLater(fmt.Errorf("reviewing access of %s: %w", user.Username, err))
	}
	if !ok {
		return deny(CheckAccessReview, fmt.Sprintf("%s may not create certificatesigningrequests/%s", user.Username, BootstrapSubresource))
	}
	return Decision{Verdict: Approve}
}

// tokenProblem says why Secret s no longer makes a valid vnode bootstrap
// token, or "" when it does.
func tokenProblem(s *corev1.Secret, id, group string, now time.Time) string {
	switch {
	case s.Type != corev1.SecretTypeBootstrapToken:
		return "Secret type is " + string(s.Type)
	case s.DeletionTimestamp != nil:
		return "Secret is being deleted"
	case string(s.Data[tokenIDKey]) != id:
		return "Secret's token-id does not match"
	case string(s.Data[tokenUsageAuthKey]) != "true":
		return "usage-bootstrap-authentication is not \"true\""
	}
	if exp := s.Data[tokenExpirationKey]; len(exp) > 0 {
		t, err := time.Parse(time.RFC3339, string(exp))
		if err != nil {
			// The authenticator treats an unparseable expiry as expired.
			return "unparseable expiration " + string(exp)
		}
		if !now.Before(t) {
			return "expired at " + t.UTC().Format(time.RFC3339)
		}
	}
	groups := strings.Split(string(s.Data[tokenExtraGroupsKey]), ",")
	for i := range groups {
		groups[i] = strings.TrimSpace(groups[i])
	}
	if !slices.Contains(groups, group) {
		return "auth-extra-groups no longer contains " + group
	}
	return ""
}

// parseRequest decodes exactly one CERTIFICATE REQUEST PEM block with
// nothing else around it, parses it and checks its self-signature. On error
// it still returns the parsed request when there was one, so ownership can
// be judged from the subject.
func parseRequest(data []byte) (*x509.CertificateRequest, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("spec.request holds no PEM block")
	}
	if block.Type != certificateRequestType {
		return nil, fmt.Errorf("PEM block type is %q, want %q", block.Type, certificateRequestType)
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing the certificate request: %w", err)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return req, fmt.Errorf("spec.request holds more than one PEM block or trailing data")
	}
	if len(block.Headers) > 0 {
		return req, fmt.Errorf("the PEM block has headers")
	}
	if err := req.CheckSignature(); err != nil {
		return req, fmt.Errorf("the request's signature does not verify: %w", err)
	}
	return req, nil
}

func checkKey(req *x509.CertificateRequest) error {
	switch k := req.PublicKey.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 {
			return fmt.Errorf("RSA key of %d bits; at least 2048 are required", n)
		}
		return nil
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("ECDSA curve %s; P-256 or P-384 is required", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	}
	return fmt.Errorf("unsupported public key algorithm %s", req.PublicKeyAlgorithm)
}

// checkOrganization: the subject O must be exactly [group].
func checkOrganization(req *x509.CertificateRequest, group string) error {
	if o := req.Subject.Organization; len(o) != 1 || o[0] != group {
		return fmt.Errorf("subject O is %q; it must be exactly [%q]", o, group)
	}
	return nil
}

// nodeName returns the node name a CN of the form prefix+<node> names, or
// why it names none.
func nodeName(cn, prefix string) (string, error) {
	if !strings.HasPrefix(cn, prefix) {
		return "", fmt.Errorf("subject CN %q does not start with %q", cn, prefix)
	}
	name := strings.TrimPrefix(cn, prefix)
	if name == "" {
		return "", fmt.Errorf("subject CN %q names no node", cn)
	}
	if len(name) > maxNodeNameLength {
		return "", fmt.Errorf("node name in subject CN is %d characters; at most %d are allowed", len(name), maxNodeNameLength)
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return "", fmt.Errorf("node name %q in subject CN is invalid: %s", name, strings.Join(errs, "; "))
	}
	return name, nil
}

var (
	usagesMinimal = sets.New(certificatesv1.UsageClientAuth, certificatesv1.UsageDigitalSignature)
	usagesWithKE  = sets.New(certificatesv1.UsageClientAuth, certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment)
)

func checkUsages(usages []certificatesv1.KeyUsage) error {
	got := sets.New(usages...)
	if len(got) != len(usages) {
		return fmt.Errorf("usages %q repeat a usage", usages)
	}
	if got.Equal(usagesMinimal) || got.Equal(usagesWithKE) {
		return nil
	}
	return fmt.Errorf("usages %q; want exactly [client auth, digital signature] or [client auth, digital signature, key encipherment]", usages)
}

func deny(c Check, msg string) Decision {
	return Decision{Verdict: Deny, Check: c, Message: msg}
}

func retryLater(err error) Decision {
	return Decision{Verdict: Retry, Err: err}
}

// sarAttributes is the SubjectAccessReview a bootstrap requestor must pass.
func sarAttributes(subresource string) *authorizationv1.ResourceAttributes {
	return &authorizationv1.ResourceAttributes{
		Group:       certificatesv1.GroupName,
		Resource:    "certificatesigningrequests",
		Subresource: subresource,
		Verb:        "create",
	}
}
