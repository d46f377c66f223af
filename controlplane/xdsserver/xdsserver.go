// Package xdsserver serves Fairway's topology over xDS: it implements
// topology.Sink, translates each snapshot with package translate and streams
// the resources to Envoy and proxyless gRPC clients over ADS, both
// State-of-the-World and Delta, on one gRPC server.
//
// Every resource type (Cluster, ClusterLoadAssignment, Listener,
// RouteConfiguration) lives in its own go-control-plane LinearCache (per
// view, see Visibility below), so a client subscribing to one service among many gets its answer
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
// nothing is sent for it); the stream keeps serving its other names. Each
// stream logs one info line, at its first request naming unknown resources,
// with their count and a few examples (a debug line at its close counts
// those that came later), and counts each name once in
// fairway_xds_unknown_resource_requests_total, remembering at most 100 of
// them (limits.go). The check starts with the first push (before it every
// name is unknown).
//
// Limits (limits.go): streams per gRPC connection (HTTP/2
// MAX_CONCURRENT_STREAMS, enforced by the transport), streams per node id
// and resource names per stream (a request past them ends its stream with
// RESOURCE_EXHAUSTED, counted in fairway_xds_refused_streams_total{reason}). A NACK (a request carrying error_detail) leaves the stream
// without an answer for the type until the resources it rejected change, as
// istiod does (nack.go): go-control-plane alone answers a SotW NACK of a
// stream's first response at once with the same resources, which the client
// rejects again. Each rejected response counts once per stream in
// fairway_xds_nacks_total and logs one warn line with the client's
// error_detail.
//
// Caller zones: the server counts, per Cluster name, the nodes (by node id:
// one vote however many streams) with a stream subscribed to it by name
// whose node states a zone (node.locality.zone of the first request
// carrying a node) and declares wire.CallerZonesFeature, by zone (type
// callerZones). A node's zone is the one of its first counted stream, kept
// while any of its streams is open; only zones that endpoints of the pushed
// topology are in count. A SotW Cluster request's resource_names replace a
// stream's set, a delta request subscribes and unsubscribes; the wildcard
// counts for no Cluster; a closed stream counts for nothing. Each Cluster
// carries the fractions in filter_metadata["fairway.io"]["caller_zones"]
// (see translate.WithCallerZones). A change of callers marks the Cluster and
// rides the debounced push; the push re-renders a Cluster whose callers
// alone changed only when a zone appeared or disappeared or a fraction moved
// by CallerZonesMinMove or more from the published one, at most once per
// WithCallerZonesInterval (a later change waits for the interval's end), and
// updates just that Cluster in its cache. A push of callers alone counts neither in
// fairway_xds_pushes_total nor in the snapshot version;
// fairway_xds_caller_zones_updates_total counts the Clusters it re-renders
// and fairway_xds_caller_streams{zone} the open streams counted for a zone
// (a zone's series goes when its last stream does; zones no endpoint is in
// share the series "(other)").
//
// Limits and liveness (connlimits.go, health.go): a response is at most
// WithMaxSendMsgSize bytes (default wire.MaxMessageSize, what a Fairway
// client accepts), and one from WithResponseSizeWarning (default 3 MiB, near
// gRPC's stock 4 MiB receive limit) on is counted in
// fairway_xds_large_responses_total and logged; every size goes into
// fairway_xds_response_bytes. A client connection lives
// DefaultMaxConnectionAge (then its client reconnects, to any replica) and is
// pinged when silent; clients may ping every KeepaliveMinTime. Serve uses
// GRPCServerOptions, which a caller of RegisterGRPC passes on. /healthz fails
// when a push has run, or been due, for longer than WithPushTimeout.
//
// Visibility (views.go): a stream whose context carries an auth.Identity
// (put there by the authentication in front of the server) sees only the
// services visible to its namespace (topology.Service.Visible), by name and
// by wildcard, every type; a name it may not see is answered as an unknown
// one. A stream without identity sees everything (WithRequireIdentity
// refuses it instead). Each namespace with a stream open reads caches of its
// own (a view, counted in fairway_xds_namespace_views) that a push fills
// with the resources it rendered once; the streams without identity read
// the server's caches, at the same cost as without visibility. A stream
// counts toward caller_zones only for the Clusters it sees. /debug/clients
// shows each stream's identity and /debug/config_dump?namespace=NS what NS
// sees.
//
// A push (push.go) reads as its steps: diff the last pushed snapshot with
// the new one, let callerZones add the Clusters whose callers moved, render
// the resources, update the caches (the namespace views' too). Rendering
// isolates each service: one that fails topology.Service.Validate, or whose translation panics, is left
// out of the push whole (its clients keep what they had), logged at Error
// and counted in fairway_xds_render_failures_total once per version of it,
// and rendered whole again when it changes; the other services are pushed.
// The go-control-plane callbacks are in callbacks.go, every collector in
// metrics.go, /debug/config_dump and /debug/clients (ConfigDump, Clients) in
// debug.go.
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
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"k8s.io/utils/clock"

	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/internal/loglimit"
)

// DefaultDebounce is the default debounce window.
const DefaultDebounce = 20 * time.Millisecond

// The resource types the server serves, in the order a push updates them
// (what a resource points to is in the caches before the resource).
var typeURLs = []string{resourcev3.EndpointType, resourcev3.ClusterType, resourcev3.RouteType, resourcev3.ListenerType}

// Option configures a Server.
type Option func(*options)

type options struct {
	debounce time.Duration
	logger   *slog.Logger
	reg      prometheus.Registerer
	regSet   bool // WithRegisterer was given
	clock    clock.WithDelayedExecution
	warmup   time.Duration
	limits   limits

	callerZonesInterval time.Duration
	pushTimeout         time.Duration
	requireIdentity     bool
	pushHook            func() // tests: called by the push goroutine before each push
}

// WithDebounce sets the debounce window (default DefaultDebounce). Zero or
// less pushes every Update at once.
func WithDebounce(d time.Duration) Option { return func(o *options) { o.debounce = d } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithRegisterer registers the server's metrics with r (nil: not
// registered), reusing those already registered there, and serves r on
// /metrics when it is also a prometheus.Gatherer (as a *prometheus.Registry
// is; otherwise AdminHandler has no /metrics). Without this option the
// server creates its own registry with the Go and process collectors.
func WithRegisterer(r prometheus.Registerer) Option {
	return func(o *options) { o.reg, o.regSet = r, true }
}

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

// WithRequireIdentity makes the server serve only streams whose context
// carries an auth.Identity (set by the authentication in front of it): a
// stream without one ends with UNAUTHENTICATED at its opening, so that only
// authenticated streams see anything and count toward caller_zones. Off by
// default (authentication off: every stream sees every service). Set it
// whenever authentication is on.
func WithRequireIdentity(on bool) Option { return func(o *options) { o.requireIdentity = on } }

// Server is an xDS server fed with topology snapshots. Create it with New,
// feed it with Update, serve it with Serve or RegisterGRPC, and release it
// with Close.
type Server struct {
	// immutable
	log      *slog.Logger
	debounce time.Duration
	clock    clock.WithDelayedExecution
	gatherer prometheus.Gatherer // served on /metrics; nil: none
	metrics  *metrics
	limits   limits
	refusals *loglimit.Limit[string] // refusals by reason, warned every refusalLogEvery
	nacks    *nackLog
	callers  *callerZones
	caches   map[string]*cachev3.LinearCache // by type URL: the all view's (views.go)
	views    *views
	// requireIdentity: streams without an identity are refused.
	requireIdentity bool
	xds             serverv3.Server
	ctx             context.Context
	cancel          context.CancelFunc
	kick            chan struct{} // buffered(1): a push is due
	wg              sync.WaitGroup

	warmupTimer clock.Timer // set by New; nil without a warm-up; stopped by Close

	pushTimeout time.Duration
	pushHook    func()

	// pushed is the last snapshot in the caches; nil before the first push.
	// Written only by the push goroutine.
	pushed atomic.Pointer[topology.Snapshot]
	// broken holds the services of pushed that failed to render, by key;
	// owned by the push goroutine.
	broken map[topology.ServiceKey]*topology.Service

	// Lock order: mu before streamsMu before a stream's streamSent lock (a
	// leaf); neither mu nor streamsMu is held while calling into the
	// caches, into callers or into nacks (whose locks are leaves).
	// go-control-plane calls the caches (through nackCache, which holds no
	// lock) and the callbacks from stream goroutines without any of these
	// held.
	mu        sync.Mutex
	latest    *topology.Snapshot // guarded by mu
	scheduled bool               // guarded by mu: a push is due for latest
	timer     clock.Timer        // guarded by mu
	closed    bool               // guarded by mu
	grpcSrvs  []*grpc.Server     // guarded by mu: servers started by Serve
	// dueSince is when the push now due was scheduled, pushingSince when
	// the running push started (zero: none); guarded by mu. /healthz
	// reads them (pushStuck).
	dueSince     time.Time
	pushingSince time.Time

	streamsMu   sync.Mutex
	streams     map[streamID]*streamState // guarded by streamsMu
	nodeStreams map[string]int            // guarded by streamsMu: counted streams by node id
	// sent is streamID → *streamSent, each open stream's (streams' too),
	// read without streamsMu on every response (debug.go).
	sent sync.Map
}

// New creates a Server and starts its push goroutine.
func New(opts ...Option) *Server {
	o := options{debounce: DefaultDebounce, limits: defaultLimits(), callerZonesInterval: DefaultCallerZonesInterval,
		pushTimeout: DefaultPushTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if o.clock == nil {
		o.clock = clock.RealClock{}
	}
	if !o.regSet {
		r := prometheus.NewRegistry()
		r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		o.reg = r
	}
	log := o.logger.With("component", "fairway/xdsserver")
	m := newMetrics(o.reg, log)
	gatherer, _ := o.reg.(prometheus.Gatherer)
	s := &Server{
		log:      log,
		debounce: o.debounce,
		clock:    o.clock,
		gatherer: gatherer,
		metrics:  m,
		limits:   o.limits,
		refusals: loglimit.New[string](refusalLogEvery),
		nacks:    newNACKLog(log, o.clock),
		kick:     make(chan struct{}, 1),
		streams:  make(map[streamID]*streamState),

		nodeStreams: make(map[string]int),
		pushTimeout: o.pushTimeout,
		pushHook:    o.pushHook,
		broken:      make(map[topology.ServiceKey]*topology.Service),

		requireIdentity: o.requireIdentity,
	}
	s.callers = newCallerZones(callerZonesConfig{gauge: m.callerStreams, from: o.clock.Now().Add(o.warmup),
		interval: o.callerZonesInterval, clock: o.clock, kick: s.kickPush})
	all := newView("", true)
	s.caches = all.caches
	for _, t := range typeURLs {
		s.metrics.resources.WithLabelValues(typeLabel(t)).Set(0)
	}
	s.views = newViews(all, o.clock, m.views)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	cb := s.callbacks()
	newResponseSizes(s.limits, m, log, o.clock).callbacks(&cb, s.responded)
	s.xds = serverv3.NewServer(s.ctx, nackCache{viewCache{s.views}}, cb)
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
	s.dueSince = s.clock.Now()
	if s.debounce <= 0 {
		s.kickPush()
		return
	}
	s.timer = s.clock.AfterFunc(s.debounce, s.kickPush)
}

// callersChanged schedules a push for a change of callers. Called from a
// stream's goroutine without streamsMu held.
func (s *Server) callersChanged() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.scheduleLocked()
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
		s.pushStartedLocked(s.clock.Now())
		s.mu.Unlock()
		if s.pushHook != nil {
			s.pushHook()
		}
		if snap != nil {
			s.push(snap)
		}
		s.mu.Lock()
		s.pushingSince = time.Time{}
		s.mu.Unlock()
	}
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
	gs := grpc.NewServer(s.GRPCServerOptions()...)
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

// AdminHandler serves /healthz (200 while the push goroutine keeps up, 503
// when a push has run or been due for longer than the push timeout, see
// WithPushTimeout), /readyz (200 once the first snapshot has been pushed,
// 503 before), /metrics, and as JSON /debug/config_dump (ConfigDump: the
// resources served, ?type= and ?name= filter them, ?namespace= keeps what
// a client of that namespace sees: ConfigDumpFor) and /debug/clients
// (Clients: the open streams, their identities, subscriptions, ACKs and
// NACKs).
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if why := s.pushStuck(); why != "" {
			http.Error(w, "push loop stuck: "+why, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.Ready() {
			http.Error(w, "no snapshot pushed yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	if s.gatherer != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}))
	}
	s.debugHandlers(mux)
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
	s.callers.stop()
	s.nacks.close()
}
