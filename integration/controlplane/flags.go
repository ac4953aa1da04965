package controlplane

import "strconv"

// DelegatingServerFlags are the flags of a program built on
// k8s.io/apiserver's delegating authentication and authorisation
// (kube-scheduler, kube-controller-manager, metrics-server) running outside
// the cluster: one kubeconfig for its API calls, TokenReviews and
// SubjectAccessReviews, and serving on loopback with the given pair.
func DelegatingServerFlags(kubeconfig string, port int, serving *CertPair) []string {
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + serving.CertPath, "--tls-private-key-file=" + serving.KeyPath,
	}
}
