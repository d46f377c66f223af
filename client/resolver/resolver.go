// Package resolver is the gRPC resolver of the "fairway" scheme: for a target
// fairway:///NAME.NAMESPACE:PORT (or NAME.NAMESPACE.svc.cluster.local:PORT) it
// watches the service's Cluster and ClusterLoadAssignment through an
// xdsclient.Client and pushes a resolver.State with one resolver.Endpoint per
// LbEndpoint, each carrying endpointattr.Info (zone, hostname, weight, labels,
// health, first-seen time), the caller's zone and the Cluster's callers per
// zone on the state's attributes (endpointattr.SetLocalZone,
// endpointattr.SetCallerZones), and a service config selecting the "fairway"
// balancer with the strategy chain served in the Cluster:
//
//	{"loadBalancingConfig": [{"fairway": {"strategy": [ ...chain... ]}}]}
//
// (no "strategy" key when the Cluster carries none: the balancer's default
// composition applies). A strategy override given with WithStrategy replaces
// the Cluster's chain.
//
// Nothing is pushed until both the Cluster and the ClusterLoadAssignment have
// arrived once. Afterwards the resolver keeps the last state when the control
// plane is away or sends something invalid (the xdsclient keeps the last good
// resources); errors are reported to the channel only while nothing has been
// pushed yet, so that RPCs fail fast with a clear reason instead of waiting.
//
// This package does not register itself: package client (the adoption
// surface) registers a Builder for the scheme, or installs one per channel.
package resolver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"k8s.io/utils/clock"

	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/xdsclient"
	"github.com/fairway-lb/fairway/wire"
)

// Scheme is the target scheme: fairway:///NAME.NAMESPACE:PORT.
const Scheme = "fairway"

// BalancerName is the balancer the service config selects (registered by
// package client/balancer).
const BalancerName = "fairway"

// XDSClient is the part of *xdsclient.Client the resolver uses. Its methods
// are called from Build and Close (any goroutine); watchers are called back
// as xdsclient documents.
type XDSClient interface {
	WatchCluster(name string, w xdsclient.ClusterWatcher) (cancel func())
	WatchEndpoints(name string, w xdsclient.EndpointsWatcher) (cancel func())
}

// ClientSource gives a new resolver its xDS client and a release function the
// resolver calls once, when it closes. It is called from Build, once per
// resolver; it may block briefly (e.g. while a shared client is created).
type ClientSource func() (c XDSClient, release func(), err error)

type options struct {
	zone     string
	strategy json.RawMessage
	clock    clock.PassiveClock
	logger   *slog.Logger
}

// Option configures a Builder.
type Option func(*options)

// WithZone sets the caller's zone, passed to the balancer ("" = unknown).
func WithZone(zone string) Option { return func(o *options) { o.zone = zone } }

// WithStrategy overrides the strategy chain served in the Cluster (a JSON
// array of the shape wire.ParseChain checks; Build fails on another shape).
// nil or empty: use the Cluster's.
func WithStrategy(chain json.RawMessage) Option { return func(o *options) { o.strategy = chain } }

// WithClock sets the clock that stamps endpoints' FirstSeen (default real).
func WithClock(c clock.PassiveClock) Option { return func(o *options) { o.clock = c } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// NewBuilder returns a resolver.Builder for Scheme whose resolvers get their
// xDS client from src.
func NewBuilder(src ClientSource, opts ...Option) resolver.Builder {
	o := options{clock: clock.RealClock{}, logger: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	return &builder{src: src, opts: o}
}

type builder struct {
	src  ClientSource
	opts options
}

func (b *builder) Scheme() string { return Scheme }

// ResourceName returns the xDS resource name a fairway target names:
// "NAME.NAMESPACE:PORT" for both the short and the FQDN form.
func ResourceName(t resolver.Target) (string, error) {
	key, err := wire.ParseResourceName(t.Endpoint())
	if err != nil {
		return "", fmt.Errorf("target %q: %w", t.String(), err)
	}
	return key.ResourceName(), nil
}

func (b *builder) Build(t resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	name, err := ResourceName(t)
	if err != nil {
		return nil, err
	}
	if len(b.opts.strategy) > 0 {
		if _, err := wire.ParseChain(b.opts.strategy); err != nil {
			return nil, fmt.Errorf("strategy override: %w", err)
		}
	}
	xc, release, err := b.src()
	if err != nil {
		return nil, fmt.Errorf("xDS client for %s: %w", name, err)
	}
	r := &fairwayResolver{
		cc:        cc,
		name:      name,
		opts:      b.opts,
		log:       b.opts.logger.With("component", "fairway/resolver", "target", name),
		release:   release,
		firstSeen: map[string]time.Time{},
	}
	r.mu.Lock() // the watches may call back before they are stored
	defer r.mu.Unlock()
	r.cancelCluster = xc.WatchCluster(name, r)
	r.cancelEndpoints = xc.WatchEndpoints(name, r)
	return r, nil
}

type fairwayResolver struct {
	cc      resolver.ClientConn
	name    string
	opts    options
	log     *slog.Logger
	release func()

	mu              sync.Mutex
	cancelCluster   func()                     // guarded by mu
	cancelEndpoints func()                     // guarded by mu
	cluster         *xdsclient.Cluster         // last Cluster; guarded by mu
	endpoints       *xdsclient.Endpoints       // last assignment; guarded by mu
	firstSeen       map[string]time.Time       // address → first sight; guarded by mu
	scChain         string                     // chain of sc; guarded by mu
	sc              *serviceconfig.ParseResult // parsed once per chain; guarded by mu
	pushed          bool                       // a state was pushed; guarded by mu
	closed          bool                       // guarded by mu
}

// OnCluster implements xdsclient.ClusterWatcher.
func (r *fairwayResolver) OnCluster(c xdsclient.Cluster) {
	r.mu.Lock()
	if c.CallerZones == nil && r.cluster != nil {
		// Unknown is not "none": a restarted control plane publishes no
		// caller zones until its clients are back; keep the last ones.
		c.CallerZones = r.cluster.CallerZones
	}
	r.cluster = &c
	r.log.Debug("cluster", "version", c.Version, "strategy", string(c.Strategy), "caller_zones", c.CallerZones)
	r.pushLocked()
}

// OnEndpoints implements xdsclient.EndpointsWatcher.
func (r *fairwayResolver) OnEndpoints(e xdsclient.Endpoints) {
	r.mu.Lock()
	r.endpoints = &e
	r.log.Debug("endpoints", "version", e.Version, "count", len(e.Endpoints))
	r.pushLocked()
}

// OnError implements xdsclient.ClusterWatcher and EndpointsWatcher.
func (r *fairwayResolver) OnError(err error) {
	r.mu.Lock()
	closed, pushed := r.closed, r.pushed
	r.mu.Unlock()
	if closed {
		return
	}
	if pushed {
		// Keep serving the last state; the balancer keeps its endpoints.
		level := slog.LevelDebug
		if !errors.Is(err, xdsclient.ErrDisconnected) {
			level = slog.LevelWarn
		}
		r.log.Log(context.Background(), level, "keeping the last endpoints", "error", err)
		return
	}
	r.cc.ReportError(fmt.Errorf("%s: %w", r.name, err))
}

// pushLocked builds the state and pushes it once both resources are known.
// r.mu must be held; it is released before calling the ClientConn.
func (r *fairwayResolver) pushLocked() {
	if r.closed || r.cluster == nil || r.endpoints == nil {
		r.mu.Unlock()
		return
	}
	state := r.stateLocked()
	r.pushed = true
	r.mu.Unlock()
	if err := r.cc.UpdateState(state); err != nil {
		r.log.Debug("channel rejected the state", "error", err)
	}
}

// stateLocked builds the resolver state. r.mu must be held.
func (r *fairwayResolver) stateLocked() resolver.State {
	now := r.opts.clock.Now()
	seen := make(map[string]time.Time, len(r.endpoints.Endpoints))
	eps := make([]resolver.Endpoint, 0, len(r.endpoints.Endpoints))
	for _, e := range r.endpoints.Endpoints {
		first, ok := r.firstSeen[e.Address]
		if !ok {
			first = now
		}
		seen[e.Address] = first
		ep := resolver.Endpoint{Addresses: []resolver.Address{{Addr: e.Address}}}
		eps = append(eps, endpointattr.Set(ep, endpointattr.Info{
			Zone:      e.Zone,
			Hostname:  e.Hostname,
			Weight:    max(e.Weight, 1),
			Labels:    e.Labels,
			Health:    health(e.Health),
			FirstSeen: first,
		}))
	}
	r.firstSeen = seen // forget addresses that left: a new pod reusing one is new
	chain := r.opts.strategy
	if len(chain) == 0 {
		chain = r.cluster.Strategy
	}
	if r.sc == nil || r.scChain != string(chain) {
		r.sc, r.scChain = r.cc.ParseServiceConfig(ServiceConfigJSON(chain)), string(chain)
		if r.sc.Err != nil {
			r.log.Warn("service config rejected", "strategy", string(chain), "error", r.sc.Err)
		}
	}
	return resolver.State{
		Endpoints:     eps,
		ServiceConfig: r.sc,
		Attributes:    endpointattr.SetCallerZones(endpointattr.SetLocalZone(nil, r.opts.zone), r.cluster.CallerZones),
	}
}

// ServiceConfigJSON is the service config selecting the fairway balancer with
// chain (a JSON array; nil or empty: the balancer's default composition).
func ServiceConfigJSON(chain json.RawMessage) string {
	cfg := map[string]json.RawMessage{}
	if len(chain) > 0 {
		cfg["strategy"] = chain
	}
	b, _ := json.Marshal(map[string]any{"loadBalancingConfig": []any{map[string]any{BalancerName: cfg}}})
	return string(b)
}

// health maps the xDS health status: HEALTHY and UNKNOWN take traffic,
// DRAINING is draining, anything else is unhealthy.
func health(h corepb.HealthStatus) endpointattr.Health {
	switch h {
	case corepb.HealthStatus_HEALTHY, corepb.HealthStatus_UNKNOWN:
		return endpointattr.Healthy
	case corepb.HealthStatus_DRAINING:
		return endpointattr.Draining
	default:
		return endpointattr.Unhealthy
	}
}

// ResolveNow is a no-op: updates are streamed.
func (r *fairwayResolver) ResolveNow(resolver.ResolveNowOptions) {}

// Close stops the watches and releases the xDS client.
func (r *fairwayResolver) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	cancels := []func(){r.cancelCluster, r.cancelEndpoints}
	r.mu.Unlock()
	for _, c := range cancels {
		c()
	}
	r.release()
}
