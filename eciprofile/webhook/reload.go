package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/vnode-project/vnode/eciprofile/profile"
)

// Work-queue keys: each rebuilds one form from its lister.
const (
	keyConfigMap = "configmap"
	keySelectors = "selectors"
)

// Event reasons on the ConfigMap and on Selectors.
const (
	ReasonInvalid = "InvalidSelectors"
	ReasonApplied = "SelectorsApplied"
)

// reloader keeps the selector set current from the informers. One worker
// runs reconcile, so its bookkeeping needs no lock; the set is published
// through an atomic pointer for the handler.
type reloader struct {
	cmNamespace, cmName string
	configMaps          corelisters.ConfigMapLister
	selectors           cache.GenericLister
	queue               workqueue.TypedRateLimitingInterface[string]
	recorder            record.EventRecorder
	m                   *metrics
	log                 logrus.FieldLogger

	current atomic.Pointer[profile.Set]
	count   atomic.Int64
	loaded  [2]atomic.Bool // configmap, selectors

	// Owned by the worker.
	profile  *profile.Profile
	goodSels map[string]profile.Rule
	reported map[types.UID]string // object -> resourceVersion last given an event
	cmUID    types.UID
}

func newReloader(cmNamespace, cmName string, configMaps corelisters.ConfigMapLister, selectors cache.GenericLister,
	recorder record.EventRecorder, m *metrics, log logrus.FieldLogger) *reloader {
	return &reloader{
		cmNamespace: cmNamespace, cmName: cmName, configMaps: configMaps, selectors: selectors,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "eci-profile"}),
		recorder: recorder, m: m, log: log,
		goodSels: map[string]profile.Rule{}, reported: map[types.UID]string{},
	}
}

// handlerFor enqueues key on any change of an informer's objects.
func (r *reloader) handlerFor(key string) cache.ResourceEventHandler {
	enqueue := func(any) { r.queue.Add(key) }
	return cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, _ any) { r.queue.Add(key) }, DeleteFunc: enqueue}
}

// Set is the selector set in force (nil before the first load).
func (r *reloader) Set() *profile.Set { return r.current.Load() }

// Loaded reports whether both forms have been read once.
func (r *reloader) Loaded() bool { return r.loaded[0].Load() && r.loaded[1].Load() }

func (r *reloader) run(ctx context.Context) {
	defer r.queue.ShutDown()
	r.queue.Add(keyConfigMap)
	r.queue.Add(keySelectors)
	go wait.UntilWithContext(ctx, func(context.Context) {
		for r.processNext() {
		}
	}, time.Second)
	<-ctx.Done()
}

func (r *reloader) processNext() bool {
	key, quit := r.queue.Get()
	if quit {
		return false
	}
	defer r.queue.Done(key)
	if err := r.reconcile(key); err != nil {
		utilruntime.HandleError(fmt.Errorf("reloading %s: %w", key, err))
		r.queue.AddRateLimited(key)
		return true
	}
	r.queue.Forget(key)
	return true
}

// reconcile rebuilds one form from the cache and publishes the new set.
// A bad object keeps the last good version and gets one Warning event per
// resourceVersion.
func (r *reloader) reconcile(key string) error {
	switch key {
	case keyConfigMap:
		if err := r.reloadConfigMap(); err != nil {
			return err
		}
		r.loaded[0].Store(true)
	case keySelectors:
		if err := r.reloadSelectors(); err != nil {
			return err
		}
		r.loaded[1].Store(true)
	}
	rules := make([]profile.Rule, 0, len(r.goodSels))
	for _, rule := range r.goodSels {
		rules = append(rules, rule)
	}
	r.current.Store(profile.NewSet(rules, r.profile))
	n := len(rules)
	if r.profile != nil {
		n += len(r.profile.Selectors)
	}
	r.count.Store(int64(n))
	return nil
}

func (r *reloader) reloadConfigMap() error {
	cm, err := r.configMaps.ConfigMaps(r.cmNamespace).Get(r.cmName)
	if apierrors.IsNotFound(err) {
		if r.profile != nil {
			r.log.Info("ConfigMap deleted: its selectors no longer apply")
		}
		r.profile = nil
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading ConfigMap %s/%s from the cache: %w", r.cmNamespace, r.cmName, err)
	}
	p, perr := profile.ParseConfigMap(cm.Data)
	if r.cmUID != cm.UID {
		delete(r.reported, r.cmUID)
		r.cmUID = cm.UID
	}
	fresh := r.reported[cm.UID] != cm.ResourceVersion
	r.reported[cm.UID] = cm.ResourceVersion
	log := r.log.WithFields(logrus.Fields{"configMap": r.cmNamespace + "/" + r.cmName, "resourceVersion": cm.ResourceVersion})
	if perr != nil {
		if fresh {
			r.m.reloads.WithLabelValues(profile.FormConfigMap, "rejected").Inc()
			log.WithError(perr).Warn("ConfigMap rejected; the last good selectors stay")
			r.recorder.Eventf(cm, corev1.EventTypeWarning, ReasonInvalid, "not applied, the previous selectors stay: %v", perr)
		}
		return nil
	}
	r.profile = p
	if fresh {
		r.m.reloads.WithLabelValues(profile.FormConfigMap, "applied").Inc()
		log.WithField("selectors", len(p.Selectors)).Info("ConfigMap applied")
		r.recorder.Eventf(cm, corev1.EventTypeNormal, ReasonApplied, "applied %d selectors", len(p.Selectors))
	}
	return nil
}

func (r *reloader) reloadSelectors() error {
	objs, err := r.selectors.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("listing Selectors from the cache: %w", err)
	}
	sort.Slice(objs, func(i, j int) bool {
		return objs[i].(*unstructured.Unstructured).GetName() < objs[j].(*unstructured.Unstructured).GetName()
	})
	seen := map[string]bool{}
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		name := u.GetName()
		seen[name] = true
		rule, perr := parseUnstructured(u)
		fresh := r.reported[u.GetUID()] != u.GetResourceVersion()
		r.reported[u.GetUID()] = u.GetResourceVersion()
		log := r.log.WithFields(logrus.Fields{"selector": name, "resourceVersion": u.GetResourceVersion()})
		if perr != nil {
			if fresh {
				r.m.reloads.WithLabelValues(profile.FormSelector, "rejected").Inc()
				_, had := r.goodSels[name]
				log.WithError(perr).WithField("keptPrevious", had).Warn("Selector rejected")
				r.recorder.Eventf(u, corev1.EventTypeWarning, ReasonInvalid, "not applied (previous version kept: %t): %v", had, perr)
			}
			continue
		}
		r.goodSels[name] = rule
		if fresh {
			r.m.reloads.WithLabelValues(profile.FormSelector, "applied").Inc()
			log.WithFields(logrus.Fields{"policy": rule.Policy, "priority": rule.Priority}).Info("Selector applied")
		}
	}
	for name := range r.goodSels {
		if !seen[name] {
			delete(r.goodSels, name)
			r.log.WithField("selector", name).Info("Selector deleted")
		}
	}
	// Forget deleted objects (the ConfigMap's entry is kept: it is one).
	live := map[types.UID]bool{}
	for _, o := range objs {
		if u, ok := o.(*unstructured.Unstructured); ok {
			live[u.GetUID()] = true
		}
	}
	for uid := range r.reported {
		if !live[uid] && uid != r.cmUID {
			delete(r.reported, uid)
		}
	}
	return nil
}

func parseUnstructured(u *unstructured.Unstructured) (profile.Rule, error) {
	b, err := json.Marshal(u.Object)
	if err != nil {
		return profile.Rule{}, fmt.Errorf("encoding Selector %s: %w", u.GetName(), err)
	}
	s, err := profile.DecodeSelector(b)
	if err != nil {
		return profile.Rule{}, err
	}
	return profile.ParseSelector(s)
}
