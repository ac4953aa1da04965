// Package manifests embeds the Kubernetes manifests of vnode and its
// add-ons, so that the vnode CLI applies exactly what this source tree
// holds. Each folder is one unit applied in its kustomization.yaml order.
package manifests

import "embed"

// FS holds every manifest folder (vnode, approver, tunnel, samples, and
// eci-profile when this build has it).
//
//go:embed *
var FS embed.FS
