package approver

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vnode-project/vnode/integration/controlplane"
)

const (
	benchLabel = "vnode.test/burst"
	// benchKubeletGroup is the kubelet bootstrap tokens' group on the
	// control plane whose kube-controller-manager approves.
	benchKubeletGroup = "system:bootstrappers:kubelet"
	nodeClientRole    = "system:certificates.k8s.io:certificatesigningrequests:nodeclient"
	creators          = 16
	burstTimeout      = 10 * time.Minute
)

// BenchmarkApproval measures approval latency (CSR created to Approved
// condition seen on a watch: p50, p99), time to issue (certificate seen)
// and approved CSRs per second (burst size over first create to last
// approval) for bursts of 100 and 1,000 bootstrap CSRs, each on its own
// control plane:
//
//   - vnode-approver: the process under its service account, approving
//     system:vnode:<n> CSRs (kube-apiserver-client signer) from a vnode
//     bootstrap token, with kube-controller-manager's approver off;
//   - kcm-csrapproving: kube-controller-manager's built-in approver on the
//     equivalent kubelet CSRs (kube-apiserver-client-kubelet signer,
//     system:node:<n> in system:nodes) from a bootstrap token with the
//     nodeclient RBAC.
//
// Both do one SubjectAccessReview and one approval write per CSR, and both
// are bound by their API clients' rate limits: vnode-approver's default is
// 50 QPS (burst 100), shared with the event it records per decision;
// kube-controller-manager's is 20 QPS (burst 30) per controller. So
// kube-controller-manager runs twice: with its defaults
// (kcm-csrapproving), and with vnode-approver's budget
// (kcm-csrapproving-qps50, a third control plane). The requestors are not
// rate limited.
//
//	go test -run '^$' -bench Approval -benchtime 1x ./integration/approver
func BenchmarkApproval(b *testing.B) {
	ctx := context.Background()
	vn := newEnv(ctx, b, controlplane.Options{DisableCSRApprover: true})
	vn.args = []string{"--log-level=info"}
	vn.startApprover(ctx, b)
	targets := []benchTarget{{
		name:      "vnode-approver",
		admin:     vn.cp.Client,
		requestor: unthrottled(b, createToken(ctx, b, vn.cp, "benchv", []string{bootstrapGroup}, nil)),
		signer:    certificatesv1.KubeAPIServerClientSignerName,
		request:   vnodeRequest,
	}}
	targets = append(targets,
		kcmTarget(ctx, b, "kcm-csrapproving"),
		kcmTarget(ctx, b, "kcm-csrapproving-qps50", "--kube-api-qps=50", "--kube-api-burst=100"))
	for _, burst := range []int{100, 1000} {
		for _, tg := range targets {
			b.Run(fmt.Sprintf("%s/burst=%d", tg.name, burst), func(b *testing.B) { tg.bench(ctx, b, burst) })
		}
	}
	vn.checkApproverLog(b)
}

// kcmTarget starts a control plane whose kube-controller-manager approves
// kubelet client CSRs, with flags, and a kubelet bootstrap token for it.
func kcmTarget(ctx context.Context, b *testing.B, name string, flags ...string) benchTarget {
	cp := controlplane.StartForTest(b, controlplane.Options{ExtraControllerManagerFlags: flags})
	bindClusterRole(ctx, b, cp.Client, "bench:kubelet-bootstrappers", nodeBootstrapper, groupSubject(benchKubeletGroup))
	bindClusterRole(ctx, b, cp.Client, "bench:kubelet-nodeclient", nodeClientRole, groupSubject(benchKubeletGroup))
	return benchTarget{
		name:      name,
		admin:     cp.Client,
		requestor: unthrottled(b, createToken(ctx, b, cp, "benchk", []string{benchKubeletGroup}, nil)),
		signer:    certificatesv1.KubeAPIServerClientKubeletSignerName,
		request: func(node string) request {
			return request{cn: "system:node:" + node, org: []string{"system:nodes"}}
		},
	}
}

// benchTarget is one approver and the CSRs it approves.
type benchTarget struct {
	name      string
	admin     kubernetes.Interface // watches
	requestor kubernetes.Interface // creates the CSRs
	signer    string
	request   func(node string) request
}

// burstSeq names bursts uniquely across a benchmark's runs.
var burstSeq atomic.Int64

func (tg benchTarget) bench(ctx context.Context, b *testing.B, burst int) {
	var approve, issue []time.Duration
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		csrs := tg.csrs(b, burst)
		b.StartTimer()
		r, err := runBurst(ctx, tg.admin, tg.requestor, csrs)
		if err != nil {
			b.Fatalf("%s, burst of %d: %v", tg.name, burst, err)
		}
		approve = append(approve, r.approve...)
		issue = append(issue, r.issue...)
		elapsed += r.elapsed
	}
	b.ReportMetric(millis(percentile(approve, 50)), "approve-p50-ms")
	b.ReportMetric(millis(percentile(approve, 99)), "approve-p99-ms")
	b.ReportMetric(millis(percentile(issue, 50)), "issue-p50-ms")
	b.ReportMetric(millis(percentile(issue, 99)), "issue-p99-ms")
	b.ReportMetric(float64(burst*b.N)/elapsed.Seconds(), "approved-CSRs/s")
}

// csrs builds one burst, labelled so a watch can follow just it.
func (tg benchTarget) csrs(tb testing.TB, n int) []*certificatesv1.CertificateSigningRequest {
	id := strconv.FormatInt(burstSeq.Add(1), 10)
	out := make([]*certificatesv1.CertificateSigningRequest, n)
	for i := range out {
		node := fmt.Sprintf("bench-%s-%04d", id, i)
		csr := newCSR(node, tg.signer, tg.request(node).pem(tb), usagesClient, 0)
		csr.Labels = map[string]string{benchLabel: id}
		out[i] = csr
	}
	return out
}

func unthrottled(tb testing.TB, cfg *rest.Config) kubernetes.Interface {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS = -1 // no client-side limit: measure the approver, not the requestor
	return clientFor(tb, cfg)
}

// burstResult holds per-CSR latencies from the moment its create returned.
type burstResult struct {
	approve, issue []time.Duration
	// elapsed runs from the first create to the last approval.
	elapsed time.Duration
}

// runBurst creates csrs with a few creates in flight and follows them on a
// watch until every one is approved and issued.
func runBurst(ctx context.Context, admin, requestor kubernetes.Interface, csrs []*certificatesv1.CertificateSigningRequest) (burstResult, error) {
	ctx, cancel := context.WithTimeout(ctx, burstTimeout)
	defer cancel()
	api := admin.CertificatesV1().CertificateSigningRequests()
	sel := metav1.ListOptions{LabelSelector: benchLabel + "=" + csrs[0].Labels[benchLabel]}
	list, err := api.List(ctx, sel)
	if err != nil {
		return burstResult{}, fmt.Errorf("listing CSRs: %w", err)
	}
	sel.ResourceVersion = list.ResourceVersion
	w, err := api.Watch(ctx, sel)
	if err != nil {
		return burstResult{}, fmt.Errorf("watching CSRs: %w", err)
	}
	defer w.Stop()

	start := time.Now()
	created, createErr := createAll(ctx, cancel, requestor, csrs)
	approved, issued, err := follow(w, len(csrs))
	if err := <-createErr; err != nil {
		return burstResult{}, err
	}
	if err != nil {
		return burstResult{}, err
	}
	r := burstResult{}
	var last time.Time
	for name, at := range approved {
		c := created.get(name)
		r.approve = append(r.approve, max(at.Sub(c), 0))
		r.issue = append(r.issue, max(issued[name].Sub(c), 0))
		if at.After(last) {
			last = at
		}
	}
	r.elapsed = last.Sub(start)
	return r, nil
}

// createTimes records when each create returned.
type createTimes struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (c *createTimes) set(name string, t time.Time) {
	c.mu.Lock()
	c.at[name] = t
	c.mu.Unlock()
}

func (c *createTimes) get(name string) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at[name]
}

// createAll creates csrs from a few goroutines; the channel yields the
// first error (or nil) once all are done. An error cancels ctx, which ends
// the watch the caller follows.
func createAll(ctx context.Context, cancel context.CancelFunc, client kubernetes.Interface, csrs []*certificatesv1.CertificateSigningRequest) (*createTimes, <-chan error) {
	times := &createTimes{at: make(map[string]time.Time, len(csrs))}
	work := make(chan *certificatesv1.CertificateSigningRequest, len(csrs))
	for _, c := range csrs {
		work <- c
	}
	close(work)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for i := 0; i < creators; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				if _, err := client.CertificatesV1().CertificateSigningRequests().Create(ctx, c, metav1.CreateOptions{}); err != nil {
					once.Do(func() {
						first = fmt.Errorf("creating CSR %s: %w", c.Name, err)
						cancel()
					})
					continue
				}
				times.set(c.Name, time.Now())
			}
		}()
	}
	done := make(chan error, 1)
	go func() {
		wg.Wait()
		done <- first
	}()
	return times, done
}

// follow reads the watch until n CSRs are approved and issued, noting when
// each was first seen so.
func follow(w watch.Interface, n int) (approved, issued map[string]time.Time, err error) {
	approved, issued = make(map[string]time.Time, n), make(map[string]time.Time, n)
	for ev := range w.ResultChan() {
		if ev.Type == watch.Error {
			return nil, nil, fmt.Errorf("watch error: %v", ev.Object)
		}
		csr, ok := ev.Object.(*certificatesv1.CertificateSigningRequest)
		if !ok {
			continue
		}
		now := time.Now()
		if c := condition(csr, certificatesv1.CertificateDenied); c != nil {
			return nil, nil, fmt.Errorf("CSR %s denied: %s: %s", csr.Name, c.Reason, c.Message)
		}
		if c := condition(csr, certificatesv1.CertificateFailed); c != nil {
			return nil, nil, fmt.Errorf("CSR %s failed: %s: %s", csr.Name, c.Reason, c.Message)
		}
		if _, seen := approved[csr.Name]; !seen && condition(csr, certificatesv1.CertificateApproved) != nil {
			approved[csr.Name] = now
		}
		if _, seen := issued[csr.Name]; !seen && len(csr.Status.Certificate) > 0 {
			issued[csr.Name] = now
		}
		if len(issued) == n && len(approved) == n {
			return approved, issued, nil
		}
	}
	return nil, nil, fmt.Errorf("the watch ended with %d of %d CSRs approved and %d issued", len(approved), n, len(issued))
}

// percentile is the nearest-rank p-th percentile of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100 // ceil(p/100 * n)
	return s[max(rank, 1)-1]
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
