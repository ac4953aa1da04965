package provider

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/vnode-project/vnode/eci/model"
	"github.com/vnode-project/vnode/provider/translate"
)

// memCloud is an in-memory Cloud for the provider's pure logic; the real
// SDK and emulator are exercised by the integration tests.
type memCloud struct {
	mu        sync.Mutex
	insts     map[string]*model.Instance
	tokens    map[string]string
	creates   int
	deletes   []string
	createErr []error // consumed one per call
	listErr   error
	pageErr   error // ListContainerGroups fails with it after its first page
	// pageGate, if set, holds ListContainerGroups after its first page
	// (reached is then closed), as a page asked for and slow to come.
	pageGate, reached chan struct{}
	extra             []*model.Instance // returned by List whatever the filter
	// lostAnswers creates commit the instance and then report an error,
	// as a call whose response was lost does.
	lostAnswers int
	// deleteGate, if set, holds DeleteContainerGroup until it is closed;
	// deleteErr then fails it.
	deleteGate chan struct{}
	deleteErr  error
	// beforeCreate, if set, runs inside CreateContainerGroup before the
	// instance is made (without the lock).
	beforeCreate func()
	fetched      []string                // ids GetContainerGroups was asked for
	groups       []*model.ContainerGroup // what each create that made an instance asked for
	changed      map[string]time.Time    // when create or set last changed an instance
	statusLists  []time.Duration         // each ListStatuses' changedWithin
	fullLists    int                     // ListContainerGroups calls
}

func newMemCloud() *memCloud {
	return &memCloud{insts: map[string]*model.Instance{}, tokens: map[string]string{}, changed: map[string]time.Time{}}
}

func (m *memCloud) CreateContainerGroup(_ context.Context, g *model.ContainerGroup) (string, string, error) {
	m.mu.Lock()
	hook := m.beforeCreate
	m.mu.Unlock()
	if hook != nil {
		hook()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.creates++
	if len(m.createErr) > 0 {
		err := m.createErr[0]
		m.createErr = m.createErr[1:]
		if err != nil {
			return "", "", err
		}
	}
	if id, ok := m.tokens[g.ClientToken]; ok {
		return id, "req-replay", nil
	}
	id := fmt.Sprintf("eci-%d", len(m.tokens)+1)
	m.tokens[g.ClientToken] = id
	m.groups = append(m.groups, g)
	m.insts[id] = &model.Instance{ID: id, Name: g.Name, Status: translate.StatusPending, Tags: g.Tags, CPU: g.CPU, MemoryGi: g.MemoryGi, ZoneID: "cn-hangzhou-h"}
	m.changed[id] = time.Now()
	if m.lostAnswers > 0 {
		m.lostAnswers--
		return "", "", errors.New("ServiceUnavailable: the answer was lost")
	}
	return id, "req-" + id, nil
}

// ListContainerGroups answers in pages of two, as ECI does in pages of 20.
func (m *memCloud) ListContainerGroups(ctx context.Context, tags map[string]string, each func([]*model.Instance) error) error {
	m.mu.Lock()
	m.fullLists++
	m.mu.Unlock()
	all, err := m.all(tags)
	if err != nil {
		return err
	}
	for len(all) > 0 {
		n := min(len(all), 2)
		if err := each(all[:n]); err != nil {
			return err
		}
		all = all[n:]
		m.mu.Lock()
		err, gate, reached := m.pageErr, m.pageGate, m.reached
		m.pageGate = nil
		m.mu.Unlock()
		if err != nil && len(all) > 0 {
			return err
		}
		if gate != nil {
			close(reached)
			<-gate
		}
	}
	return nil
}

// all is every instance carrying tags, and the extra ones.
func (m *memCloud) all(tags map[string]string) ([]*model.Instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.listErr != nil {
		return nil, m.listErr
	}
	var out []*model.Instance
	for _, inst := range m.insts {
		match := true
		for k, v := range tags {
			match = match && inst.Tags[k] == v
		}
		if match {
			c := *inst
			out = append(out, &c)
		}
	}
	slices.SortFunc(out, func(a, b *model.Instance) int { return strings.Compare(a.ID, b.ID) })
	return append(out, m.extra...), nil
}

// ListStatuses digests what ECI's status list carries (status, IP,
// containers), not events: an event alone changes no digest, as in ECI.
// changedWithin keeps the instances create or set changed that recently.
func (m *memCloud) ListStatuses(ctx context.Context, tags map[string]string, changedWithin time.Duration) ([]model.GroupStatus, error) {
	insts, err := m.all(tags)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.statusLists = append(m.statusLists, changedWithin)
	out := make([]model.GroupStatus, 0, len(insts))
	for _, inst := range insts {
		if changedWithin > 0 && time.Since(m.changed[inst.ID]) > changedWithin {
			continue
		}
		h := fnv.New64a()
		fmt.Fprintf(h, "%s %s %+v %+v", inst.Status, inst.IntranetIP, inst.Containers, inst.InitContainers)
		out = append(out, model.GroupStatus{ID: inst.ID, Status: inst.Status, Digest: h.Sum64()})
	}
	return out, nil
}

func (m *memCloud) GetContainerGroups(ctx context.Context, ids []string) ([]*model.Instance, error) {
	all, err := m.all(nil)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fetched = append(m.fetched, ids...)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var out []*model.Instance
	for _, inst := range all {
		if want[inst.ID] {
			out = append(out, inst)
		}
	}
	return out, nil
}

func (m *memCloud) DeleteContainerGroup(_ context.Context, id string) error {
	m.mu.Lock()
	gate, fail := m.deleteGate, m.deleteErr
	m.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if fail != nil {
		return fail
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.deletes = append(m.deletes, id)
	if _, ok := m.insts[id]; !ok {
		return errdefs.NotFoundf("no instance %s", id)
	}
	delete(m.insts, id)
	return nil
}

func (m *memCloud) set(id string, f func(*model.Instance)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(m.insts[id])
	m.changed[id] = time.Now()
}

type noObjects struct{}

func (noObjects) ConfigMap(ns, name string) (*corev1.ConfigMap, error) {
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
}
func (noObjects) Secret(ns, name string) (*corev1.Secret, error) {
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

type harness struct {
	p        *Provider
	cloud    *memCloud
	kube     *fake.Clientset
	recorder *record.FakeRecorder
	mu       sync.Mutex
	notified map[string]*corev1.Pod
}

func newHarness(t *testing.T, pods ...*corev1.Pod) *harness {
	h := &harness{cloud: newMemCloud(), recorder: record.NewFakeRecorder(100), notified: map[string]*corev1.Pod{}}
	objs := make([]runtime.Object, 0, len(pods))
	for _, p := range pods {
		objs = append(objs, p)
	}
	h.kube = fake.NewClientset(objs...)
	h.p = New(Config{Node: translate.NodeSettings{ClusterName: "c1", NodeName: "vn", VSwitchIDs: []string{"vsw-1"}, SecurityGroupID: "sg-1"}, Version: "test", Log: logrus.New(),
		RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond},
		h.cloud, h.kube, translate.Sources{Objects: noObjects{}}, h.recorder)
	h.p.NotifyPods(context.Background(), func(p *corev1.Pod) {
		h.mu.Lock()
		h.notified[p.Name] = p
		h.mu.Unlock()
	})
	return h
}

// drain runs every create and delete that is due, then tells virtual-kubelet
// every queued status, as Run's goroutines would.
func (h *harness) drain(ctx context.Context) {
	for h.p.creates.Len()+h.p.deletes.Len() > 0 {
		if h.p.deletes.Len() > 0 {
			h.p.processDelete(ctx)
		} else {
			h.p.processCreate(ctx)
		}
	}
	for h.p.notices.Len() > 0 {
		h.p.tellNext()
	}
}

// retried waits for the work queue to hand back a pod after its backoff,
// then drains.
func (h *harness) retried(t *testing.T, ctx context.Context) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
		return h.p.creates.Len()+h.p.deletes.Len() > 0, nil
	})
	if err != nil {
		t.Fatal("no retry came back from the work queue")
	}
	h.drain(ctx)
}

// syncedHarness is a harness whose pods of these names have instances,
// seen by a first Sync (a full list).
func syncedHarness(t *testing.T, names ...string) *harness {
	t.Helper()
	ctx := context.Background()
	var pods []*corev1.Pod
	for _, n := range names {
		pods = append(pods, pod(n))
	}
	h := newHarness(t, pods...)
	for _, p := range pods {
		if err := h.create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	return h
}

// create and remove are CreatePod and DeletePod followed by the work they
// queue.
func (h *harness) create(ctx context.Context, pod *corev1.Pod) error {
	err := h.p.CreatePod(ctx, pod)
	h.drain(ctx)
	return err
}

func (h *harness) remove(ctx context.Context, pod *corev1.Pod) error {
	err := h.p.DeletePod(ctx, pod)
	h.drain(ctx)
	return err
}

func (h *harness) last(name string) *corev1.Pod {
	h.drain(context.Background())
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.notified[name]
}

func (h *harness) events() string {
	var out []string
	for {
		select {
		case e := <-h.recorder.Events:
			out = append(out, e)
		default:
			return strings.Join(out, "\n")
		}
	}
}

func pod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{NodeName: "vn", Containers: []corev1.Container{{Name: "c", Image: "nginx"}}},
	}
}

func TestCreateSyncAnnotateDelete(t *testing.T) {
	ctx := context.Background()
	p1 := pod("web")
	h := newHarness(t, p1)
	if err := h.create(ctx, p1); err != nil {
		t.Fatal(err)
	}
	if err := h.create(ctx, p1); err != nil {
		t.Fatal(err)
	}
	if h.cloud.creates != 1 {
		t.Fatalf("%d creates for one pod", h.cloud.creates)
	}
	got, err := h.p.GetPod(ctx, "ns", "web")
	if err != nil || got.Status.Phase != corev1.PodPending {
		t.Fatalf("GetPod: %v %v", got, err)
	}
	h.cloud.set("eci-1", func(i *model.Instance) {
		i.Status, i.IntranetIP, i.CPU, i.MemoryGi = translate.StatusRunning, "192.168.1.5", 2, 4
		i.Containers = []model.ContainerStatus{{Name: "c", Ready: true, Current: model.ContainerState{State: "Running", Started: time.Now()}}}
		i.Events = []model.Event{{Type: "Normal", Reason: "Pulled", Message: "pulled nginx", Name: "e1", Count: 1}}
	})
	for i := 0; i < 2; i++ { // a second sync must not repeat events or annotations
		if err := h.p.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.last("web"); n == nil || n.Status.Phase != corev1.PodRunning || n.Status.PodIP != "192.168.1.5" {
		t.Fatalf("notified %+v", n)
	}
	// The annotations go out with the status (virtual-kubelet's status
	// write carries them): see TestAnnotationsRideTheStatus.
	ann := h.last("web")
	for k, v := range map[string]string{AnnotationInstanceID: "eci-1", AnnotationRequestID: "req-eci-1", AnnotationClientToken: "vnode-uid-web",
		AnnotationVKVersion: "test", AnnotationInstanceSpec: "2-4Gi", AnnotationInstanceCPU: "2", AnnotationInstanceMem: "4Gi", AnnotationInstanceZone: "cn-hangzhou-h"} {
		if ann.Annotations[k] != v {
			t.Errorf("annotation %s=%q, want %q", k, ann.Annotations[k], v)
		}
	}
	if ev := h.events(); strings.Count(ev, "Pulled") != 1 || !strings.Contains(ev, ReasonCreated) {
		t.Errorf("events:\n%s", ev)
	}

	if err := h.remove(ctx, p1); err != nil {
		t.Fatal(err)
	}
	if len(h.cloud.insts) != 0 {
		t.Fatal("instance not deleted")
	}
	n := h.last("web")
	if n.Status.Phase != corev1.PodSucceeded || n.Status.ContainerStatuses[0].State.Terminated == nil {
		t.Fatalf("after delete: %+v", n.Status)
	}
	pods, _ := h.p.GetPods(ctx)
	if len(pods) != 0 {
		t.Fatalf("GetPods lists a deleted pod")
	}
	if err := h.remove(ctx, p1); err != nil {
		t.Fatalf("second delete: %v", err)
	}
}

func TestRefusedPods(t *testing.T) {
	ctx := context.Background()
	host := pod("host")
	host.Spec.HostNetwork = true
	// It asks for a token too: refused first, it is never minted one (the
	// harness has no token issuer, so minting would only ever retry).
	host.Spec.Volumes = []corev1.Volume{{Name: "token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}}}
	ds := pod("ds")
	tr := true
	ds.OwnerReferences = []metav1.OwnerReference{{Kind: "DaemonSet", Name: "kube-proxy", Controller: &tr}}
	h := newHarness(t, host, ds)
	for _, p := range []*corev1.Pod{host, ds} {
		if err := h.create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if h.cloud.creates != 0 {
		t.Fatalf("%d creates for pods that cannot run", h.cloud.creates)
	}
	if s := h.last("host").Status; s.Phase != corev1.PodFailed || s.Reason != "HostNetworkNotSupported" || !strings.Contains(s.Message, "hostNetwork") {
		t.Errorf("hostNetwork pod: %+v", s)
	}
	if s := h.last("ds").Status; s.Phase != corev1.PodPending || s.Reason != ReasonDaemonSet {
		t.Errorf("DaemonSet pod: %+v", s)
	}
	ev := h.events()
	if !strings.Contains(ev, "Warning HostNetworkNotSupported") || !strings.Contains(ev, "Warning "+ReasonDaemonSet) {
		t.Errorf("events:\n%s", ev)
	}
	// Repeated CreatePod calls (virtual-kubelet resyncs) change nothing.
	_ = h.create(ctx, ds)
	if h.cloud.creates != 0 || h.events() != "" {
		t.Error("repeated create of a refused pod did something")
	}
}

func TestTransientAndRejectedCreates(t *testing.T) {
	ctx := context.Background()
	flaky, bad := pod("flaky"), pod("bad")
	h := newHarness(t, flaky, bad)
	h.cloud.createErr = []error{errors.New("Throttling.User"), nil}
	_ = h.create(ctx, flaky)
	if s := h.last("flaky"); s != nil && s.Status.Phase == corev1.PodFailed {
		t.Fatal("a transient error failed the pod")
	}
	got, _ := h.p.GetPod(ctx, "ns", "flaky")
	if got.Status.Phase != corev1.PodPending {
		t.Fatalf("phase %s", got.Status.Phase)
	}
	h.retried(t, ctx) // the pod's first backoff step
	if h.cloud.creates != 2 || len(h.cloud.insts) != 1 {
		t.Fatalf("retry: %d creates, %d instances", h.cloud.creates, len(h.cloud.insts))
	}
	h.cloud.createErr = []error{errdefs.InvalidInput("InvalidParameter: Cpu")}
	_ = h.create(ctx, bad)
	if s := h.last("bad").Status; s.Phase != corev1.PodFailed || s.Reason != ReasonECIRejected {
		t.Fatalf("rejected: %+v", s)
	}
}

// A pod being deleted is not among the running pods while the cloud call
// is under way, is again if that call fails (its instance still runs), and
// the delete is retried from the work queue until it succeeds.
func TestDeletingPodIsNotRunning(t *testing.T) {
	ctx := context.Background()
	p1 := pod("going")
	h := newHarness(t, p1)
	_ = h.create(ctx, p1)
	gate := make(chan struct{})
	h.cloud.mu.Lock()
	h.cloud.deleteGate, h.cloud.deleteErr = gate, errors.New("ServiceUnavailable")
	h.cloud.mu.Unlock()
	if err := h.p.DeletePod(ctx, p1); err != nil {
		t.Fatal(err)
	}
	if pods, _ := h.p.GetPods(ctx); len(pods) != 0 {
		t.Fatal("a pod being deleted is still listed as running")
	}
	done := make(chan struct{})
	go func() { h.p.processDelete(ctx); close(done) }()
	close(gate)
	<-done
	if pods, _ := h.p.GetPods(ctx); len(pods) != 1 {
		t.Fatalf("after a failed delete: %d running pods, want 1", len(pods))
	}
	if err := h.p.DeletePod(ctx, p1); err != nil { // virtual-kubelet asks again
		t.Fatal(err)
	}
	h.cloud.mu.Lock()
	h.cloud.deleteGate, h.cloud.deleteErr = nil, nil
	h.cloud.mu.Unlock()
	h.retried(t, ctx)
	if len(h.cloud.insts) != 0 {
		t.Fatal("the failed delete was not retried")
	}
	if s := h.last("going").Status; s.Phase != corev1.PodSucceeded {
		t.Fatalf("after the retried delete: %+v", s)
	}
}

// A pod deleted while its create call is in flight loses the instance that
// call makes: it is deleted, not left for garbage collection.
func TestDeleteDuringCreateDeletesTheInstance(t *testing.T) {
	ctx := context.Background()
	p1 := pod("racy")
	h := newHarness(t, p1)
	if err := h.p.CreatePod(ctx, p1); err != nil {
		t.Fatal(err)
	}
	// Start the create by hand and delete the pod before it returns.
	h.p.mu.Lock()
	e := h.p.entries[p1.UID]
	h.p.mu.Unlock()
	h.cloud.mu.Lock()
	h.cloud.beforeCreate = func() {
		if err := h.p.DeletePod(ctx, p1); err != nil {
			t.Error(err)
		}
	}
	h.cloud.mu.Unlock()
	h.drain(ctx)
	h.p.mu.Lock()
	ph := e.phase
	h.p.mu.Unlock()
	if len(h.cloud.insts) != 0 || ph != phaseDeleted {
		t.Fatalf("after a delete during create: %d instances, phase %s", len(h.cloud.insts), ph)
	}
}

// The lifecycle allows only its own moves.
func TestPhaseTransitions(t *testing.T) {
	allowed := map[[2]phase]bool{}
	for from, tos := range transitions {
		for _, to := range tos {
			allowed[[2]phase{from, to}] = true
		}
	}
	for from := phaseWaiting; from <= phaseDeleted; from++ {
		for to := phaseWaiting; to <= phaseDeleted; to++ {
			e := &entry{phase: from}
			if got := e.to(to); got != allowed[[2]phase{from, to}] || (got && e.phase != to) || (!got && e.phase != from) {
				t.Errorf("%s -> %s: moved %v, now %s", from, to, got, e.phase)
			}
		}
	}
	for _, forbidden := range [][2]phase{{phaseDeleted, phaseRunning}, {phaseFinal, phaseRunning}, {phaseRunning, phaseWaiting}, {phaseDeleting, phaseRunning}} {
		if can(forbidden[0], forbidden[1]) {
			t.Errorf("%s -> %s is allowed", forbidden[0], forbidden[1])
		}
	}
}

// A create whose answer was lost, then refused on retry (a fresh
// service-account token makes the request differ under the same
// ClientToken), ends with the instance it made adopted: no second create,
// no pod stuck Pending.
func TestLostCreateAnswerIsAdopted(t *testing.T) {
	ctx := context.Background()
	p1 := pod("lost")
	h := newHarness(t, p1)
	h.cloud.lostAnswers = 1
	_ = h.create(ctx, p1)
	if _, _, err := h.p.Instance("ns", "lost"); err == nil {
		t.Fatal("an instance id was recorded from a failed call")
	}
	h.cloud.createErr = []error{errdefs.InvalidInput("IdempotentParameterMismatch")}
	if err := h.p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	id, _, err := h.p.Instance("ns", "lost")
	if err != nil || id != "eci-1" {
		t.Fatalf("instance %q, %v; want eci-1 adopted", id, err)
	}
	if h.cloud.creates != 1 || len(h.cloud.insts) != 1 {
		t.Fatalf("%d creates, %d instances", h.cloud.creates, len(h.cloud.insts))
	}
	if got := h.last("lost"); got == nil || got.Annotations[AnnotationInstanceID] != "eci-1" {
		t.Fatalf("reported %+v, want the adopted instance's annotations", got)
	}
	if s := h.last("lost"); s != nil && s.Status.Phase == corev1.PodFailed {
		t.Fatalf("pod failed: %+v", s.Status)
	}
}

// The full list is taken in a page at a time. A page that fails ends it
// with the pages before it taken in, and it counts as not taken: the next
// comes when it is due again, not GCInterval later.
func TestFullListIsTakenInPages(t *testing.T) {
	ctx := context.Background()
	h := syncedHarness(t, "a", "b", "c")
	last := h.p.lastFull
	// Events change no digest: only the full list brings them.
	for _, id := range []string{"eci-1", "eci-2", "eci-3"} {
		h.cloud.set(id, func(i *model.Instance) {
			i.Events = []model.Event{{Type: "Warning", Reason: "Unhealthy", Message: "probe failed on " + id, Name: id, Count: 1}}
		})
	}
	h.events()
	h.cloud.pageErr = errors.New("ServiceUnavailable")
	if err := h.p.fullList(ctx); err == nil {
		t.Fatal("a failed page was not an error")
	}
	if ev := h.events(); strings.Count(ev, "Unhealthy") != 2 || strings.Contains(ev, "eci-3") {
		t.Fatalf("a list that failed after its first page of two replayed:\n%s", ev)
	}
	if h.p.lastFull != last {
		t.Fatal("a failed list counted as taken")
	}
	h.cloud.pageErr = nil
	if err := h.p.fullList(ctx); err != nil {
		t.Fatal(err)
	}
	if ev := h.events(); strings.Count(ev, "Unhealthy") != 1 || !strings.Contains(ev, "eci-3") {
		t.Fatalf("the whole list replayed:\n%s", ev)
	}
}

// Polls go on while the full list is taken (at 10,000 pods it is 500
// calls, and every poll waited behind it), and a page asked for before a
// poll whose newer details were taken in does not step a pod back.
func TestPollsGoOnBesideTheFullList(t *testing.T) {
	ctx := context.Background()
	h := syncedHarness(t, "a", "b", "c")
	gate := make(chan struct{})
	h.cloud.mu.Lock()
	h.cloud.pageGate, h.cloud.reached = gate, make(chan struct{})
	reached := h.cloud.reached
	h.cloud.mu.Unlock()
	listed := make(chan error, 1)
	go func() { listed <- h.p.fullList(ctx) }()
	<-reached // c's page holds it as it was: not yet started

	h.cloud.set("eci-3", func(i *model.Instance) {
		i.Status, i.IntranetIP = translate.StatusRunning, "192.168.1.7"
		i.Containers = []model.ContainerStatus{{Name: "c", Ready: true, Current: model.ContainerState{State: "Running", Started: time.Now()}}}
	})
	polled := make(chan error, 1)
	go func() { polled <- h.p.sync(ctx, true) }()
	select {
	case err := <-polled:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a poll waited for the full list")
	}
	if n := h.last("c"); n == nil || n.Status.Phase != corev1.PodRunning {
		t.Fatalf("the poll did not report c Running: %+v", n)
	}
	close(gate)
	if err := <-listed; err != nil {
		t.Fatal(err)
	}
	if n := h.last("c"); n == nil || n.Status.Phase != corev1.PodRunning || n.Status.PodIP != "192.168.1.7" {
		t.Fatalf("the older page stepped c back: %+v", n.Status)
	}
}

// While instances are being created, the full list (all details, GC)
// waits: a 10,000-pod node's is 500 calls and their decoding, every
// minute of a burst. It waits at most fullListMaxDelay GCIntervals, and
// comes at its time once creates stop.
func TestFullListWaitsForTheBurst(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	full := func() int {
		h.cloud.mu.Lock()
		defer h.cloud.mu.Unlock()
		return h.cloud.fullLists
	}
	sync := func(lastFull time.Duration) int {
		t.Helper()
		h.p.lastFull = time.Now().Add(-lastFull)
		before := full()
		if err := h.p.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		return full() - before
	}
	if n := sync(0); n != 0 {
		t.Fatalf("%d full lists within GCInterval", n)
	}
	gc := h.p.cfg.GCInterval
	if n := sync(gc + time.Second); n != 1 {
		t.Fatalf("%d full lists GCInterval after the last, no creates", n)
	}
	h.p.createdInstance()
	if n := sync(gc + time.Second); n != 0 {
		t.Fatalf("%d full lists during a burst, GCInterval after the last", n)
	}
	if n := sync(fullListMaxDelay*gc + time.Second); n != 1 {
		t.Fatalf("%d full lists during a burst, %d GCIntervals after the last", n, fullListMaxDelay)
	}
	h.p.lastCreate.Store(time.Now().Add(-2 * h.p.cfg.SyncInterval).UnixNano())
	if n := sync(gc + time.Second); n != 1 {
		t.Fatalf("%d full lists once the burst ended", n)
	}
}

// A large node's full list keeps to fullListShare of the describe quota:
// with 10 calls a minute, a list of three pages (six instances in the
// fake's pages of two) comes every three minutes, not every GCInterval;
// with no quota known, every GCInterval.
func TestFullListKeepsToItsShareOfTheQuota(t *testing.T) {
	h := syncedHarness(t, "a", "b", "c", "d", "e", "f")
	if h.p.lastFullCalls != 3 {
		t.Fatalf("the full list took %d calls, want 3", h.p.lastFullCalls)
	}
	h.p.lastCreate.Store(0)
	due := func(ago time.Duration) bool {
		h.p.lastFull = time.Now().Add(-ago)
		return h.p.fullDue()
	}
	gc := h.p.cfg.GCInterval
	h.p.cfg.DescribeQuota = 10
	if due(gc + time.Second) {
		t.Error("due GCInterval after the last, past its share of the quota")
	}
	if !due(3*time.Minute + time.Second) {
		t.Error("not due once its share of the quota allows it")
	}
	h.p.cfg.DescribeQuota = 0
	if !due(gc + time.Second) {
		t.Error("no quota known, yet not due GCInterval after the last")
	}
}

func TestListErrorsAndVanishedInstances(t *testing.T) {
	ctx := context.Background()
	p1 := pod("p")
	h := newHarness(t, p1)
	_ = h.create(ctx, p1)
	h.cloud.set("eci-1", func(i *model.Instance) { i.Status = translate.StatusRunning })
	_ = h.p.Sync(ctx)
	h.cloud.listErr = errors.New("ServiceUnavailable")
	for i := 0; i < 3; i++ {
		if err := h.p.Sync(ctx); err == nil {
			t.Fatal("sync hid a list error")
		}
	}
	if s := h.last("p").Status; s.Phase != corev1.PodRunning {
		t.Fatalf("a cloud error changed the pod: %+v", s)
	}
	h.cloud.listErr = nil
	h.cloud.mu.Lock()
	delete(h.cloud.insts, "eci-1") // deleted behind our back
	h.cloud.mu.Unlock()
	_ = h.p.Sync(ctx)
	if s := h.last("p").Status; s.Phase != corev1.PodRunning {
		t.Fatal("one missing list marked the pod failed")
	}
	_ = h.p.Sync(ctx)
	if s := h.last("p").Status; s.Phase != corev1.PodFailed || s.Reason != ReasonVanished {
		t.Fatalf("vanished: %+v", s)
	}
}

// TestQueuedCreateReadsTheInformer: with a pod lister, a queued create
// keeps no copy of its pod (at 10,000 pods waiting on ECI's quota those
// copies were the provider's largest memory) and is made from the
// informer's pod; a pod gone from the informer before its turn is not
// created, and its DeletePod ends it.
func TestQueuedCreateReadsTheInformer(t *testing.T) {
	ctx := context.Background()
	kept, gone := pod("kept"), pod("gone")
	h, pods := newListedHarness(t, kept, gone)
	for _, p := range []*corev1.Pod{kept, gone} {
		if err := h.p.CreatePod(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	h.p.mu.Lock()
	for _, e := range h.p.entries {
		if e.full != nil {
			t.Errorf("%s: a queued create holds a copy of its pod", e.pod.Name)
		}
	}
	h.p.mu.Unlock()
	_ = pods.Delete(gone)
	for h.p.creates.Len() > 0 {
		h.p.processCreate(ctx)
	}
	h.cloud.mu.Lock()
	var made []string
	for _, g := range h.cloud.groups {
		made = append(made, g.Name)
		if len(g.Containers) != 1 || g.Containers[0].Image != "nginx" {
			t.Errorf("%s: created without the informer's containers: %+v", g.Name, g.Containers)
		}
	}
	h.cloud.mu.Unlock()
	if len(made) != 1 || h.p.entries[kept.UID].phase != phaseRunning {
		t.Fatalf("instances made: %v, kept's phase %v; want one, for kept", made, h.p.entries[kept.UID].phase)
	}
	if err := h.remove(ctx, gone); err != nil {
		t.Fatal(err)
	}
	for h.p.creates.Len() > 0 {
		h.p.processCreate(ctx)
	}
	if h.cloud.creates != 1 || h.p.entries[gone.UID].phase != phaseDeleted {
		t.Fatalf("after DeletePod: %d creates, gone's phase %v; want 1 and deleted", h.cloud.creates, h.p.entries[gone.UID].phase)
	}
}

// TestSyncChangesCostsWhatChanged: the poll between two whole lists asks
// only for statuses that changed since the last list began and fetches
// only their details, so polling every second through a burst is not
// O(N²); and an instance missing from a poll is not taken for gone, which
// only two whole lists can tell.
func TestSyncChangesCostsWhatChanged(t *testing.T) {
	ctx := context.Background()
	var pods []*corev1.Pod
	for i := range 5 {
		pods = append(pods, pod(fmt.Sprintf("p%d", i)))
	}
	h := newHarness(t, pods...)
	if err := h.p.sync(ctx, true); err != nil {
		t.Fatal(err)
	}
	if got := h.cloud.statusLists; len(got) != 1 || got[0] != 0 {
		t.Fatalf("a first poll, with no list before it, asked for %v; want a whole list (0)", got)
	}
	for _, p := range pods {
		if err := h.create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 5; i++ {
		h.cloud.set(fmt.Sprintf("eci-%d", i), func(i *model.Instance) { i.Status = translate.StatusRunning })
	}
	if err := h.p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// Everything changed long ago but eci-4, which fails now.
	h.cloud.mu.Lock()
	for id := range h.cloud.changed {
		h.cloud.changed[id] = time.Now().Add(-time.Hour)
	}
	h.cloud.fetched, h.cloud.statusLists = nil, nil
	h.cloud.mu.Unlock()
	h.cloud.set("eci-4", func(i *model.Instance) { i.Status = translate.StatusFailed })
	if err := h.p.sync(ctx, true); err != nil {
		t.Fatal(err)
	}
	h.cloud.mu.Lock()
	lists, fetched := slices.Clone(h.cloud.statusLists), slices.Clone(h.cloud.fetched)
	h.cloud.mu.Unlock()
	if len(lists) != 1 || lists[0] <= 0 || lists[0] > time.Minute {
		t.Errorf("the poll listed statuses changed within %v; want only since the last list", lists)
	}
	if !slices.Equal(fetched, []string{"eci-4"}) {
		t.Errorf("the poll fetched details of %v; want only eci-4", fetched)
	}
	if s := h.last("p3").Status; s.Phase != corev1.PodFailed {
		t.Errorf("p3 after its instance failed: %+v", s)
	}

	h.cloud.mu.Lock()
	delete(h.cloud.insts, "eci-2") // deleted behind our back
	h.cloud.mu.Unlock()
	for range 3 {
		if err := h.p.sync(ctx, true); err != nil {
			t.Fatal(err)
		}
	}
	if s := h.last("p1").Status; s.Phase != corev1.PodRunning {
		t.Fatalf("polls of changes took a missing instance for gone: %+v", s)
	}
	for range 2 {
		if err := h.p.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if s := h.last("p1").Status; s.Phase != corev1.PodFailed || s.Reason != ReasonVanished {
		t.Fatalf("two whole lists without its instance: %+v", s)
	}
}

// A pod whose instance ended (spot reclaimed) can be removed from the API
// server without DeletePod: virtual-kubelet does not call the provider for
// a pod that already ended. GC still deletes its instance.
func TestGCDeletesInstanceOfEndedPodRemovedWithoutDeletePod(t *testing.T) {
	ctx := context.Background()
	p1 := pod("spot")
	h := newHarness(t, p1)
	pods := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	_ = pods.Add(p1)
	h.p.SetPodLister(corev1listers.NewPodLister(pods))
	_ = h.create(ctx, p1)
	h.cloud.set("eci-1", func(i *model.Instance) { i.Status = translate.StatusExpired })
	_ = h.p.Sync(ctx)
	if s := h.last("spot").Status; s.Phase != corev1.PodFailed {
		t.Fatalf("expired instance: %+v", s)
	}
	_ = h.p.fullList(ctx)
	if len(h.cloud.insts) != 1 {
		t.Fatal("GC deleted the instance of a pod that still exists")
	}
	_ = pods.Delete(p1)
	_ = h.kube.CoreV1().Pods("ns").Delete(ctx, "spot", metav1.DeleteOptions{})
	_ = h.p.fullList(ctx)
	if len(h.cloud.insts) != 0 {
		t.Fatalf("left behind: %v", h.cloud.insts)
	}
	_ = h.p.fullList(ctx) // the entry is forgotten
	if _, err := h.p.GetPod(ctx, "ns", "spot"); !errdefs.IsNotFound(err) {
		t.Fatalf("entry kept: %v", err)
	}
}

func TestGCAndRecover(t *testing.T) {
	ctx := context.Background()
	live, gone := pod("live"), pod("gone")
	h := newHarness(t, live) // "gone" is not in the API server
	_ = h.create(ctx, live)
	_ = h.create(ctx, gone)
	// Another node's instance, returned by a buggy filter: never touched.
	h.cloud.extra = []*model.Instance{{ID: "eci-other", Tags: map[string]string{translate.TagCluster: "c1", translate.TagNode: "other", translate.TagPodUID: "x"}}}

	// A restarted provider knows nothing until it recovers.
	h2 := newHarness(t, live)
	h2.cloud, h2.p.cloud = h.cloud, h.cloud
	if err := h2.p.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	before := h.cloud.creates
	_ = h2.create(ctx, live)
	if h.cloud.creates != before {
		t.Fatal("a recovered pod was created again")
	}
	_ = h2.p.fullList(ctx)
	if len(h.cloud.deletes) != 1 || h.cloud.deletes[0] != "eci-2" {
		t.Fatalf("GC deleted %v, want only the orphan eci-2", h.cloud.deletes)
	}
	if _, ok := h.cloud.insts["eci-1"]; !ok {
		t.Fatal("GC deleted a live pod's instance")
	}
}

func (m *memCloud) ExecCommand(_ context.Context, id, container string, cmd []string, tty, stdin bool) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.insts[id]; !ok {
		return "", errdefs.NotFoundf("InvalidInstanceId.NotFound: %s", id)
	}
	return "", errors.New("memCloud has no exec sessions")
}

func (m *memCloud) ContainerLog(_ context.Context, req model.LogRequest) (string, error) {
	return "2026-01-01T00:00:00Z hello from " + req.InstanceID + "/" + req.Container + "\n", nil
}

func (m *memCloud) InstanceMetrics(_ context.Context, ids []string) (map[string]model.InstanceSample, error) {
	out := map[string]model.InstanceSample{}
	for _, id := range ids {
		out[id] = model.InstanceSample{Time: time.Now(), Usage: model.Usage{CPUUsageCoreNanoSeconds: 1e9, MemoryWorkingSetBytes: 1 << 20}}
	}
	return out, nil
}

func TestKubeletAPI(t *testing.T) {
	ctx := context.Background()
	p1 := pod("web")
	h := newHarness(t, p1)
	_ = h.create(ctx, p1)
	rc, err := h.p.GetContainerLogs(ctx, "ns", "web", "c", api.ContainerLogOpts{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	if string(b) != "hello from eci-1/c\n" {
		t.Errorf("logs %q", b)
	}
	if _, err := h.p.GetContainerLogs(ctx, "ns", "web", "nope", api.ContainerLogOpts{}); !errdefs.IsNotFound(err) {
		t.Errorf("unknown container: %v", err)
	}
	if _, err := h.p.GetContainerLogs(ctx, "ns", "other", "c", api.ContainerLogOpts{}); !errdefs.IsNotFound(err) {
		t.Errorf("unknown pod: %v", err)
	}
	long := make([]string, 21)
	if err := h.p.RunInContainer(ctx, "ns", "web", "c", long, nil); !errdefs.IsInvalidInput(err) {
		t.Errorf("21 args: %v", err)
	}
	if err := h.p.RunInContainer(ctx, "ns", "web", "c", []string{strings.Repeat("x", 257)}, nil); !errdefs.IsInvalidInput(err) {
		t.Errorf("long arg: %v", err)
	}
	if err := h.p.AttachToContainer(ctx, "ns", "web", "c", nil); !errdefs.IsInvalidInput(err) || !strings.Contains(err.Error(), "attach") {
		t.Errorf("attach: %v", err)
	}
	if err := h.p.PortForward(ctx, "ns", "web", 80, nil); !errdefs.IsInvalidInput(err) || !strings.Contains(err.Error(), "port-forward") {
		t.Errorf("port-forward: %v", err)
	}
	sum, err := h.p.GetStatsSummary(ctx)
	if err != nil || len(sum.Pods) != 1 || sum.Pods[0].PodRef.Name != "web" {
		t.Errorf("summary %+v %v", sum, err)
	}
}

// A missing configMap is waited for (it may be about to appear), then the
// pod fails once the grace period is over.
func TestMissingObjectIsWaitedFor(t *testing.T) {
	ctx := context.Background()
	p1 := pod("needs-cm")
	p1.CreationTimestamp = metav1.Now()
	p1.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "later"}}}}}
	h := newHarness(t, p1)
	_ = h.create(ctx, p1)
	got, _ := h.p.GetPod(ctx, "ns", "needs-cm")
	if got.Status.Phase != corev1.PodPending {
		t.Fatalf("failed at once: %+v", got.Status)
	}
	if !strings.Contains(h.events(), ReasonRetrying) {
		t.Error("no event says it waits")
	}
	old := pod("old-pod")
	old.CreationTimestamp = metav1.NewTime(time.Now().Add(-time.Hour))
	old.Spec.Volumes = p1.Spec.Volumes
	_ = h.create(ctx, old)
	if s := h.last("old-pod"); s == nil || s.Status.Phase != corev1.PodFailed || s.Status.Reason != "MissingConfigMap" {
		t.Fatalf("after the grace period: %+v", s)
	}
}

// An adopted pod whose API status lags its instance is reported at the
// first sync after a restart.
func TestRecoveredPodIsReported(t *testing.T) {
	ctx := context.Background()
	p1 := pod("adopted")
	h := newHarness(t, p1)
	_ = h.create(ctx, p1)
	h.cloud.set("eci-1", func(i *model.Instance) { i.Status = translate.StatusRunning })

	h2 := newHarness(t, p1) // the API server still says Pending
	h2.cloud, h2.p.cloud = h.cloud, h.cloud
	if err := h2.p.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h2.p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	n := h2.last("adopted")
	if n == nil || n.Status.Phase != corev1.PodRunning {
		t.Fatalf("adopted pod not reported Running: %+v", n)
	}
	// Its create was never annotated (the API server has none): the first
	// sync's report carries the annotations.
	if n.Annotations[AnnotationInstanceID] != "eci-1" || n.Annotations[AnnotationVKVersion] != "test" {
		t.Fatalf("adopted pod reported with annotations %v", n.Annotations)
	}
}

// A pod waiting for a secret its env needs says so with virtual-kubelet's
// reason, once however often it is retried, and runs nothing meanwhile, so
// it is not among the running pods; a missing optional one is only noted.
func TestMissingEnvObjectsAreNoted(t *testing.T) {
	ctx := context.Background()
	waiting := pod("needs-secret")
	waiting.CreationTimestamp = metav1.Now()
	waiting.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "PW", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "later"}, Key: "pw"}}}}
	yes := true
	optional := pod("optional-cm")
	optional.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Key: "x", Optional: &yes}}}}
	h := newHarness(t, waiting, optional)
	_ = h.create(ctx, waiting)
	_ = h.create(ctx, optional)
	h.retried(t, ctx)
	h.p.mu.Lock()
	attempts := h.p.entries[waiting.UID].attempts
	h.p.mu.Unlock()
	if attempts < 2 { // more if the backoff came round again meanwhile
		t.Fatalf("%d attempts, want a retry", attempts)
	}
	ev := h.events()
	if strings.Count(ev, "MandatorySecretNotFound") != 1 || strings.Count(ev, "OptionalConfigMapNotFound") != 1 {
		t.Errorf("events:\n%s", ev)
	}
	pods, _ := h.p.GetPods(ctx)
	if len(pods) != 1 || pods[0].Name != "optional-cm" {
		t.Errorf("running pods %v, want only optional-cm", pods)
	}
}

// Between full lists a sync reads only the status list and the details of
// the instances whose status changed; an event that came without a status
// change waits for the next full list.
func TestSyncFetchesOnlyChangedInstances(t *testing.T) {
	ctx := context.Background()
	p1, p2 := pod("a"), pod("b")
	h := newHarness(t, p1, p2)
	for _, p := range []*corev1.Pod{p1, p2} {
		if err := h.create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.p.Sync(ctx); err != nil { // the first sync lists in full
		t.Fatal(err)
	}
	fetched := func() []string {
		h.cloud.mu.Lock()
		defer h.cloud.mu.Unlock()
		out := h.cloud.fetched
		h.cloud.fetched = nil
		return out
	}
	fetched()
	if err := h.p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if f := fetched(); len(f) != 0 {
		t.Errorf("nothing changed, yet %v were fetched", f)
	}
	h.cloud.set("eci-2", func(i *model.Instance) {
		i.Status, i.IntranetIP = translate.StatusRunning, "192.168.1.9"
		i.Containers = []model.ContainerStatus{{Name: "c", Ready: true, Current: model.ContainerState{State: "Running", Started: time.Now()}}}
	})
	h.cloud.set("eci-1", func(i *model.Instance) {
		i.Events = []model.Event{{Type: "Warning", Reason: "Unhealthy", Message: "probe failed", Name: "e9", Count: 1}}
	})
	h.events()
	if err := h.p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if f := fetched(); len(f) != 1 || f[0] != "eci-2" {
		t.Errorf("fetched %v, want only the changed eci-2", f)
	}
	if n := h.last("b"); n == nil || n.Status.Phase != corev1.PodRunning || n.Status.PodIP != "192.168.1.9" {
		t.Fatalf("the changed instance's pod: %+v", n)
	}
	if ev := h.events(); strings.Contains(ev, "Unhealthy") {
		t.Errorf("an event alone was seen before the full list:\n%s", ev)
	}
	h.p.lastFull = time.Now().Add(-2 * h.p.cfg.GCInterval)
	h.p.lastCreate.Store(0) // no burst to wait for (TestFullListWaitsForTheBurst)
	if err := h.p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if ev := h.events(); strings.Count(ev, "Unhealthy") != 1 {
		t.Errorf("the full list did not replay the event:\n%s", ev)
	}
}

// The full list also collects garbage: an instance whose pod is gone is
// deleted without a separate list.
func TestFullSyncCollectsOrphans(t *testing.T) {
	ctx := context.Background()
	p1 := pod("gone")
	h := newHarness(t, p1)
	if err := h.create(ctx, p1); err != nil {
		t.Fatal(err)
	}
	if err := h.kube.CoreV1().Pods("ns").Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.p.mu.Lock()
	delete(h.p.entries, p1.UID) // as if the provider restarted without it
	delete(h.p.keys, "ns/gone")
	h.p.mu.Unlock()
	if err := h.p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(h.cloud.insts) != 0 || len(h.cloud.deletes) != 1 {
		t.Fatalf("orphan left: %d instances, deletes %v", len(h.cloud.insts), h.cloud.deletes)
	}
}

// The provider's copies, and the pods it hands to virtual-kubelet, carry
// no managedFields: at 10,000 pods they would cost megabytes.
func TestCopiesDropManagedFields(t *testing.T) {
	ctx := context.Background()
	p1 := pod("mf")
	p1.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationUpdate,
		FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:spec":{}}`)}}}
	h := newHarness(t, p1)
	if err := h.create(ctx, p1); err != nil {
		t.Fatal(err)
	}
	h.cloud.set("eci-1", func(i *model.Instance) { i.Status = translate.StatusRunning })
	if err := h.p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := h.p.GetPod(ctx, "ns", "mf")
	if err != nil || len(got.ManagedFields) != 0 {
		t.Fatalf("GetPod: %v %v", got.ManagedFields, err)
	}
	if n := h.last("mf"); n == nil || len(n.ManagedFields) != 0 {
		t.Fatalf("notified: %+v", n)
	}
	if len(p1.ManagedFields) != 1 {
		t.Fatal("the caller's pod was changed")
	}
}

// Once its instance exists, a pod is kept as a record: names and images of
// its containers, its claims, its metadata and status; it is reported to
// virtual-kubelet with no containers at all. GetPod still answers the whole spec
// (from the informer, or the pod as given while it is not created), and a
// create that waits for a retry still translates the whole pod.
func TestPodsAreKeptAsSkeletons(t *testing.T) {
	ctx := context.Background()
	p1 := pod("sk")
	p1.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "A", Value: "1"}}
	p1.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox", Command: []string{"true"}}}
	p1.Spec.RestartPolicy = corev1.RestartPolicyNever
	p1.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	h := newHarness(t, p1)
	h.cloud.createErr = []error{errors.New("ECI is throttling")}
	if err := h.create(ctx, p1); err != nil {
		t.Fatal(err)
	}
	// Not created yet: GetPod has the whole spec from the pod as given.
	got, err := h.p.GetPod(ctx, "ns", "sk")
	if err != nil || len(got.Spec.Containers[0].Env) != 1 || len(got.Spec.Volumes) != 1 {
		t.Fatalf("GetPod before the instance exists: %+v, %v", got, err)
	}
	h.retried(t, ctx)
	if h.cloud.creates != 2 || len(h.cloud.groups) != 1 {
		t.Fatalf("%d create calls made %d instances, want a failed call and a retry that creates", h.cloud.creates, len(h.cloud.groups))
	}
	for _, g := range h.cloud.groups {
		if len(g.Containers) != 1 || len(g.Containers[0].Env) != 1 || len(g.InitContainers) != 1 {
			t.Fatalf("the retried create lost the spec: %+v", g)
		}
	}
	h.cloud.set("eci-1", func(i *model.Instance) { i.Status = translate.StatusRunning })
	if err := h.p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	n := h.last("sk")
	if n == nil || n.Status.Phase != corev1.PodRunning {
		t.Fatalf("notified: %+v", n)
	}
	// Reported with no containers: pods/status keeps the stored spec.
	if !reflect.DeepEqual(n.Spec, corev1.PodSpec{NodeName: "vn"}) {
		t.Fatalf("reported spec = %+v, want only the node", n.Spec)
	}
	want := corev1.PodSpec{
		NodeName: "vn", RestartPolicy: corev1.RestartPolicyNever,
		InitContainers: []corev1.Container{{Name: "init", Image: "busybox"}},
		Containers:     []corev1.Container{{Name: "c", Image: "nginx"}},
	}
	h.p.mu.Lock()
	for _, e := range h.p.entries {
		if e.full != nil {
			t.Error("the whole pod is still kept after its instance was created")
		}
	}
	h.p.mu.Unlock()
	// Created, with no informer: GetPod answers the skeleton; with one,
	// the informer's whole spec.
	if got, _ := h.p.GetPod(ctx, "ns", "sk"); !reflect.DeepEqual(got.Spec, want) {
		t.Fatalf("GetPod without an informer: %+v", got.Spec)
	}
	pods := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	_ = pods.Add(p1)
	h.p.SetPodLister(corev1listers.NewPodLister(pods))
	if got, _ := h.p.GetPod(ctx, "ns", "sk"); !reflect.DeepEqual(got.Spec, p1.Spec) || got.Status.Phase != corev1.PodRunning {
		t.Fatalf("GetPod with an informer: spec %+v, phase %s", got.Spec, got.Status.Phase)
	}
	if n := h.last("sk"); len(n.Spec.Containers) != 0 {
		t.Fatal("GetPod changed the reported pod")
	}
}

// A record keeps the claims a pod mounts (their annotations are removed
// at delete), and nothing else of its volumes; with a pod lister, of the
// metadata only the pod's identity and the provider's own annotations.
func TestRecordKeepsClaimsAndIdentity(t *testing.T) {
	p1 := pod("claims")
	claim := corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "claim"}}}
	p1.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}, claim}
	p1.Status.Phase = corev1.PodRunning
	p1.Labels = map[string]string{"app": "web"}
	p1.Annotations = map[string]string{"team": "a", AnnotationInstanceID: "eci-1"}
	r := newPodRecord(p1, false)
	sk := r.pod()
	if !reflect.DeepEqual(sk.Spec.Volumes, []corev1.Volume{claim}) || sk.Status.Phase != corev1.PodRunning || sk.Name != "claims" || sk.UID != p1.UID {
		t.Fatalf("record's pod = %+v", sk)
	}
	if sk.Labels != nil || !reflect.DeepEqual(sk.Annotations, map[string]string{AnnotationInstanceID: "eci-1"}) {
		t.Fatalf("record keeps labels %v, annotations %v; want only the provider's annotations", sk.Labels, sk.Annotations)
	}
	r.claims[0].PersistentVolumeClaim.ClaimName = "other"
	if p1.Spec.Volumes[1].PersistentVolumeClaim.ClaimName != "claim" {
		t.Fatal("the record shares the pod's claims")
	}
	// No lister to read metadata from: all of it is kept.
	if all := newPodRecord(p1, true).pod(); !reflect.DeepEqual(all.Labels, p1.Labels) || !reflect.DeepEqual(all.Annotations, p1.Annotations) {
		t.Fatalf("record without a lister keeps labels %v, annotations %v", all.Labels, all.Annotations)
	}
}

// A pod whose name is longer than a tag holds has a hashed name tag: a
// restarted provider still adopts its instance, and garbage collection
// keeps it while the pod lives.
func TestLongPodNameIsRecoveredAndKept(t *testing.T) {
	ctx := context.Background()
	long := pod(strings.Repeat("a-very-long-pod-name-", 10)) // 210 characters
	h := newHarness(t, long)
	if err := h.create(ctx, long); err != nil {
		t.Fatal(err)
	}
	if got := h.cloud.groups[0].Tags[translate.TagPod]; got == long.Name || len(got) > model.MaxTagValue {
		t.Fatalf("name tag %q is not the hashed name", got)
	}
	h2 := newHarness(t, long)
	h2.cloud, h2.p.cloud = h.cloud, h.cloud
	if err := h2.p.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if id, _, err := h2.p.Instance("ns", long.Name); err != nil || id != "eci-1" {
		t.Fatalf("the long-named pod's instance was not adopted: %q, %v", id, err)
	}
	_ = h2.p.fullList(ctx)
	if len(h.cloud.deletes) != 0 {
		t.Fatalf("GC deleted %v, the instance of a live pod with a long name", h.cloud.deletes)
	}
	// With the informer's cache, a GC tick asks the API server nothing
	// about a pod the provider knows, however long its name.
	pods := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	_ = pods.Add(long)
	h2.p.SetPodLister(corev1listers.NewPodLister(pods))
	h2.kube.ClearActions()
	_ = h2.p.fullList(ctx)
	for _, a := range h2.kube.Actions() {
		if a.GetResource().Resource == "pods" {
			t.Errorf("a GC tick with the pod cached called the API server: %s pods", a.GetVerb())
		}
	}
	if len(h.cloud.deletes) != 0 {
		t.Fatalf("GC deleted %v", h.cloud.deletes)
	}
}

// Exec on an instance that vanished behind the provider's back keeps the
// cloud's NotFound through the provider's wrap, which virtual-kubelet
// reads through Cause(): the caller gets 404, not 500.
func TestExecOnVanishedInstanceIsNotFound(t *testing.T) {
	ctx := context.Background()
	p1 := pod("gone")
	h := newHarness(t, p1)
	if err := h.create(ctx, p1); err != nil {
		t.Fatal(err)
	}
	h.cloud.mu.Lock()
	delete(h.cloud.insts, "eci-1")
	h.cloud.mu.Unlock()
	err := h.p.RunInContainer(ctx, "ns", "gone", "c", []string{"true"}, noIO{})
	if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "starting exec in ns/gone") {
		t.Fatalf("exec on a vanished instance: %v (NotFound %v), want a NotFound that says what was being done", err, errdefs.IsNotFound(err))
	}
}

// noIO is an exec with no streams and no terminal.
type noIO struct{}

func (noIO) Stdin() io.Reader            { return nil }
func (noIO) Stdout() io.WriteCloser      { return nil }
func (noIO) Stderr() io.WriteCloser      { return nil }
func (noIO) TTY() bool                   { return false }
func (noIO) Resize() <-chan api.TermSize { return nil }

// A pod that first waits for a secret and is then refused by the cloud
// gets an event for each cause, once each, however often it is retried.
func TestEachRetryCauseIsRecordedOnce(t *testing.T) {
	ctx := context.Background()
	p1 := pod("waits")
	p1.CreationTimestamp = metav1.Now()
	p1.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "later"}}}}
	h := newHarness(t, p1)
	if err := h.create(ctx, p1); err != nil {
		t.Fatal(err)
	}
	h.retried(t, ctx) // still missing
	h.p.src.Objects = secretNamed{"later"}
	h.cloud.mu.Lock()
	h.cloud.createErr = []error{errors.New("SignatureDoesNotMatch: the AccessKey secret is wrong"), errors.New("SignatureDoesNotMatch: the AccessKey secret is wrong")}
	h.cloud.mu.Unlock()
	h.retried(t, ctx)
	h.retried(t, ctx)
	ev := h.events()
	if strings.Count(ev, ReasonRetrying) != 2 || strings.Count(ev, "MissingSecret") != 1 || strings.Count(ev, "SignatureDoesNotMatch") != 1 {
		t.Fatalf("want one retry event for the missing secret and one for the cloud's refusal:\n%s", ev)
	}
}

// secretNamed has one secret, with one key.
type secretNamed struct{ name string }

func (s secretNamed) ConfigMap(ns, name string) (*corev1.ConfigMap, error) {
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
}

func (s secretNamed) Secret(ns, name string) (*corev1.Secret, error) {
	if name != s.name {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
	}
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: map[string][]byte{"k": []byte("v")}}, nil
}

// TestDeletedPodGoneFromAPIIsNotNotified: the final status of a deleted
// pod the API server no longer has is not handed to virtual-kubelet (which
// would wait on its informer for it, then drop it); while the API server
// still has the pod, it is.
func TestDeletedPodGoneFromAPIIsNotNotified(t *testing.T) {
	ctx := context.Background()
	kept, gone := pod("kept"), pod("gone")
	h, pods := newListedHarness(t, kept, gone)
	var told []string
	h.p.NotifyPods(ctx, func(p *corev1.Pod) { told = append(told, p.Name+" "+string(p.Status.Phase)) })
	for _, p := range []*corev1.Pod{kept, gone} {
		if err := h.create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	h.drain(ctx)
	told = nil
	_ = pods.Delete(gone)
	for _, p := range []*corev1.Pod{kept, gone} {
		if err := h.remove(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"kept Succeeded"}; fmt.Sprint(told) != fmt.Sprint(want) {
		t.Fatalf("told virtual-kubelet %q after the deletes, want %q", told, want)
	}
}

// TestAnnotationsRideTheStatus: the provider's annotations cost no request
// of their own. A sync that learns a new instance's status and size tells
// virtual-kubelet once, with the informer's metadata (a label set since
// the create included), its status and every annotation of the create and
// the size, for its pods/status write to carry; no PATCH is made. GetPod
// answers the informer's metadata, without them: virtual-kubelet compares
// it with its informer's copy, which does not show them.
func TestAnnotationsRideTheStatus(t *testing.T) {
	ctx := context.Background()
	p1 := pod("web")
	p1.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-1", UID: "rs"}}
	h, pods := newListedHarness(t, p1)
	var told []*corev1.Pod
	h.p.NotifyPods(ctx, func(p *corev1.Pod) { told = append(told, p) })
	if err := h.create(ctx, p1); err != nil {
		t.Fatal(err)
	}
	if len(told) != 0 {
		t.Fatalf("told virtual-kubelet before the first sync: %+v", told[0])
	}
	labelled := p1.DeepCopy()
	labelled.Labels = map[string]string{"tier": "front"}
	_ = pods.Update(labelled)
	h.cloud.set("eci-1", func(i *model.Instance) {
		i.Status, i.CPU, i.MemoryGi = translate.StatusRunning, 2, 4
		i.Containers = []model.ContainerStatus{{Name: "c", Ready: true, Current: model.ContainerState{State: "Running", Started: time.Now()}}}
	})
	for range 2 { // the second sync finds nothing new
		if err := h.p.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		h.drain(ctx)
	}
	if n := countActions(h.kube, "patch"); n != 0 {
		t.Fatalf("%d PATCH requests, want none: the status write carries the annotations", n)
	}
	if len(told) != 1 {
		t.Fatalf("told virtual-kubelet %d times, want once", len(told))
	}
	got := told[0]
	if got.Status.Phase != corev1.PodRunning || got.Labels["tier"] != "front" || got.OwnerReferences != nil {
		t.Fatalf("told %+v", got)
	}
	for k, v := range map[string]string{AnnotationInstanceID: "eci-1", AnnotationRequestID: "req-eci-1", AnnotationClientToken: "vnode-uid-web",
		AnnotationVKVersion: "test", AnnotationInstanceSpec: "2-4Gi", AnnotationInstanceCPU: "2", AnnotationInstanceMem: "4Gi", AnnotationInstanceZone: "cn-hangzhou-h"} {
		if got.Annotations[k] != v {
			t.Errorf("told annotation %s=%q, want %q", k, got.Annotations[k], v)
		}
	}
	gp, err := h.p.GetPod(ctx, "ns", "web")
	if err != nil || gp.Status.Phase != corev1.PodRunning || gp.Labels["tier"] != "front" || gp.Annotations[AnnotationInstanceID] != "" || len(gp.OwnerReferences) != 1 {
		t.Fatalf("GetPod = %+v, %v; want the informer's pod with the provider's status", gp, err)
	}
}

// countActions counts the client's requests of one verb.
func countActions(c *fake.Clientset, verb string) int {
	n := 0
	for _, a := range c.Actions() {
		if a.GetVerb() == verb {
			n++
		}
	}
	return n
}

// TestSyncComesSoonAfterCreates: a create wakes the sync loop, which then
// polls for changes after StartSyncInterval, not SyncInterval, and keeps
// that cadence while instances are being created; the whole list is still
// due at its time. SyncInterval here is an hour: a waitSync that waited
// for it ends with the test's context instead.
func TestSyncComesSoonAfterCreates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := New(Config{Node: translate.NodeSettings{ClusterName: "c1", NodeName: "vn"}, SyncInterval: time.Hour, StartSyncInterval: time.Millisecond, Log: logrus.New()},
		newMemCloud(), fake.NewClientset(), translate.Sources{Objects: noObjects{}}, nil)
	listDue := time.Now().Add(time.Hour)
	done, stop := context.WithCancel(ctx)
	stop()
	if _, ok := p.waitSync(done, listDue); ok {
		t.Fatal("waitSync reported a sync due after its context ended")
	}
	p.createdInstance()
	if changes, ok := p.waitSync(ctx, listDue); !ok || !changes {
		t.Fatalf("after a create: sync %v, a poll of changes %v; want a poll soon", ok, changes)
	}
	// No new create, but one a moment ago: the short cadence goes on.
	if changes, ok := p.waitSync(ctx, listDue); !ok || !changes {
		t.Fatalf("while creating: sync %v, a poll of changes %v; want a poll soon", ok, changes)
	}
	// The whole list, once due, is not replaced by a poll.
	if changes, ok := p.waitSync(ctx, time.Now()); !ok || changes {
		t.Fatalf("whole list due: sync %v, a poll of changes %v; want the whole list", ok, changes)
	}
	// With no create for long, polls come every SyncInterval while the
	// whole list is not due.
	p = New(Config{Node: translate.NodeSettings{ClusterName: "c1", NodeName: "vn"}, SyncInterval: time.Millisecond, ListInterval: time.Hour, Log: logrus.New()},
		newMemCloud(), fake.NewClientset(), translate.Sources{Objects: noObjects{}}, nil)
	if changes, ok := p.waitSync(ctx, listDue); !ok || !changes {
		t.Fatalf("idle: sync %v, a poll of changes %v; want a poll every SyncInterval", ok, changes)
	}
}

// TestWholeListWaitsWhileCreating: the whole status list is due
// ListInterval after the last, and while instances are being created
// wholeListMaxDelay ListIntervals after it, no later.
func TestWholeListWaitsWhileCreating(t *testing.T) {
	p := New(Config{Node: translate.NodeSettings{ClusterName: "c1", NodeName: "vn"}, SyncInterval: time.Hour, ListInterval: 2 * time.Hour, Log: logrus.New()},
		newMemCloud(), fake.NewClientset(), translate.Sources{Objects: noObjects{}}, nil)
	last := time.Now()
	if got, want := p.listDue(last), last.Add(2*time.Hour); !got.Equal(want) {
		t.Errorf("idle: whole list due %v after the last, want %v", got.Sub(last), want.Sub(last))
	}
	p.createdInstance()
	if got, want := p.listDue(last), last.Add(wholeListMaxDelay*2*time.Hour); !got.Equal(want) {
		t.Errorf("creating: whole list due %v after the last, want %v", got.Sub(last), want.Sub(last))
	}
	// The loop's view: a whole list more than a ListInterval old is not
	// yet due while creating, and one wholeListMaxDelay ListIntervals old
	// is.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p.cfg.StartSyncInterval = time.Millisecond
	if changes, ok := p.waitSync(ctx, p.listDue(time.Now().Add(-3*time.Hour))); !ok || !changes {
		t.Errorf("creating, last whole list 3h ago: sync %v, a poll %v; want a poll", ok, changes)
	}
	if changes, ok := p.waitSync(ctx, p.listDue(time.Now().Add(-wholeListMaxDelay*2*time.Hour))); !ok || changes {
		t.Errorf("creating, last whole list %d ListIntervals ago: sync %v, a poll %v; want the whole list", wholeListMaxDelay, ok, changes)
	}
}

// TestRunPutsTheWholeListOffWhileCreating: Run's loop asks listDue, so
// while instances are being created its whole status lists come
// wholeListMaxDelay ListIntervals apart, with polls between them. The
// bound counts lists against the time they had, so a slow machine only
// makes fewer of them.
func TestRunPutsTheWholeListOffWhileCreating(t *testing.T) {
	const listEvery, burst = 60 * time.Millisecond, 600 * time.Millisecond
	cloud := newMemCloud()
	p := New(Config{Node: translate.NodeSettings{ClusterName: "c1", NodeName: "vn"}, SyncInterval: 50 * time.Millisecond, StartSyncInterval: 5 * time.Millisecond,
		ListInterval: listEvery, GCInterval: time.Hour, Log: logrus.New()},
		cloud, fake.NewClientset(), translate.Sources{Objects: noObjects{}}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	for end := time.Now().Add(burst); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		p.createdInstance()
	}
	cancel()
	<-done
	cloud.mu.Lock()
	defer cloud.mu.Unlock()
	whole, polls := 0, 0
	for _, within := range cloud.statusLists {
		if within == 0 {
			whole++
		} else {
			polls++
		}
	}
	// The first list at start, then one every wholeListMaxDelay
	// ListIntervals: 3 in 600 ms; one every ListInterval would be 10.
	if most := 1 + int(burst/(wholeListMaxDelay*listEvery)); whole < 1 || whole > most {
		t.Errorf("%d whole status lists in a %v burst, want 1 to %d", whole, burst, most)
	}
	if polls < whole {
		t.Errorf("%d polls beside %d whole lists, want polls between them", polls, whole)
	}
}

// TestDeletedEntriesForgottenFromTheInformer: a full sync forgets deleted
// pods the informer no longer has without asking the API server for each,
// and keeps those it still has.
func TestDeletedEntriesForgottenFromTheInformer(t *testing.T) {
	ctx := context.Background()
	kept, gone := pod("kept"), pod("gone")
	h, pods := newListedHarness(t, kept, gone)
	for _, p := range []*corev1.Pod{kept, gone} {
		if err := h.create(ctx, p); err != nil {
			t.Fatal(err)
		}
		if err := h.remove(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	_ = pods.Delete(gone)
	getsBefore := countActions(h.kube, "get")
	_ = h.p.fullList(ctx)
	if n := countActions(h.kube, "get") - getsBefore; n != 0 {
		t.Fatalf("%d GETs of pods to forget deleted entries, want 0 (the informer has them)", n)
	}
	if _, err := h.p.GetPod(ctx, "ns", "gone"); !errdefs.IsNotFound(err) {
		t.Fatalf("the entry of a pod the API server let go is kept: %v", err)
	}
	if _, err := h.p.GetPod(ctx, "ns", "kept"); err != nil {
		t.Fatalf("the entry of a deleted pod the API server still has is forgotten: %v", err)
	}
}

// newListedHarness is a harness whose provider reads pods from an
// informer's cache holding pods, which the test edits.
func newListedHarness(t *testing.T, pods ...*corev1.Pod) (*harness, cache.Indexer) {
	h := newHarness(t, pods...)
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, p := range pods {
		_ = idx.Add(p)
	}
	h.p.SetPodLister(corev1listers.NewPodLister(idx))
	return h, idx
}

// TestInstanceEventsToldOncePerCount: an instance's event is told once;
// again only when ECI counts it again; an event with no count once; and
// two events that differ only in their message are both told.
func TestInstanceEventsToldOncePerCount(t *testing.T) {
	ctx := context.Background()
	h := syncedHarness(t, "web")
	id := ""
	for k := range h.cloud.insts {
		id = k
	}
	full := func(evs ...model.Event) string {
		t.Helper()
		h.cloud.set(id, func(i *model.Instance) { i.Events = evs })
		if err := h.p.fullList(ctx); err != nil {
			t.Fatal(err)
		}
		return h.events()
	}
	h.events()
	pulled := model.Event{Type: "Normal", Reason: "Pulled", Message: "pulled nginx", Name: "e1", Count: 1}
	uncounted := model.Event{Type: "Normal", Reason: "Started", Message: "started c", Name: "e2"}
	if ev := full(pulled, uncounted); strings.Count(ev, "Pulled") != 1 || strings.Count(ev, "Started") != 1 {
		t.Fatalf("first list, events:\n%s", ev)
	}
	if ev := full(pulled, uncounted); ev != "" {
		t.Errorf("the same events again were told:\n%s", ev)
	}
	again := pulled
	again.Count = 3
	other := model.Event{Type: "Warning", Reason: "Pulled", Message: "pulled nginx:2", Name: "e1", Count: 1}
	if ev := full(again, uncounted, other); strings.Count(ev, "Pulled") != 2 || strings.Count(ev, "pulled nginx:2") != 1 {
		t.Errorf("a counted repeat and an event of another message: events:\n%s", ev)
	}
	if ev := full(again, uncounted, other); ev != "" {
		t.Errorf("nothing new, yet events were told:\n%s", ev)
	}
}
