// Package xdsserver serves Fairway's topology over xDS: it implements
// topology.Sink, translates each snapshot with package translate and streams
// the resources to Envoy and proxyless gRPC clients over ADS, both
// State-of-the-World and Delta, on one gRPC server.
//
// Every resource type (Cluster, ClusterLoadAssignment, Listener,
// RouteConfiguration) lives in its own go-control-plane LinearCache behind a
// MuxCache, so a client subscribing to one service among many gets its answer
// at once (a SnapshotCache in ADS mode waits for a request naming every
// resource), and a change to one service re-sends only that service's changed
// resources to delta subscribers.
//
// Update records the latest snapshot and schedules a push. Pushes are
// debounced: the first change of a burst starts a timer of the debounce
// window, later changes ride along without restarting it, so a lone change
// waits at most one window and a burst costs one push. A push translates only
// the services whose *topology.Service changed since the last push (pointer
// equality first, then Service.Equal).
//
// Requests naming resources the server does not have are answered as
// go-control-plane does (SotW: the name is absent from the response; delta:
// nothing is sent for it), logged once per stream and name, and counted in
// fairway_xds_unknown_resource_requests_total; the stream keeps serving its
// other names. The check starts with the first push (before it every name is
// unknown). A NACK (a request carrying error_detail) is counted in
// fairway_xds_nacks_total, logged at warn level the first time a stream
// reports a given error for a type (at debug level after that), and delays
// that stream's next answer by the NACK delay (WithNACKDelay), since
// go-control-plane re-sends the rejected resources at once.
//
// Caller zones: the server counts, per Cluster name, the streams subscribed
// to it by name whose node states a zone (node.locality.zone of the first
// request carrying a node), by zone. A SotW Cluster request's resource_names
// replace a stream's set, a delta request subscribes and unsubscribes; the
// wildcard counts for no Cluster; a closed stream counts for nothing. Each
// Cluster carries the fractions in filter_metadata["fairway.io"]
// ["caller_zones"] (see translate.WithCallerZones). A change of callers
// marks the Cluster and rides the debounced push; the push re-renders a
// Cluster whose callers alone changed only when a zone appeared or
// disappeared or a fraction moved by CallerZonesMinMove or more from the
// published one, and updates just that Cluster in its cache. A push of
// callers alone counts neither in fairway_xds_pushes_total nor in the
// snapshot version; fairway_xds_caller_zones_updates_total counts the
// Clusters it re-renders and fairway_xds_caller_streams{zone} the open
// streams that stated a zone (a zone's series goes when its last stream does).
package xdsserver

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	clusterservicepb "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservicepb "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservicepb "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservicepb "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"k8s.io/utils/clock"

	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/controlplane/translate"
)

// DefaultDebounce is the default debounce window.
const DefaultDebounce = 20 * time.Millisecond

// DefaultNACKDelay is how long, by default, a stream waits after a NACK
// before the server answers it again.
const DefaultNACKDelay = 100 * time.Millisecond

// The resource types the server serves, in the order a push updates them
// (what a resource points to is in the caches before the resource).
var typeURLs = []string{resourcev3.EndpointType, resourcev3.ClusterType, resourcev3.RouteType, resourcev3.ListenerType}

// Option configures a Server.
type Option func(*options)

type options struct {
	debounce  time.Duration
	nackDelay time.Duration
	logger    *slog.Logger
	registry  *prometheus.Registry
	clock     clock.WithDelayedExecution
	warmup    time.Duration
}

// WithDebounce sets the debounce window (default DefaultDebounce). Zero or
// less pushes every Update at once.
func WithDebounce(d time.Duration) Option { return func(o *options) { o.debounce = d } }

// WithNACKDelay sets how long a stream waits after sending a NACK before
// the server processes its next request (default DefaultNACKDelay; zero or
// less: no wait). go-control-plane answers a NACK at once with the same
// resources, so without a delay a client that rejects them loops as fast as
// the network allows.
func WithNACKDelay(d time.Duration) Option { return func(o *options) { o.nackDelay = d } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithRegistry registers the server's metrics in r and serves r on /metrics.
// By default the server creates its own registry with the Go and process
// collectors.
func WithRegistry(r *prometheus.Registry) Option { return func(o *options) { o.registry = r } }

// WithClock sets the clock the debounce timer runs on (default the real
// clock); tests pass a fake clock.
func WithClock(c clock.WithDelayedExecution) Option { return func(o *options) { o.clock = c } }

// WithCallerZonesWarmup holds back caller_zones for d after New: Clusters
// pushed meanwhile carry none, and the first push after d publishes them.
// A restarted control plane first sees only the clients that have
// reconnected so far; publishing their spread would swing every client's
// zone spill until the rest are back, while a Cluster without caller_zones
// leaves the Fairway client on the fractions it already had. Default 0.
func WithCallerZonesWarmup(d time.Duration) Option { return func(o *options) { o.warmup = d } }

// Server is an xDS server fed with topology snapshots. Create it with New,
// feed it with Update, serve it with Serve or RegisterGRPC, and release it
// with Close.
type Server struct {
	// immutable
	log       *slog.Logger
	debounce  time.Duration
	nackDelay time.Duration
	clock     clock.WithDelayedExecution
	registry  *prometheus.Registry
	metrics   *metrics
	caches    map[string]*cachev3.LinearCache // by type URL
	xds       serverv3.Server
	ctx       context.Context
	cancel    context.CancelFunc
	kick      chan struct{} // buffered(1): a push is due
	wg        sync.WaitGroup

	// pushed is the last snapshot in the caches; nil before the first push.
	// Written only by the push goroutine.
	pushed atomic.Pointer[topology.Snapshot]

	// Lock order: mu before streamsMu; neither is held while calling into
	// the caches.
	mu        sync.Mutex
	latest    *topology.Snapshot // guarded by mu
	scheduled bool               // guarded by mu: a push is due for latest
	timer     clock.Timer        // guarded by mu
	closed    bool               // guarded by mu
	grpcSrvs  []*grpc.Server     // guarded by mu: servers started by Serve

	streamsMu sync.Mutex
	streams   map[streamID]*streamState // guarded by streamsMu
	// callers counts, per Cluster name, the streams subscribed to it by
	// name whose node states a zone, by zone.
	callers map[string]map[string]int // guarded by streamsMu
	// zoneStreams counts the open streams that stated each zone.
	zoneStreams map[string]int // guarded by streamsMu
	// callersDirty holds the Cluster names whose callers changed since the
	// push goroutine last took them.
	callersDirty map[string]bool // guarded by streamsMu

	// published is, per Cluster name, the callers' distribution (zone to
	// thousandths) in the Cluster in the cache. Owned by the push goroutine.
	published map[string]map[string]int
	// callersFrom is when caller_zones may be published (immutable);
	// warmedUp records, for the push goroutine, that it has seen it pass.
	callersFrom time.Time
	warmedUp    bool
	warmupTimer clock.Timer // nil without a warm-up; stopped by Close
}

type streamID struct {
	protocol string // "sotw" or "delta"
	id       int64
}

type streamState struct {
	nodeID   string
	nodeSeen bool            // a request carrying a node has been seen
	zone     string          // the node's locality zone, from the first request carrying a node
	clusters map[string]bool // Cluster names subscribed to by name
	types    map[string]bool // type URLs this stream has requested
	unknown  map[string]bool // "type/name" already reported as unknown
	nacked   map[string]bool // "type/error" already logged as NACKed
}

func newStreamState() *streamState {
	return &streamState{types: map[string]bool{}, unknown: map[string]bool{}, nacked: map[string]bool{}}
}

// throttleNACK delays the stream that sent a NACK by the NACK delay (or until
// Close). It runs on that stream's goroutine.
func (s *Server) throttleNACK() {
	if s.nackDelay <= 0 {
		return
	}
	t := time.NewTimer(s.nackDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
	}
}

// New creates a Server and starts its push goroutine.
func New(opts ...Option) *Server {
	o := options{debounce: DefaultDebounce, nackDelay: DefaultNACKDelay}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if o.clock == nil {
		o.clock = clock.RealClock{}
	}
	if o.registry == nil {
		o.registry = prometheus.NewRegistry()
		o.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	s := &Server{
		log:       o.logger.With("component", "xdsserver"),
		debounce:  o.debounce,
		nackDelay: o.nackDelay,
		clock:     o.clock,
		registry:  o.registry,
		metrics:   newMetrics(o.registry),
		caches:    make(map[string]*cachev3.LinearCache, len(typeURLs)),
		kick:      make(chan struct{}, 1),
		streams:   make(map[streamID]*streamState),

		callers:      map[string]map[string]int{},
		callersDirty: map[string]bool{},
		zoneStreams:  map[string]int{},
		published:    map[string]map[string]int{},
		callersFrom:  o.clock.Now().Add(o.warmup),
	}
	mux := &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        make(map[string]cachev3.Cache, len(typeURLs)),
	}
	for _, t := range typeURLs {
		c := cachev3.NewLinearCache(t)
		s.caches[t] = c
		mux.Caches[t] = c
		s.metrics.resources.WithLabelValues(typeLabel(t)).Set(0)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.xds = serverv3.NewServer(s.ctx, mux, &callbacks{s: s})
	if o.warmup > 0 {
		// kickPush only sends on a channel: safe under a fake clock's lock.
		s.warmupTimer = o.clock.AfterFunc(o.warmup, s.kickPush)
	}
	s.wg.Add(1)
	go s.run()
	return s
}

// Update records snap as the latest state and schedules a push. It never
// blocks on clients. Called from the source's goroutine (topology.Sink).
func (s *Server) Update(snap *topology.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.latest = snap
	s.scheduleLocked()
}

// scheduleLocked schedules a push unless one is due. s.mu is held.
func (s *Server) scheduleLocked() {
	if s.scheduled {
		return // rides along with the push already due
	}
	s.scheduled = true
	if s.debounce <= 0 {
		s.kickPush()
		return
	}
	s.timer = s.clock.AfterFunc(s.debounce, s.kickPush)
}

// kickPush wakes the push goroutine. It may run under the (fake) clock's
// lock, so it only sends on a channel.
func (s *Server) kickPush() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Server) run() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.kick:
		}
		s.mu.Lock()
		snap := s.latest
		s.scheduled = false
		s.timer = nil
		s.mu.Unlock()
		if snap != nil {
			s.push(snap)
		}
	}
}

// push brings the caches from the last pushed snapshot to snap, and
// republishes the Clusters whose callers' distribution moved. Called only
// from the push goroutine.
func (s *Server) push(snap *topology.Snapshot) {
	prev := s.pushed.Load()
	update := make(map[string]map[string]types.Resource, len(typeURLs))
	remove := make(map[string][]string, len(typeURLs))
	for _, t := range typeURLs {
		update[t] = map[string]types.Resource{}
	}
	clusters := map[string]*topology.Service{} // Clusters to render, by name
	changed, removed := 0, 0
	if snap != prev {
		for svc := range snap.All() {
			var old *topology.Service
			if prev != nil {
				old, _ = prev.Service(svc.Key)
			}
			if old == svc || (old != nil && old.Equal(svc)) {
				continue
			}
			changed++
			name := svc.Key.ResourceName()
			if old == nil || !endpointsEqual(old, svc) {
				update[resourcev3.EndpointType][name] = translate.LoadAssignment(svc)
			}
			if old == nil || !old.Policy.Equal(svc.Policy) {
				clusters[name] = svc
			}
			if old == nil {
				update[resourcev3.RouteType][name] = translate.RouteConfig(svc)
				for _, l := range translate.Listeners(svc) {
					update[resourcev3.ListenerType][l.GetName()] = l
				}
			}
		}
		if prev != nil {
			for svc := range prev.All() {
				if _, ok := snap.Service(svc.Key); ok {
					continue
				}
				removed++
				name := svc.Key.ResourceName()
				delete(s.published, name)
				remove[resourcev3.EndpointType] = append(remove[resourcev3.EndpointType], name)
				remove[resourcev3.ClusterType] = append(remove[resourcev3.ClusterType], name)
				remove[resourcev3.RouteType] = append(remove[resourcev3.RouteType], name)
				remove[resourcev3.ListenerType] = append(remove[resourcev3.ListenerType], name, svc.Key.FQDNResourceName())
			}
		}
	}
	// A Cluster rendered for a topology change carries its current callers;
	// one whose callers alone changed is rendered only when they moved
	// enough from the published ones. None carries callers before the
	// warm-up ends; the first push after it looks at every Cluster.
	warm := !s.clock.Now().Before(s.callersFrom)
	if warm && !s.warmedUp {
		s.warmedUp = true
		s.markAllCallersDirty()
	}
	dirty, cur := s.takeCallers(clusters)
	if !warm {
		dirty, cur = nil, nil
	}
	republished := 0
	for name := range dirty {
		if clusters[name] != nil {
			continue
		}
		svc, ok := serviceOf(snap, name)
		if !ok || !callerZonesMoved(s.published[name], cur[name]) {
			continue
		}
		clusters[name] = svc
		republished++
	}
	for name, svc := range clusters {
		update[resourcev3.ClusterType][name] = translate.Cluster(svc, translate.WithCallerZones(fractions(cur[name])))
		if len(cur[name]) == 0 {
			delete(s.published, name)
		} else {
			s.published[name] = cur[name]
		}
	}
	for _, t := range typeURLs {
		if len(update[t]) == 0 && len(remove[t]) == 0 {
			continue
		}
		if err := s.caches[t].UpdateResources(update[t], remove[t]); err != nil {
			s.log.Error("updating xDS cache", "type", typeLabel(t), "error", err)
		}
		s.metrics.resources.WithLabelValues(typeLabel(t)).Set(float64(s.caches[t].NumResources()))
	}
	s.metrics.callerZonesUpdates.Add(float64(republished))
	if republished > 0 {
		s.log.Debug("republished Clusters for a change of callers", "clusters", republished)
	}
	if snap == prev {
		return
	}
	s.pushed.Store(snap)
	s.metrics.pushes.Inc()
	s.metrics.version.Set(float64(snap.Version()))
	if !snap.Changed().IsZero() {
		s.metrics.changeToPush.Observe(time.Since(snap.Changed()).Seconds())
	}
	s.log.Debug("pushed snapshot", "version", snap.Version(), "services", snap.Len(), "changed", changed, "removed", removed)
}

func endpointsEqual(a, b *topology.Service) bool {
	if len(a.Endpoints) != len(b.Endpoints) {
		return false
	}
	for i := range a.Endpoints {
		if !a.Endpoints[i].Equal(b.Endpoints[i]) {
			return false
		}
	}
	return true
}

// Ready reports whether the first snapshot has been pushed to the caches.
func (s *Server) Ready() bool { return s.pushed.Load() != nil }

// RegisterGRPC registers the aggregated (ADS) and the per-type CDS, EDS, LDS
// and RDS discovery services on gs. The caller serves and stops gs.
func (s *Server) RegisterGRPC(gs *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, s.xds)
	clusterservicepb.RegisterClusterDiscoveryServiceServer(gs, s.xds)
	endpointservicepb.RegisterEndpointDiscoveryServiceServer(gs, s.xds)
	listenerservicepb.RegisterListenerDiscoveryServiceServer(gs, s.xds)
	routeservicepb.RegisterRouteDiscoveryServiceServer(gs, s.xds)
}

// Serve serves xDS on lis with a gRPC server of its own until Close. It
// returns nil after Close.
func (s *Server) Serve(lis net.Listener) error {
	gs := grpc.NewServer(
		// Lenient: clients' keepalive pings are never a reason to close an
		// ADS stream.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	s.RegisterGRPC(gs)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		lis.Close()
		return nil
	}
	s.grpcSrvs = append(s.grpcSrvs, gs)
	s.mu.Unlock()
	err := gs.Serve(lis)
	if err == grpc.ErrServerStopped {
		return nil
	}
	return err
}

// AdminHandler serves /healthz (200 while the server runs), /readyz (200
// once the first snapshot has been pushed, 503 before) and /metrics.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.Ready() {
			http.Error(w, "no snapshot pushed yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	return mux
}

// Close stops the gRPC servers started by Serve (ending their streams), the
// debounce timer and the push goroutine, and waits for them.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
	}
	if s.warmupTimer != nil {
		s.warmupTimer.Stop()
	}
	srvs := s.grpcSrvs
	s.grpcSrvs = nil
	s.mu.Unlock()
	for _, gs := range srvs {
		gs.Stop()
	}
	s.cancel()
	s.wg.Wait()
}
