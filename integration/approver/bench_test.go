package approver

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	vnapprover "github.com/vnode-project/vnode/approver"
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
// condition seen on a watch: p50, p99), time to issue (certificate seen),
// approved CSRs per second (burst size over first create to last
// approval) and created CSRs per second (the requestor's own rate) for
// bursts of 100 and 1,000 bootstrap CSRs from one bootstrap token:
//
//   - vnode-approver: the process under its service account, with its
//     default flags, approving system:vnode:<n> CSRs (kube-apiserver-client
//     signer) from a vnode bootstrap token, with kube-controller-manager's
//     approver off;
//   - vnode-approver-qps50: the same with kube-controller-manager's old
//     budget, --kube-api-qps=50 --kube-api-burst=100;
//   - kcm-csrapproving: kube-controller-manager's built-in approver on the
//     equivalent kubelet CSRs (kube-apiserver-client-kubelet signer,
//     system:node:<n> in system:nodes) from a bootstrap token with the
//     nodeclient RBAC, at its defaults (20 QPS, burst 30 per controller);
//   - kcm-csrapproving-qps50 and kcm-csrapproving-qps<N>: the same at
//     vnode-approver's old budget and at its default one;
//   - floor: no approver running; the benchmark approves each of the same
//     CSRs (same signer, so kube-controller-manager signs them as for
//     vnode-approver and the API server does the same writes) as soon as
//     its watch sees it, as the admin, with no client-side limit and as
//     many writers as there are creators. It is what the API server itself
//     allows on this machine.
//
// kube-controller-manager does one SubjectAccessReview and one approval
// write per CSR; vnode-approver one approval write (its access review is
// cached per requestor identity) and no event (its denials get one). Each control plane starts
// when its first sub-benchmark runs and stops after its last; the
// requestors are not rate limited.
//
//	go test -run '^$' -bench Approval -benchtime 1x ./integration/approver
//
// VNODE_BENCH_APPROVER_ARGS adds flags to the vnode-approver target.
func BenchmarkApproval(b *testing.B) {
	ctx := context.Background()
	vn := newEnv(ctx, b, controlplane.Options{DisableCSRApprover: true})
	// withApprover (re)starts vnode-approver with args unless it runs so.
	var running []string
	withApprover := func(b *testing.B, args ...string) {
		e := vn
		args = append([]string{"--log-level=info"}, args...)
		if e.approver != nil && slices.Equal(running, args) {
			return
		}
		if e.approver != nil {
			e.stopApprover(b)
		}
		e.args, running = args, args
		e.startApprover(ctx, b)
	}
	vnodeTarget := func(name string, args ...string) benchTarget {
		return benchTarget{name: name, signed: true, setup: func(b *testing.B) (kubernetes.Interface, kubernetes.Interface) {
			withApprover(b, args...)
			return vn.cp.Client, unthrottled(b, tokenFor(ctx, b, vn.cp, "benchv", bootstrapGroup))
		}, signer: certificatesv1.KubeAPIServerClientSignerName, request: vnodeRequest}
	}
	targets := []benchTarget{
		vnodeTarget("vnode-approver", strings.Fields(os.Getenv("VNODE_BENCH_APPROVER_ARGS"))...),
		vnodeTarget("vnode-approver-qps50", "--kube-api-qps=50", "--kube-api-burst=100"),
		{name: "floor", signed: true, setup: func(b *testing.B) (kubernetes.Interface, kubernetes.Interface) {
			// The same CSRs, signed by the same signer: only the approver
			// is missing, so the API server does the same writes.
			if vn.approver != nil {
				vn.stopApprover(b)
			}
			return unthrottled(b, vn.cp.AdminConfig), unthrottled(b, tokenFor(ctx, b, vn.cp, "benchv", bootstrapGroup))
		}, signer: certificatesv1.KubeAPIServerClientSignerName, request: vnodeRequest, approveAll: true},
		kcmTarget(ctx, b, "kcm-csrapproving"),
		kcmTarget(ctx, b, "kcm-csrapproving-qps50", "--kube-api-qps=50", "--kube-api-burst=100"),
		kcmTarget(ctx, b, fmt.Sprintf("kcm-csrapproving-qps%d", vnapprover.DefaultKubeAPIQPS),
			fmt.Sprintf("--kube-api-qps=%d", vnapprover.DefaultKubeAPIQPS), fmt.Sprintf("--kube-api-burst=%d", vnapprover.DefaultKubeAPIBurst)),
	}
	for _, tg := range targets {
		for _, burst := range []int{100, 1000} {
			b.Run(fmt.Sprintf("%s/burst=%d", tg.name, burst), func(b *testing.B) { tg.bench(ctx, b, burst) })
		}
		if tg.stop != nil {
			tg.stop()
		}
	}
	if vn.approver != nil {
		vn.checkApproverLog(b)
	}
}

// tokenFor creates bootstrap token id on cp once and returns its config.
func tokenFor(ctx context.Context, b *testing.B, cp *controlplane.ControlPlane, id string, groups ...string) *rest.Config {
	tokensMu.Lock()
	defer tokensMu.Unlock()
	key := cp.APIServerURL + "/" + id
	if cfg, ok := tokens[key]; ok {
		return cfg
	}
	cfg := createToken(ctx, b, cp, id, groups, nil)
	tokens[key] = cfg
	return cfg
}

var (
	tokensMu sync.Mutex
	tokens   = map[string]*rest.Config{}
)

// kcmTarget is a control plane whose kube-controller-manager approves
// kubelet client CSRs, with flags, and a kubelet bootstrap token for it;
// the control plane starts with the target's first sub-benchmark and lives
// in parent's directory until stop or parent's end.
func kcmTarget(ctx context.Context, parent *testing.B, name string, flags ...string) benchTarget {
	var cp *controlplane.ControlPlane
	var requestor kubernetes.Interface
	return benchTarget{
		name:   name,
		signed: true,
		setup: func(b *testing.B) (kubernetes.Interface, kubernetes.Interface) {
			if cp == nil {
				var err error
				cp, err = controlplane.Start(ctx, controlplane.Options{ExtraControllerManagerFlags: flags, Dir: parent.TempDir()})
				if err != nil {
					b.Fatalf("starting the control plane: %v", err)
				}
				parent.Cleanup(cp.Stop)
				bindClusterRole(ctx, b, cp.Client, "bench:kubelet-bootstrappers", nodeBootstrapper, groupSubject(benchKubeletGroup))
				bindClusterRole(ctx, b, cp.Client, "bench:kubelet-nodeclient", nodeClientRole, groupSubject(benchKubeletGroup))
				requestor = unthrottled(b, createToken(ctx, b, cp, "benchk", []string{benchKubeletGroup}, nil))
			}
			return cp.Client, requestor
		},
		stop: func() {
			if cp != nil {
				cp.Stop()
			}
		},
		signer: certificatesv1.KubeAPIServerClientKubeletSignerName,
		request: func(node string) request {
			return request{cn: "system:node:" + node, org: []string{"system:nodes"}}
		},
	}
}

// benchTarget is one approver and the CSRs it approves.
type benchTarget struct {
	name string
	// setup starts what the target needs (once) and returns the client
	// that watches and the one that creates the CSRs.
	setup func(b *testing.B) (admin, requestor kubernetes.Interface)
	// stop, if set, stops it after the target's last sub-benchmark.
	stop    func()
	signer  string
	request func(node string) request
	// signed: a signer issues the certificates (issue latency is measured).
	signed bool
	// approveAll: the benchmark approves the CSRs itself (the floor).
	approveAll bool
}

// burstSeq names bursts uniquely across a benchmark's runs.
var burstSeq atomic.Int64

func (tg benchTarget) bench(ctx context.Context, b *testing.B, burst int) {
	b.StopTimer()
	admin, requestor := tg.setup(b)
	var approve, issue []time.Duration
	var elapsed, creating time.Duration
	var writes apiWrites
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		csrs := tg.csrs(b, burst)
		before, err := countWrites(ctx, admin)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		r, err := runBurst(ctx, admin, requestor, csrs, tg.signed, tg.approveAll)
		if err != nil {
			b.Fatalf("%s, burst of %d: %v", tg.name, burst, err)
		}
		b.StopTimer()
		after, err := countWrites(ctx, admin)
		if err != nil {
			b.Fatal(err)
		}
		writes = writes.plus(after.minus(before))
		approve = append(approve, r.approve...)
		issue = append(issue, r.issue...)
		elapsed += r.elapsed
		creating += r.creating
	}
	b.ReportMetric(millis(percentile(approve, 50)), "approve-p50-ms")
	b.ReportMetric(millis(percentile(approve, 99)), "approve-p99-ms")
	if tg.signed {
		b.ReportMetric(millis(percentile(issue, 50)), "issue-p50-ms")
		b.ReportMetric(millis(percentile(issue, 99)), "issue-p99-ms")
	}
	// Writes per CSR, counted by the API server: approvals, events and
	// any other CSR write (not the requestor's create nor the signer's
	// status); the background's (leases) are left out.
	n := float64(burst * b.N)
	b.ReportMetric(writes.total()/n, "writes/CSR")
	b.ReportMetric(writes.approvals/n, "approval-writes/CSR")
	b.ReportMetric(writes.events/n, "event-writes/CSR")
	b.ReportMetric(float64(burst*b.N)/elapsed.Seconds(), "approved-CSRs/s")
	b.ReportMetric(float64(burst*b.N)/creating.Seconds(), "created-CSRs/s")
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
	// elapsed runs from the first create to the last approval; creating
	// to the last create returned.
	elapsed, creating time.Duration
}

// runBurst creates csrs with a few creates in flight and follows them on a
// watch until every one is approved (and issued, if signed). With
// approveAll it also approves each CSR the moment a watch of its own sees
// it, from as many goroutines as create them.
func runBurst(ctx context.Context, admin, requestor kubernetes.Interface, csrs []*certificatesv1.CertificateSigningRequest, signed, approveAll bool) (burstResult, error) {
	ctx, cancel := context.WithTimeout(ctx, burstTimeout)
	defer cancel()
	api := admin.CertificatesV1().CertificateSigningRequests()
	sel := metav1.ListOptions{LabelSelector: benchLabel + "=" + csrs[0].Labels[benchLabel]}
	list, err := api.List(ctx, sel)
	if err != nil {
		return burstResult{}, fmt.Errorf("listing CSRs: %w", err)
	}
	// Both watches resume where they were if the API server ends them
	// (it does after its request timeout), so a long burst is not cut.
	watcher := &cache.ListWatch{WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		o.LabelSelector = sel.LabelSelector
		return api.Watch(ctx, o)
	}}
	w, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, watcher)
	if err != nil {
		return burstResult{}, fmt.Errorf("watching CSRs: %w", err)
	}
	defer w.Stop()
	approveErr := make(chan error, 1)
	if approveAll {
		aw, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, watcher)
		if err != nil {
			return burstResult{}, fmt.Errorf("watching CSRs to approve them: %w", err)
		}
		defer aw.Stop()
		go func() { approveErr <- approveEach(ctx, cancel, admin, aw, len(csrs)) }()
	} else {
		approveErr <- nil
	}

	start := time.Now()
	created, createErr := createAll(ctx, cancel, requestor, csrs)
	approved, issued, err := follow(w, len(csrs), signed)
	if err := <-createErr; err != nil {
		return burstResult{}, err
	}
	if err := <-approveErr; err != nil {
		return burstResult{}, err
	}
	if err != nil {
		return burstResult{}, err
	}
	r := burstResult{creating: created.last.Sub(start)}
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
	mu   sync.Mutex
	at   map[string]time.Time
	last time.Time
}

func (c *createTimes) set(name string, t time.Time) {
	c.mu.Lock()
	c.at[name] = t
	if t.After(c.last) {
		c.last = t
	}
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
	work, done := pool(cancel, len(csrs), func(c *certificatesv1.CertificateSigningRequest) error {
		if _, err := client.CertificatesV1().CertificateSigningRequests().Create(ctx, c, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating CSR %s: %w", c.Name, err)
		}
		times.set(c.Name, time.Now())
		return nil
	})
	for _, c := range csrs {
		work <- c
	}
	close(work)
	return times, done
}

// pool runs do on each item sent to work, from creators goroutines. The
// first error cancels ctx (which ends the watches the benchmark follows);
// done yields it, or nil, once work is closed and every item is done.
func pool[T any](cancel context.CancelFunc, buffer int, do func(T) error) (work chan<- T, done <-chan error) {
	in := make(chan T, buffer)
	out := make(chan error, 1)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for i := 0; i < creators; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for item := range in {
				if err := do(item); err != nil {
					once.Do(func() {
						first = err
						cancel()
					})
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		out <- first
	}()
	return in, out
}

// approveEach approves the first n CSRs w shows, as soon as it shows them,
// with creators goroutines and no client-side limit.
func approveEach(ctx context.Context, cancel context.CancelFunc, admin kubernetes.Interface, w watch.Interface, n int) error {
	work, done := pool(cancel, n, func(csr *certificatesv1.CertificateSigningRequest) error {
		csr = csr.DeepCopy()
		csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: certificatesv1.CertificateApproved, Status: "True", Reason: "BenchFloor",
		})
		if _, err := admin.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("approving CSR %s: %w", csr.Name, err)
		}
		return nil
	})
	seen := 0
	for ev := range w.ResultChan() {
		if csr, ok := ev.Object.(*certificatesv1.CertificateSigningRequest); ok && ev.Type == watch.Added {
			work <- csr
			if seen++; seen == n {
				break
			}
		}
	}
	close(work)
	err := <-done
	if err == nil && seen < n {
		err = fmt.Errorf("the approving watch ended after %d of %d CSRs", seen, n)
	}
	return err
}

// follow reads the watch until n CSRs are approved (and issued, if
// signed), noting when each was first seen so.
func follow(w watch.Interface, n int, signed bool) (approved, issued map[string]time.Time, err error) {
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
		if len(approved) == n && (!signed || len(issued) == n) {
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
