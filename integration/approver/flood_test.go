package approver

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	vnapprover "github.com/vnode-project/vnode/approver"
)

const (
	floodSize = 1000
	// fairLatency bounds the virtual node's approval during the flood.
	fairLatency = 10 * time.Second
)

// testFlood: 1,000 CSRs from one requestor do not hold back a virtual
// node's. The flood is created while vnode-approver is stopped, so the whole
// backlog is queued when it starts; the node bootstraps right after. A FIFO
// approver would serve the node's CSR after the backlog; a fair one serves
// it after a few, leaving most of the backlog pending.
func testFlood(ctx context.Context, t *testing.T, e *env) {
	const flooder, nodeName, tokenID = "flooder", "vn-fair", "fairnd"
	bindClusterRole(ctx, t, e.cp.Client, "test:flooder", nodeBootstrapper, userSubject(flooder))
	createToken(ctx, t, e.cp, tokenID, []string{bootstrapGroup}, nil)

	e.stopApprover(t)
	names := createFlood(ctx, t, e.userClient(t, flooder), floodSize)
	rec := watchFlood(ctx, t, e.cp.Client, names, "system:bootstrap:"+tokenID)
	e.startApprover(ctx, t)
	startVirtualNode(ctx, t, e.cp, nodeName, tokenID)

	r := rec.wait(ctx, t, 3*time.Minute)
	latency := r.nodeApproved.Sub(r.nodeSeen)
	t.Logf("node CSR %s approved %s after it was created; flood pending then: %d at its creation, %d at its approval; flood drained %s after the node's approval",
		r.nodeCSR, latency.Round(time.Millisecond), r.pendingAtSeen, r.pendingAtApproval, r.drained.Sub(r.nodeApproved).Round(time.Millisecond))
	if latency > fairLatency {
		t.Errorf("the virtual node's CSR took %s to be approved during the flood, want at most %s", latency, fairLatency)
	}
	if r.pendingAtSeen < floodSize/10 {
		t.Fatalf("inconclusive: only %d flood CSRs were pending when the node's CSR arrived", r.pendingAtSeen)
	}
	if r.pendingAtApproval*2 < r.pendingAtSeen {
		t.Errorf("unfair: the node's CSR waited for %d of the %d flood CSRs queued before it", r.pendingAtSeen-r.pendingAtApproval, r.pendingAtSeen)
	}
	if r.floodApproved > 0 || r.floodDeniedOther > 0 {
		t.Errorf("flood CSRs: %d approved, %d denied for a reason other than %s", r.floodApproved, r.floodDeniedOther, vnapprover.CheckRequestor.ConditionReason())
	}
	e.checkApproverLog(t)
}

// createFlood creates n CSRs for system:vnode:flood-NNNN as client, with
// a few requests in flight, and returns their names.
func createFlood(ctx context.Context, t *testing.T, client kubernetes.Interface, n int) map[string]bool {
	t.Helper()
	objs := make(chan *certificatesv1.CertificateSigningRequest, n)
	names := make(map[string]bool, n)
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("flood-%04d", i)
		names[name] = true
		objs <- newCSR(name, vnapprover.SignerName, vnodeRequest(name).pem(t), usagesClient, 0)
	}
	close(objs)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for csr := range objs {
				if _, err := client.CertificatesV1().CertificateSigningRequests().Create(ctx, csr, metav1.CreateOptions{}); err != nil {
					errs <- fmt.Errorf("creating flood CSR %s: %w", csr.Name, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return names
}

// floodResult is what the watch saw, in the API server's order.
type floodResult struct {
	nodeCSR                         string
	nodeSeen, nodeApproved, drained time.Time
	pendingAtSeen                   int
	pendingAtApproval               int
	floodApproved, floodDeniedOther int
}

type floodRecorder struct {
	done chan struct{}
	res  floodResult
	err  error
}

// watchFlood follows every CSR from now on: the flood's decisions and the
// virtual node's bootstrap CSR (requested by nodeUser).
func watchFlood(ctx context.Context, t *testing.T, admin kubernetes.Interface, flood map[string]bool, nodeUser string) *floodRecorder {
	t.Helper()
	api := admin.CertificatesV1().CertificateSigningRequests()
	list, err := api.List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		t.Fatalf("listing CSRs: %v", err)
	}
	w, err := api.Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatalf("watching CSRs: %v", err)
	}
	pending := make(map[string]bool, len(flood))
	for name := range flood {
		pending[name] = true
	}
	r := &floodRecorder{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		defer w.Stop()
		r.err = r.follow(w, pending, nodeUser)
	}()
	return r
}

func (r *floodRecorder) follow(w watch.Interface, pending map[string]bool, nodeUser string) error {
	res := &r.res
	for ev := range w.ResultChan() {
		if ev.Type == watch.Error {
			return fmt.Errorf("watch error: %v", ev.Object)
		}
		csr, ok := ev.Object.(*certificatesv1.CertificateSigningRequest)
		if !ok {
			continue
		}
		now := time.Now()
		switch {
		case pending[csr.Name] && decided(csr):
			delete(pending, csr.Name)
			if condition(csr, certificatesv1.CertificateApproved) != nil {
				res.floodApproved++
			} else if d := condition(csr, certificatesv1.CertificateDenied); d == nil || d.Reason != vnapprover.CheckRequestor.ConditionReason() {
				res.floodDeniedOther++
			}
			if len(pending) == 0 {
				res.drained = now
			}
		case csr.Spec.Username == nodeUser && res.nodeCSR == "":
			res.nodeCSR, res.nodeSeen, res.pendingAtSeen = csr.Name, now, len(pending)
		}
		if csr.Name == res.nodeCSR && res.nodeApproved.IsZero() && condition(csr, certificatesv1.CertificateApproved) != nil {
			res.nodeApproved, res.pendingAtApproval = now, len(pending)
		}
		if len(pending) == 0 && !res.nodeApproved.IsZero() {
			return nil
		}
	}
	return fmt.Errorf("the CSR watch ended with %d flood CSRs pending (node approved: %v)", len(pending), !res.nodeApproved.IsZero())
}

func (r *floodRecorder) wait(ctx context.Context, t *testing.T, timeout time.Duration) floodResult {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(timeout):
		t.Fatalf("the flood was not decided and the node's CSR approved within %s", timeout)
	case <-ctx.Done():
		t.Fatalf("waiting for the flood: %v", ctx.Err())
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.res
}
