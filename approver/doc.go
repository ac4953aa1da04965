// Package approver approves the client certificates of virtual nodes: it
// watches CertificateSigningRequests and approves exactly those that ask the
// kubernetes.io/kube-apiserver-client signer for the identity
// system:vnode:<node> in group system:vnodes, sent by an entitled requestor
// (the node itself renewing, or a vnode bootstrap token whose Secret is still
// valid and which a SubjectAccessReview allows to create
// certificatesigningrequests/vnodeclient). The general client signer signs
// any subject it is given, so this policy is the only gate.
//
// Ours and not ours. A CSR is ours when its signer is
// kubernetes.io/kube-apiserver-client and either its subject CN starts with
// "system:vnode" (without the colon, so look-alikes such as system:vnodefoo
// are denied with a reason rather than left to someone else), its subject O
// contains system:vnodes, or its requestor is a virtual node (user
// system:vnode:*, group system:vnodes) or a vnode bootstrap token (the
// bootstrap group). Ours and failing a check: denied, with a condition
// reason naming the check (or only ignored when denial is turned off).
// Anything else is ignored and never denied, because Denied is terminal and
// the CSR may belong to another approver.
//
// Serving certificates. A virtual node's kubelet API (:10250) serves a
// kubernetes.io/kubelet-serving certificate (CN system:node:<node>, O
// system:nodes, server auth) that it requests as system:vnode:<node>.
// vnode-approver approves one only when the requestor is that node itself,
// the Node exists and is a virtual node, and every DNS name and IP address
// is the node's name or an address its Node registered (serving.go, which
// also says which of these CSRs are ours).
//
// Access reviews. A bootstrap requestor's SubjectAccessReview is reused
// for a few seconds (CachedReviewer), keyed on the whole recorded identity
// (user, UID, groups, extra) and only when it allowed: a burst of CSRs from
// one bootstrap token costs one review instead of one each, revoking the
// token's RBAC takes effect within the TTL, and a denial or an error is
// never reused. Every other check, the token's Secret included, runs on
// every CSR.
//
// Fairness. Work is queued per requestor and the requestors are served
// round-robin, so a flood of CSRs from one requestor delays another
// requestor's CSR by at most one CSR per flooding requestor.
package approver
