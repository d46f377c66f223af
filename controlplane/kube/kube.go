// Package kube is the Kubernetes source of the control plane: informers over
// Services and discovery.k8s.io/v1 EndpointSlices (and, when asked, Pods)
// turned into topology snapshots. It is the only package that imports
// client-go.
//
// Data flows one way. Informer event handlers only enqueue "namespace/name"
// keys of Services into a rate-limited workqueue. One worker (the goroutine
// that calls Run) takes every key currently queued, re-reads the listers for
// those Services, converts them with convert.Service, and hands the sink one
// new topology.Snapshot that replaces exactly those Services' ports and shares
// everything else with the previous snapshot.
//
// The first snapshot is handed over only after every informer has synced and
// every Service has been converted, so a sink never mistakes a starting source
// for an empty world. While the API server is unreachable nothing is removed:
// the informers keep their caches, the last snapshot stays current, and
// client-go's reflectors relist by themselves when the API server returns.
// A source made by NewForConfig makes the outage loud: each failed list or
// watch request is logged at Warn with its cause, counted in
// fairway_kube_watch_errors_total and kept for LastError.
//
// Invalid or surprising objects are reported, never fatal: each convert.Problem
// becomes a Warning Event on its Service (when the Service exists), a log line
// and a count in fairway_source_problems_total. A problem that persists is
// reported once, not on every resync.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/fairway-lb/fairway/controlplane/convert"
	"github.com/fairway-lb/fairway/controlplane/topology"
)

// Component is the event source component of the Events the source records.
const Component = "fairway-controlplane"

const (
	// defaultResync is the informers' resync period: every object is
	// re-delivered (and its Service re-checked) this often.
	defaultResync = 10 * time.Minute
	// maxBatch caps how many queued keys go into one snapshot.
	maxBatch = 1000
	// podIndex indexes EndpointSlices by the "namespace/name" of the pods
	// their endpoints refer to.
	podIndex = "fairway.io/pod"
	// serviceIndex indexes EndpointSlices by "namespace/service-name".
	serviceIndex = "fairway.io/service"
)

// convertService is convert.Service; tests replace it to make a conversion
// fail.
var convertService = convert.Service

// Option configures a Source.
type Option func(*Source)

// WithNamespaces restricts the source to Services and EndpointSlices in these
// namespaces (one informer set per namespace). The default is every namespace.
func WithNamespaces(namespaces ...string) Option {
	return func(s *Source) {
		for _, ns := range namespaces {
			if ns != "" && !slices.Contains(s.namespaces, ns) {
				s.namespaces = append(s.namespaces, ns)
			}
		}
	}
}

// WithSelector serves only Services whose labels match sel. The default is
// every Service. EndpointSlices of Services that do not match are ignored.
func WithSelector(sel labels.Selector) Option {
	return func(s *Source) {
		if sel != nil {
			s.selector = sel
		}
	}
}

// ParseSelector parses a label selector such as "app=web,tier!=db" for
// WithSelector.
func ParseSelector(selector string) (labels.Selector, error) {
	sel, err := labels.Parse(selector)
	if err != nil {
		return nil, fmt.Errorf("fairway/kube: invalid selector %q: %w", selector, err)
	}
	return sel, nil
}

// WithPods turns on an informer over Pods so that endpoints carry their pod's
// labels and the pod annotation fairway.io/weight sets their weight. Off by
// default: watching every Pod costs memory and API server load.
func WithPods(on bool) Option { return func(s *Source) { s.pods = on } }

// WithDefaultExport sets the export of Services without a valid
// fairway.io/export-to annotation (convert.Options.DefaultExport; default
// topology.ExportAll, every namespace).
func WithDefaultExport(e topology.Export) Option { return func(s *Source) { s.defaultExport = e } }

// WithLogger sets the logger. The default is slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(s *Source) {
		if l != nil {
			s.logger = l
		}
	}
}

// WithRegisterer registers the source's metrics with reg (default: kept but
// not registered). A fairway_source_problems_total that reg already holds
// (registered by another source) is shared.
func WithRegisterer(reg prometheus.Registerer) Option { return func(s *Source) { s.registry = reg } }

// WithEventRecorder records problem Events with rec instead of an event
// broadcaster of the source's own that writes them through the client.
func WithEventRecorder(rec record.EventRecorder) Option { return func(s *Source) { s.recorder = rec } }

// Source is a topology.Source over the Kubernetes API. Create it with New;
// call Run once.
type Source struct {
	// immutable after New
	client     kubernetes.Interface
	namespaces []string // empty: every namespace
	selector   labels.Selector
	pods       bool
	logger     *slog.Logger
	// defaultExport is convert.Options.DefaultExport.
	defaultExport topology.Export
	registry      prometheus.Registerer
	recorder      record.EventRecorder // nil: Run builds its own
	metrics       *metrics
	requests      *requestWatcher // watches the client's requests (NewForConfig only)
	synced        atomic.Bool
	running       atomic.Bool

	// set by Run before the informers start, read-only afterwards
	scopes []*scope
	queue  workqueue.TypedRateLimitingInterface[string] // also guarded by mu for queueDepth

	mu      sync.Mutex
	changed map[string]time.Time // guarded by mu: when each queued key was first enqueued

	// owned by the worker (the goroutine in Run)
	snap     *topology.Snapshot
	version  uint64
	ports    map[string][]topology.ServiceKey // service key → its ports in snap
	problems map[string][]string              // service key → last reported problem set
}

// scope is the informers of one namespace (or of every namespace).
type scope struct {
	namespace     string // "" = every namespace
	factory       informers.SharedInformerFactory
	services      corelisters.ServiceLister
	slices        discoverylisters.EndpointSliceLister
	sliceIndexer  cache.Indexer
	pods          corelisters.PodLister // nil unless WithPods(true)
	hasSyncedList []cache.InformerSynced
}

// New returns a source that watches the API through client. A failing API
// server shows only in client-go's own log lines; NewForConfig makes it loud.
func New(client kubernetes.Interface, opts ...Option) *Source {
	s := newSource(opts)
	s.client = client
	return s
}

// NewForConfig returns a source that watches the API through a client for cfg
// (made as NewClientForConfig does) whose failed list and watch requests are
// logged at Warn with their cause (the first at once, then at most every 30 s
// per resource while they keep failing), counted in
// fairway_kube_watch_errors_total and returned by LastError.
func NewForConfig(cfg *rest.Config, opts ...Option) (*Source, error) {
	s := newSource(opts)
	s.requests = newRequestWatcher(s.logger, s.metrics.watchErr)
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(s.requests.wrap)
	client, err := NewClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	s.client = client
	return s, nil
}

// LastError returns the error of the last failed list or watch request, or
// nil once requests succeed again (always nil for a source made by New). It
// explains why a source has not synced. Safe for concurrent use.
func (s *Source) LastError() error {
	if s.requests == nil {
		return nil
	}
	return s.requests.lastError()
}

func newSource(opts []Option) *Source {
	s := &Source{
		selector: labels.Everything(),
		logger:   slog.Default(),
		changed:  make(map[string]time.Time),
		ports:    make(map[string][]topology.ServiceKey),
		problems: make(map[string][]string),
	}
	for _, o := range opts {
		o(s)
	}
	s.logger = s.logger.With("component", "fairway/kube")
	m, err := newMetrics(s.registry, s.queueDepth)
	if err != nil {
		s.logger.Error("cannot register metrics", "error", err)
	}
	s.metrics = m
	return s
}

// queueDepth is the number of keys waiting in the workqueue.
func (s *Source) queueDepth() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queue == nil {
		return 0
	}
	return float64(s.queue.Len())
}

// Synced reports whether the informers have synced and the first snapshot
// has been handed to the sink. It stays true afterwards, also while the API
// server is unreachable (the last known state is being served).
func (s *Source) Synced() bool { return s.synced.Load() }

// Run watches the API and calls sink.Update with every new snapshot until ctx
// is done. It returns nil when ctx is done and an error if it cannot start.
// Run may be called once.
func (s *Source) Run(ctx context.Context, sink topology.Sink) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("fairway/kube: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	queue := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{})
	defer queue.ShutDown()
	s.mu.Lock()
	s.queue = queue
	s.mu.Unlock()

	if s.recorder == nil {
		b := record.NewBroadcaster(record.WithContext(ctx))
		b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: s.client.CoreV1().Events("")})
		defer b.Shutdown()
		s.recorder = b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component})
	}

	namespaces := s.namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	for _, ns := range namespaces {
		sc, err := s.newScope(ns)
		if err != nil {
			return err
		}
		s.scopes = append(s.scopes, sc)
	}
	var wg sync.WaitGroup
	defer wg.Wait() // after the factories have been shut down (defers run LIFO)
	for _, sc := range s.scopes {
		sc.factory.Start(ctx.Done())
		defer sc.factory.Shutdown()
	}
	defer cancel() // stop the informers before waiting for them
	wg.Go(func() {
		<-ctx.Done()
		s.queue.ShutDown()
	})

	s.logger.Info("waiting for informers to sync", "namespaces", s.namespaces, "selector", s.selector.String(), "pods", s.pods)
	start := time.Now()
	for _, sc := range s.scopes {
		if !cache.WaitForCacheSync(ctx.Done(), sc.hasSyncedList...) {
			if ctx.Err() != nil {
				return nil
			}
			return errors.New("fairway/kube: informers did not sync")
		}
	}
	s.initial(sink, start)
	s.synced.Store(true)
	s.logger.Info("informers synced", "services", len(s.ports), "servicePorts", s.snap.Len(), "took", time.Since(start).Round(time.Millisecond))

	for s.processBatch(sink) {
	}
	return nil
}

func (s *Source) newScope(ns string) (*scope, error) {
	f := informers.NewSharedInformerFactoryWithOptions(s.client, defaultResync,
		informers.WithNamespace(ns), informers.WithTransform(stripManagedFields))
	sc := &scope{namespace: ns, factory: f}

	svcInf := f.Core().V1().Services()
	sliceInf := f.Discovery().V1().EndpointSlices()
	sc.services = svcInf.Lister()
	sc.slices = sliceInf.Lister()
	sc.sliceIndexer = sliceInf.Informer().GetIndexer()
	indexers := cache.Indexers{serviceIndex: indexByService}
	if s.pods {
		indexers[podIndex] = indexByPod
	}
	if err := sliceInf.Informer().AddIndexers(indexers); err != nil {
		return nil, fmt.Errorf("fairway/kube: adding indexers: %w", err)
	}
	if _, err := svcInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    s.enqueueObject,
		UpdateFunc: func(_, obj any) { s.enqueueObject(obj) },
		DeleteFunc: s.enqueueObject,
	}); err != nil {
		return nil, fmt.Errorf("fairway/kube: adding service handler: %w", err)
	}
	if _, err := sliceInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: s.enqueueSlice,
		UpdateFunc: func(old, obj any) {
			s.enqueueSlice(old) // the service-name label may have changed
			s.enqueueSlice(obj)
		},
		DeleteFunc: s.enqueueSlice,
	}); err != nil {
		return nil, fmt.Errorf("fairway/kube: adding endpointslice handler: %w", err)
	}
	sc.hasSyncedList = []cache.InformerSynced{svcInf.Informer().HasSynced, sliceInf.Informer().HasSynced}

	if s.pods {
		podInf := f.Core().V1().Pods()
		if err := podInf.Informer().SetTransform(stripPod); err != nil {
			return nil, fmt.Errorf("fairway/kube: setting pod transform: %w", err)
		}
		sc.pods = podInf.Lister()
		handler := func(obj any) { s.enqueuePod(sc, obj) }
		if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    handler,
			UpdateFunc: func(_, obj any) { handler(obj) },
			DeleteFunc: handler,
		}); err != nil {
			return nil, fmt.Errorf("fairway/kube: adding pod handler: %w", err)
		}
		sc.hasSyncedList = append(sc.hasSyncedList, podInf.Informer().HasSynced)
	}
	return sc, nil
}

// scopeFor returns the informers that hold namespace ns.
func (s *Source) scopeFor(ns string) *scope {
	for _, sc := range s.scopes {
		if sc.namespace == metav1.NamespaceAll || sc.namespace == ns {
			return sc
		}
	}
	return nil
}

// enqueue records key as changed. Called from informer goroutines.
func (s *Source) enqueue(key string) {
	s.mu.Lock()
	if _, ok := s.changed[key]; !ok {
		s.changed[key] = time.Now()
	}
	s.mu.Unlock()
	s.queue.Add(key)
}

func (s *Source) enqueueObject(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		s.logger.Warn("cannot key object", "error", err)
		return
	}
	s.enqueue(key)
}

func (s *Source) enqueueSlice(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	slice, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	if name, ok := convert.ServiceNameOf(slice); ok {
		s.enqueue(slice.Namespace + "/" + name)
	}
}

func (s *Source) enqueuePod(sc *scope, obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	objs, err := sc.sliceIndexer.ByIndex(podIndex, key)
	if err != nil {
		return
	}
	for _, o := range objs {
		s.enqueueSlice(o)
	}
}

// takeChanged returns and forgets when key was first enqueued.
func (s *Source) takeChanged(key string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.changed[key]
	if !ok {
		return time.Now()
	}
	delete(s.changed, key)
	return t
}

// change is the new state of one Service's ports.
type change struct {
	upsert []*topology.Service
	remove []topology.ServiceKey
	ports  []topology.ServiceKey // the ports served afterwards
}

// initial converts every Service and hands the sink the first snapshot.
func (s *Source) initial(sink topology.Sink, start time.Time) {
	keys := make(map[string]struct{})
	for _, sc := range s.scopes {
		svcs, _ := sc.services.List(labels.Everything())
		for _, svc := range svcs {
			keys[svc.Namespace+"/"+svc.Name] = struct{}{}
		}
		sls, _ := sc.slices.List(labels.Everything())
		for _, sl := range sls {
			if name, ok := convert.ServiceNameOf(sl); ok {
				keys[sl.Namespace+"/"+name] = struct{}{}
			}
		}
	}
	var upsert []*topology.Service
	for _, key := range slices.Sorted(maps.Keys(keys)) {
		c, err := s.sync(key)
		if err != nil {
			s.logger.Error("service failed; retrying", "service", key, "error", err)
			s.queue.AddRateLimited(key)
			continue
		}
		upsert = append(upsert, c.upsert...)
		s.setPorts(key, c.ports)
	}
	s.version++
	s.snap = topology.NewSnapshot(s.version, start, upsert)
	sink.Update(s.snap)
	s.metrics.services.Set(float64(len(s.ports)))
}

func (s *Source) setPorts(key string, ports []topology.ServiceKey) {
	if len(ports) == 0 {
		delete(s.ports, key)
		return
	}
	s.ports[key] = ports
}

// processBatch takes every queued key (at least one, waiting for it), builds
// one snapshot from them and hands it to the sink. It returns false once the
// queue has been shut down.
func (s *Source) processBatch(sink topology.Sink) bool {
	key, shutdown := s.queue.Get()
	if shutdown {
		return false
	}
	batch := []string{key}
	for len(batch) < maxBatch && s.queue.Len() > 0 {
		k, shutdown := s.queue.Get()
		if shutdown {
			break
		}
		batch = append(batch, k)
	}
	dequeued := time.Now()
	defer func() {
		for _, k := range batch {
			s.queue.Done(k)
		}
	}()

	var (
		upsert  []*topology.Service
		remove  []topology.ServiceKey
		changed time.Time
	)
	for _, k := range batch {
		t := s.takeChanged(k)
		c, err := s.sync(k)
		if err != nil {
			s.logger.Error("service failed; retrying", "service", k, "error", err)
			s.queue.AddRateLimited(k)
			continue
		}
		s.queue.Forget(k)
		if len(c.upsert) == 0 && len(c.remove) == 0 {
			continue
		}
		if changed.IsZero() || t.Before(changed) {
			changed = t
		}
		upsert = append(upsert, c.upsert...)
		remove = append(remove, c.remove...)
		s.setPorts(k, c.ports)
	}
	if len(upsert) == 0 && len(remove) == 0 {
		return true
	}
	s.version++
	s.snap = s.snap.With(s.version, changed, upsert, remove)
	sink.Update(s.snap)
	s.metrics.services.Set(float64(len(s.ports)))
	s.metrics.sync.Observe(time.Since(dequeued).Seconds())
	s.logger.Debug("snapshot updated", "version", s.version, "services", len(batch), "upserted", len(upsert), "removed", len(remove))
	return true
}

// sync re-reads the listers for one Service and returns how its ports change
// against the current snapshot. It never panics: a panic while converting
// becomes an error so that the key is retried with backoff.
func (s *Source) sync(key string) (c change, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("fairway/kube: converting %s panicked: %v", key, r)
		}
	}()
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return change{}, fmt.Errorf("fairway/kube: bad key %q: %w", key, err)
	}
	sc := s.scopeFor(ns)
	if sc == nil {
		return s.diff(key, nil), nil
	}
	svc, err := sc.services.Services(ns).Get(name)
	if err != nil {
		svc = nil // not found (the lister only fails with NotFound)
	}
	objs, err := sc.sliceIndexer.ByIndex(serviceIndex, key)
	if err != nil {
		return change{}, fmt.Errorf("fairway/kube: listing endpointslices of %s: %w", key, err)
	}
	sls := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if sl, ok := o.(*discoveryv1.EndpointSlice); ok {
			sls = append(sls, sl)
		}
	}
	slices.SortFunc(sls, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })

	switch {
	case svc == nil && len(sls) > 0:
		problems := make([]convert.Problem, len(sls))
		for i, sl := range sls {
			problems[i] = convert.Problem{
				Namespace: ns, Object: "EndpointSlice " + ns + "/" + sl.Name,
				Reason:  convert.ReasonOrphanEndpointSlice,
				Message: fmt.Sprintf("Service %s/%s does not exist; the EndpointSlice is ignored", ns, name),
			}
		}
		s.report(key, nil, problems)
		return s.diff(key, nil), nil
	case svc == nil || !s.selector.Matches(labels.Set(svc.Labels)):
		s.report(key, nil, nil)
		return s.diff(key, nil), nil
	}

	opts := convert.Options{DefaultExport: s.defaultExport}
	if sc.pods != nil {
		pods := sc.pods
		opts.Pod = func(namespace, name string) (map[string]string, map[string]string, bool) {
			p, err := pods.Pods(namespace).Get(name)
			if err != nil {
				return nil, nil, false
			}
			return p.Labels, p.Annotations, true
		}
	}
	svcs, problems := convertService(svc, sls, opts)
	s.report(key, svc, problems)
	return s.diff(key, svcs), nil
}

// diff compares a Service's newly converted ports with those in the snapshot.
func (s *Source) diff(key string, svcs []*topology.Service) change {
	var c change
	for _, svc := range svcs {
		c.ports = append(c.ports, svc.Key)
		if s.snap != nil {
			if old, ok := s.snap.Service(svc.Key); ok && old.Equal(svc) {
				continue
			}
		}
		c.upsert = append(c.upsert, svc)
	}
	for _, k := range s.ports[key] {
		if !slices.Contains(c.ports, k) {
			c.remove = append(c.remove, k)
		}
	}
	return c
}

// report reports the problems of one Service that were not reported for it
// last time. svc is nil when the Service does not exist (no Event then).
func (s *Source) report(key string, svc *corev1.Service, problems []convert.Problem) {
	set := make([]string, len(problems))
	for i, p := range problems {
		set[i] = p.Reason + "\x00" + p.Object + "\x00" + p.Message
	}
	slices.Sort(set)
	set = slices.Compact(set)
	prev := s.problems[key]
	if len(set) == 0 {
		delete(s.problems, key)
	} else {
		s.problems[key] = set
	}
	for _, p := range problems {
		id := p.Reason + "\x00" + p.Object + "\x00" + p.Message
		if _, found := slices.BinarySearch(prev, id); found {
			continue
		}
		prev = append(prev, id) // report duplicates within one set once
		slices.Sort(prev)
		s.metrics.problems.WithLabelValues("kubernetes", p.Reason).Inc()
		s.logger.Warn("invalid object", "service", key, "object", p.Object, "reason", p.Reason, "message", p.Message)
		if svc != nil {
			msg := p.Message
			if p.Object != "" && !strings.Contains(msg, p.Object) {
				msg = p.Object + ": " + msg
			}
			s.recorder.Event(svc, corev1.EventTypeWarning, p.Reason, msg)
		}
	}
}

// stripManagedFields drops managedFields from cached objects: the source never
// reads them and they are a large share of an object's memory.
func stripManagedFields(obj any) (any, error) {
	if acc, ok := obj.(metav1.ObjectMetaAccessor); ok {
		acc.GetObjectMeta().SetManagedFields(nil)
	}
	return obj, nil
}

// stripPod keeps only what the source reads of a Pod: its identity, labels
// and annotations.
func stripPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
		Labels: p.Labels, Annotations: p.Annotations,
	}}, nil
}

func indexByService(obj any) ([]string, error) {
	sl, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	name, ok := convert.ServiceNameOf(sl)
	if !ok {
		return nil, nil
	}
	return []string{sl.Namespace + "/" + name}, nil
}

func indexByPod(obj any) ([]string, error) {
	sl, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	var keys []string
	for _, ep := range sl.Endpoints {
		if r := ep.TargetRef; r != nil && r.Kind == "Pod" && r.Name != "" {
			ns := r.Namespace
			if ns == "" {
				ns = sl.Namespace
			}
			keys = append(keys, ns+"/"+r.Name)
		}
	}
	return keys, nil
}
