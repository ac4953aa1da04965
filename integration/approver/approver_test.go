package approver

import (
	"context"
	"testing"
	"time"

	"github.com/vnode-project/vnode/integration/controlplane"
)

// TestApprover runs vnode-approver as a process under its own service
// account on one real control plane, shared by the subtests because
// starting one costs more than most of them. kube-controller-manager signs
// (its csrapproving controller is off), and signs 1-minute certificates: it
// backdates each by 5 minutes, and client-go's certificate manager renews at
// 70-90% of NotBefore..NotAfter, so a virtual node renews within about 25 s
// of issuance (the CSR's expirationSeconds cannot go below 600 s, and
// provider/bootstrap has no rotation threshold of its own).
func TestApprover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	e := newEnv(ctx, t, controlplane.Options{
		DisableCSRApprover:          true,
		ExtraControllerManagerFlags: []string{"--cluster-signing-duration=1m"},
	})
	subtests := []struct {
		name string
		run  func(context.Context, *testing.T, *env)
	}{
		{"RBACLeastPrivilege", testRBAC},
		{"RBACExactRules", testRulesExact},
		{"MetricsNeedAuthentication", testMetricsAuth},
		{"Adversarial", testAdversarial},
		{"FreshTokens", testFreshTokens},
		{"BootstrapAndRenewal", testBootstrap},
		{"ServingCertificate", testServing},
		// Last: it leaves a thousand decided CSRs behind.
		{"Flood", testFlood},
	}
	for _, st := range subtests {
		e.ensureApprover(ctx, t)
		t.Run(st.name, func(t *testing.T) { st.run(ctx, t, e) })
	}
	e.checkApproverLog(t)
}
