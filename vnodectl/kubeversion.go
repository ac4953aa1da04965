package vnodectl

import (
	"fmt"

	utilversion "k8s.io/apimachinery/pkg/util/version"
)

// minKubernetesMinor is the oldest Kubernetes vnode supports: 1.28 is the
// first with authentication.k8s.io/v1 SelfSubjectReview (validate's identity
// check), and older releases lack CSR expirationSeconds (1.22) that the
// approver and the node's certificate rotation rely on. The newest is the
// one vnode is built and tested against (k8s.io/* v0.35 in go.mod, the
// control plane of integration/): a newer one may drop APIs vnode uses.
const (
	minKubernetesMinor = 28
	maxKubernetesMinor = 35
)

func supportedRange() string {
	return fmt.Sprintf("1.%d to 1.%d", minKubernetesMinor, maxKubernetesMinor)
}

// checkKubernetesVersion refuses a version outside the supported range;
// what names where the version came from (a flag, the API server).
func checkKubernetesVersion(v, what string) error {
	parsed, err := utilversion.ParseGeneric(v)
	if err != nil {
		return fmt.Errorf("%s %q is not a Kubernetes version (want e.g. 1.35 or v1.35.4; vnode supports Kubernetes %s)", what, v, supportedRange())
	}
	if parsed.Major() != 1 || parsed.Minor() < minKubernetesMinor || parsed.Minor() > maxKubernetesMinor {
		return fmt.Errorf("%s: Kubernetes %s is not supported; vnode supports Kubernetes %s", what, v, supportedRange())
	}
	return nil
}
