// Package balancer is Fairway's gRPC load balancer: one SubConn per endpoint
// address, straight to the pod, and a picker built from a strategy chain
// (see package strategy) that chooses an endpoint per request.
//
// Importing the package registers the balancer under Name ("fairway") and
// the built-in strategies. Its service config is
//
//	{"loadBalancingConfig": [{"fairway": {"strategy": [ ...chain... ]}}]}
//
// where an absent strategy selects strategy.DefaultChain. The resolver sets
// endpointattr.Info on each resolver.Endpoint, and the caller's zone and the
// service's callers per zone on the state's attributes; both reach the
// strategies in every strategy.Set.
//
// Pickers are immutable and rebuilt when endpoints, their connectivity or the
// strategies' time-dependent tables change; a tick goroutine (every
// TickInterval) runs the strategies' Tick. The pick path takes no lock and
// allocates nothing: per-endpoint atomics (in-flight, picks, outcomes by
// code) live in strategy.Endpoint values kept by address across pickers, and
// PickResult.Done records each request's outcome.
//
// Metrics are exposed by a custom Collector on a package registry, Metrics;
// Inspect and Targets return per-endpoint state for debugging.
package balancer

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"

	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy"
	_ "github.com/fairway-lb/fairway/client/strategy/all" // registers the built-in strategies
	"github.com/fairway-lb/fairway/client/strategy/zoneaffinity"
)

// Name is the balancer's name in service configs.
const Name = "fairway"

// DefaultTickInterval is how often strategies' Tick runs.
const DefaultTickInterval = 100 * time.Millisecond

func init() { balancer.Register(NewBuilder()) }

// Option configures a Builder.
type Option func(*builderOptions)

type builderOptions struct {
	clock  clock.WithTicker
	rand   func() uint64
	tick   time.Duration
	logger *slog.Logger
}

// WithClock sets the clock read by the balancer and its strategies.
func WithClock(c clock.WithTicker) Option { return func(o *builderOptions) { o.clock = c } }

// WithRand sets the random source used on the pick path (must be safe for
// concurrent use unless the test drives one goroutine).
func WithRand(r func() uint64) Option { return func(o *builderOptions) { o.rand = r } }

// WithTickInterval sets how often strategies' Tick runs.
func WithTickInterval(d time.Duration) Option { return func(o *builderOptions) { o.tick = d } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *builderOptions) { o.logger = l } }

// NewBuilder returns a balancer.Builder named Name. The package registers
// NewBuilder() at init; tests register one with options to replace it.
func NewBuilder(opts ...Option) balancer.Builder {
	o := builderOptions{clock: clock.RealClock{}, tick: DefaultTickInterval, logger: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	return &builder{opts: o}
}

type builder struct{ opts builderOptions }

func (b *builder) Name() string { return Name }

// Config is the parsed balancer config.
type Config struct {
	serviceconfig.LoadBalancingConfig
	Chain *strategy.Chain
}

type rawConfig struct {
	Strategy json.RawMessage `json:"strategy"`
}

// ParseConfigJSON parses the balancer's JSON config ({"strategy": [...]}),
// validating every strategy's config.
func ParseConfigJSON(raw []byte) (serviceconfig.LoadBalancingConfig, error) {
	var rc rawConfig
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &rc); err != nil {
			return nil, fmt.Errorf("fairway/balancer: invalid config: %w", err)
		}
	}
	chain, err := strategy.ParseChain(rc.Strategy)
	if err != nil {
		return nil, err
	}
	return &Config{Chain: chain}, nil
}

func (b *builder) ParseConfig(raw json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	return ParseConfigJSON(raw)
}

func (b *builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	target := opts.Target.Endpoint()
	if target == "" {
		target = opts.Target.String()
	}
	fb := &fairwayBalancer{
		cc:        cc,
		target:    target,
		opts:      b.opts,
		logger:    b.opts.logger.With("component", "fairway/balancer", "target", target),
		endpoints: map[string]*endpoint{},
		done:      make(chan struct{}),
	}
	fb.wg.Add(1)
	go fb.run()
	register(fb)
	return fb
}

// endpoint is the balancer's record of one address.
type endpoint struct {
	se      *strategy.Endpoint
	sc      balancer.SubConn
	state   connectivity.State
	lastErr error
}

type fairwayBalancer struct {
	// immutable
	cc     balancer.ClientConn
	target string
	opts   builderOptions
	logger *slog.Logger
	done   chan struct{}
	wg     sync.WaitGroup

	mu          sync.Mutex // guards everything below; Build/Tick run under it
	closed      bool
	cfg         *Config
	chain       strategy.Strategy
	chainOpts   strategy.BuildOptions
	endpoints   map[string]*endpoint // by address
	order       []string             // addresses in resolver order
	localZone   string
	callerZones map[string]float64 // read-only; shared with the sets
	seenFirst   bool
	resolverErr error
	published   bool         // a READY picker was published
	pastEjects  uint64       // ejections of endpoints since removed
	scratch     strategy.Set // slices reused by tick
}

func (b *fairwayBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	cfg, _ := s.BalancerConfig.(*Config)
	if cfg == nil {
		c, err := ParseConfigJSON(nil)
		if err != nil {
			return err
		}
		cfg = c.(*Config)
	}
	if b.cfg == nil || b.cfg.Chain.Raw != cfg.Chain.Raw {
		b.chain, b.chainOpts = cfg.Chain.Build(strategy.BuildOptions{Clock: b.opts.clock, Rand: b.opts.rand})
		for _, ep := range b.endpoints {
			ep.se.SetLatencyConfig(b.opts.clock, cfg.Chain.Needs.LatencyAlpha, cfg.Chain.Needs.FailurePenalty)
		}
		b.logger.Debug("strategy chain", "chain", cfg.Chain.Raw)
	}
	b.cfg = cfg
	b.resolverErr = nil
	b.localZone = endpointattr.LocalZone(s.ResolverState.Attributes)
	b.callerZones = endpointattr.CallerZones(s.ResolverState.Attributes)

	now := b.opts.clock.Now()
	initial := !b.seenFirst
	b.seenFirst = true
	seen := make(map[string]bool, len(s.ResolverState.Endpoints))
	b.order = b.order[:0]
	for _, rep := range s.ResolverState.Endpoints {
		if len(rep.Addresses) == 0 {
			continue
		}
		addr := rep.Addresses[0]
		if seen[addr.Addr] {
			continue
		}
		seen[addr.Addr] = true
		b.order = append(b.order, addr.Addr)
		info, ok := endpointattr.FromEndpoint(rep)
		if !ok {
			info = endpointattr.Info{Weight: 1}
		}
		if info.Weight == 0 {
			info.Weight = 1
		}
		if ep, ok := b.endpoints[addr.Addr]; ok {
			ep.se.Info = info
			continue
		}
		if err := b.addLocked(addr, info, now, initial); err != nil {
			b.logger.Warn("cannot create SubConn", "address", addr.Addr, "error", err)
		}
	}
	for a, ep := range b.endpoints {
		if !seen[a] {
			b.pastEjects += ep.se.Exclusions()
			ep.sc.Shutdown()
			delete(b.endpoints, a)
		}
	}
	b.updateLocked("resolver update")
	if len(b.endpoints) == 0 {
		return balancer.ErrBadResolverState
	}
	return nil
}

// addLocked creates the endpoint and its SubConn (b.mu held).
func (b *fairwayBalancer) addLocked(addr resolver.Address, info endpointattr.Info, now time.Time, initial bool) error {
	added := info.FirstSeen
	if added.IsZero() {
		added = now
	}
	se := strategy.NewEndpoint(addr.Addr, info, added)
	se.Initial = initial
	ep := &endpoint{se: se, state: connectivity.Idle}
	sc, err := b.cc.NewSubConn([]resolver.Address{addr}, balancer.NewSubConnOptions{
		StateListener: func(st balancer.SubConnState) { b.subConnState(ep, st) },
	})
	if err != nil {
		return err
	}
	ep.sc = sc
	se.SubConn = sc
	se.Done = se.FinishDone
	se.TimedDone = se.FinishTimed
	if b.chain != nil {
		se.SetLatencyConfig(b.opts.clock, b.cfg.Chain.Needs.LatencyAlpha, b.cfg.Chain.Needs.FailurePenalty)
	}
	b.endpoints[addr.Addr] = ep
	sc.Connect()
	return nil
}

func (b *fairwayBalancer) subConnState(ep *endpoint, st balancer.SubConnState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.endpoints[ep.se.Addr] != ep {
		return
	}
	ep.state = st.ConnectivityState
	if st.ConnectionError != nil {
		ep.lastErr = st.ConnectionError
	}
	if st.ConnectivityState == connectivity.Idle {
		ep.sc.Connect() // connect eagerly
	}
	b.updateLocked("subconn " + st.ConnectivityState.String())
}

func (b *fairwayBalancer) ResolverError(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.resolverErr = err
	if b.published {
		b.logger.Debug("resolver error; keeping the last picker", "error", err)
		return
	}
	b.updateLocked("resolver error")
}

func (b *fairwayBalancer) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {}

func (b *fairwayBalancer) ExitIdle() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ep := range b.endpoints {
		if ep.state == connectivity.Idle {
			ep.sc.Connect()
		}
	}
}

func (b *fairwayBalancer) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	close(b.done)
	for _, ep := range b.endpoints {
		ep.sc.Shutdown()
	}
	b.mu.Unlock()
	b.wg.Wait()
	unregister(b)
}

// run is the tick goroutine, owned by the balancer: Close stops and waits.
func (b *fairwayBalancer) run() {
	defer b.wg.Done()
	t := b.opts.clock.NewTicker(b.opts.tick)
	defer t.Stop()
	for {
		select {
		case <-b.done:
			return
		case <-t.C():
			b.tick()
		}
	}
}

func (b *fairwayBalancer) tick() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.chain == nil {
		return
	}
	now := b.opts.clock.Now()
	// Tick must not retain the set, so its slices are reused; a rebuild
	// gets fresh ones, which pickers may keep.
	set := b.fillSetLocked(now, b.scratch.All[:0], b.scratch.Cands[:0])
	b.scratch = set
	if b.cfg.Chain.Needs.LatencyAlpha > 0 {
		for _, e := range set.All {
			e.ArmSample(now)
		}
	}
	if b.chain.Tick(set) {
		b.publishLocked(b.setLocked(now), "tick")
	}
}

// setLocked returns the current candidate set in new slices (b.mu held).
func (b *fairwayBalancer) setLocked(now time.Time) strategy.Set {
	return b.fillSetLocked(now, make([]*strategy.Endpoint, 0, len(b.order)), nil)
}

// fillSetLocked returns the current candidate set, appending to all and
// cands (b.mu held).
func (b *fairwayBalancer) fillSetLocked(now time.Time, all []*strategy.Endpoint, cands []strategy.Candidate) strategy.Set {
	s := strategy.Set{LocalZone: b.localZone, CallerZones: b.callerZones, Now: now, All: all, Cands: cands}
	for _, a := range b.order {
		ep := b.endpoints[a]
		if ep == nil {
			continue
		}
		s.All = append(s.All, ep.se)
		if ep.state == connectivity.Ready && ep.se.Info.Health == endpointattr.Healthy {
			s.Cands = append(s.Cands, strategy.Candidate{E: ep.se, Weight: float64(ep.se.Info.Weight)})
		}
	}
	return s
}

// updateLocked recomputes the aggregate state and publishes a picker
// (b.mu held).
func (b *fairwayBalancer) updateLocked(why string) {
	if b.chain == nil {
		if b.resolverErr != nil {
			b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.TransientFailure,
				Picker: errPicker{status.Errorf(codes.Unavailable, "fairway/balancer: resolver: %v", b.resolverErr)}})
		}
		return
	}
	set := b.setLocked(b.opts.clock.Now())
	if len(set.Cands) > 0 {
		b.publishLocked(set, why)
		return
	}
	b.published = false
	var connecting bool
	var lastErr error
	healthy := 0
	for _, ep := range b.endpoints {
		if ep.se.Info.Health != endpointattr.Healthy {
			continue
		}
		healthy++
		switch ep.state {
		case connectivity.Idle, connectivity.Connecting:
			connecting = true
		case connectivity.TransientFailure:
			if ep.lastErr != nil {
				lastErr = ep.lastErr
			}
		}
	}
	var err error
	switch {
	case connecting:
		b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.Connecting, Picker: errPicker{balancer.ErrNoSubConnAvailable}})
		return
	case b.resolverErr != nil && len(b.endpoints) == 0:
		err = fmt.Errorf("fairway/balancer: resolver: %w", b.resolverErr)
	case len(b.endpoints) == 0:
		err = errors.New("fairway/balancer: no endpoints")
	case healthy == 0:
		err = fmt.Errorf("fairway/balancer: none of %d endpoints is healthy", len(b.endpoints))
	case lastErr != nil:
		err = fmt.Errorf("fairway/balancer: all %d healthy endpoints failed to connect, last error: %w", healthy, lastErr)
	default:
		err = fmt.Errorf("fairway/balancer: no endpoint is ready")
	}
	b.logger.Debug("no candidates", "reason", why, "error", err)
	b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.TransientFailure, Picker: errPicker{status.Error(codes.Unavailable, err.Error())}})
}

// publishLocked builds and publishes a READY picker over set (b.mu held).
func (b *fairwayBalancer) publishLocked(set strategy.Set, why string) {
	if len(set.Cands) == 0 {
		b.updateLocked(why)
		return
	}
	p := newPicker(b.chain.Build(set))
	b.published = true
	b.logger.Debug("picker rebuilt", "reason", why, "endpoints", len(set.All), "candidates", len(set.Cands),
		"local_zone", set.LocalZone, "spill_fraction", b.chainOpts.Gauges.Value(zoneaffinity.SpillFraction))
	b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.Ready, Picker: p})
}

type errPicker struct{ err error }

func (p errPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{}, p.err
}
