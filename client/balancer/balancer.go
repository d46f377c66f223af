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
// The balancer keeps the SubConns and their connectivity; a strategy.Pool
// owns the endpoints (kept by address across updates, with their
// per-endpoint atomics: in-flight, picks, outcomes by code, latency), builds
// the candidate sets and runs the chain. Pickers are immutable and rebuilt
// when endpoints, their connectivity or the strategies' time-dependent
// tables change; a tick goroutine (every TickInterval) runs the pool's
// Tick. The pick path (picker.go) takes no lock and allocates nothing: the
// pool's picker returns the endpoint and the done function that records the
// request's outcome, which becomes PickResult.Done.
//
// Collector returns the client's metrics for a Prometheus registry (the
// client package registers it through its WithRegisterer option); Inspect
// and Targets return per-endpoint state for debugging.
package balancer

import (
	"context"
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
		cc:     cc,
		target: target,
		opts:   b.opts,
		logger: b.opts.logger.With("component", "fairway/balancer", "target", target),
		done:   make(chan struct{}),
		probes: make(chan *strategy.Endpoint, probeQueue),
		conns:  map[*strategy.Endpoint]*conn{},
	}
	fb.ctx, fb.cancel = context.WithCancel(context.Background())
	fb.pool = strategy.NewPool(strategy.BuildOptions{Clock: b.opts.clock, Rand: b.opts.rand, Probe: fb.probe})
	fb.wg.Add(2)
	go fb.run()
	go fb.runProbes()
	register(fb)
	return fb
}

// conn is the balancer's connection to one endpoint of the pool.
type conn struct {
	se      *strategy.Endpoint
	sc      balancer.SubConn
	state   connectivity.State
	lastErr error
	// The out-of-band load report stream (load.go): its stop function
	// (nil: none) and interval.
	oobStop     func()
	oobInterval time.Duration
}

type fairwayBalancer struct {
	// immutable
	cc     balancer.ClientConn
	target string
	opts   builderOptions
	logger *slog.Logger
	done   chan struct{}
	ctx    context.Context // canceled by Close: probes under way
	cancel context.CancelFunc
	probes chan *strategy.Endpoint // probe requests from pickers (load.go)
	wg     sync.WaitGroup
	probeStats

	mu          sync.Mutex // guards everything below; the pool's methods run under it
	closed      bool
	pool        *strategy.Pool
	conns       map[*strategy.Endpoint]*conn // the pool's endpoints with a SubConn
	resolverErr error
	published   bool    // a READY picker was published
	past        retired // counts of endpoints since removed (metrics.go)
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
	if b.pool.SetChain(cfg.Chain) {
		b.logger.Debug("strategy chain", "chain", cfg.Chain.Raw)
		for _, c := range b.conns {
			b.oobLocked(c)
		}
	}
	b.resolverErr = nil
	members := make([]strategy.Member, 0, len(s.ResolverState.Endpoints))
	for _, rep := range s.ResolverState.Endpoints {
		if len(rep.Addresses) == 0 {
			continue
		}
		info, _ := endpointattr.FromEndpoint(rep) // none: weight 1, healthy
		members = append(members, strategy.Member{Addr: rep.Addresses[0].Addr, Info: info})
	}
	added, removed := b.pool.Update(members,
		endpointattr.LocalZone(s.ResolverState.Attributes), endpointattr.CallerZones(s.ResolverState.Attributes))
	for _, se := range removed {
		b.past.add(se)
		if c := b.conns[se]; c.oobStop != nil {
			c.oobStop()
		}
		b.conns[se].sc.Shutdown()
		delete(b.conns, se)
	}
	for _, se := range added {
		if err := b.connectLocked(se); err != nil {
			b.logger.Warn("cannot create SubConn", "address", se.Addr, "error", err)
			b.pool.Drop(se)
		}
	}
	b.updateLocked("resolver update")
	if len(b.conns) == 0 {
		return balancer.ErrBadResolverState
	}
	return nil
}

// connectLocked creates se's SubConn and connects it (b.mu held).
func (b *fairwayBalancer) connectLocked(se *strategy.Endpoint) error {
	c := &conn{se: se, state: connectivity.Idle}
	sc, err := b.cc.NewSubConn([]resolver.Address{{Addr: se.Addr}}, balancer.NewSubConnOptions{
		StateListener: func(st balancer.SubConnState) { b.subConnState(c, st) },
	})
	if err != nil {
		return err
	}
	c.sc = sc
	se.SubConn = sc
	b.conns[se] = c
	sc.Connect()
	return nil
}

func (b *fairwayBalancer) subConnState(c *conn, st balancer.SubConnState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.conns[c.se] != c {
		return
	}
	c.state = st.ConnectivityState
	if st.ConnectionError != nil {
		c.lastErr = st.ConnectionError
	}
	b.pool.SetConnected(c.se, c.state == connectivity.Ready)
	b.oobLocked(c)
	if st.ConnectivityState == connectivity.Idle {
		c.sc.Connect() // connect eagerly
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
	for _, c := range b.conns {
		if c.state == connectivity.Idle {
			c.sc.Connect()
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
	b.cancel()
	for _, c := range b.conns {
		b.oobLocked(c)
		c.sc.Shutdown()
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
	if b.closed {
		return
	}
	if b.pool.Tick() {
		b.updateLocked("tick")
	}
}

// updateLocked publishes a READY picker when the pool has candidates, else
// the aggregate state with a clear error (b.mu held).
func (b *fairwayBalancer) updateLocked(why string) {
	if b.pool.Chain() == nil {
		if b.resolverErr != nil {
			b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.TransientFailure,
				Picker: errPicker{status.Errorf(codes.Unavailable, "fairway/balancer: resolver: %v", b.resolverErr)}})
		}
		return
	}
	if b.publishLocked(why) {
		return
	}
	b.published = false
	state, err := b.noCandidateLocked()
	if state == connectivity.Connecting {
		b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.Connecting, Picker: errPicker{balancer.ErrNoSubConnAvailable}})
		return
	}
	b.logger.Debug("no candidates", "reason", why, "error", err)
	b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.TransientFailure, Picker: errPicker{status.Error(codes.Unavailable, err.Error())}})
}

// noCandidateLocked says why the pool has no candidate: CONNECTING while
// some healthy endpoint connects, else TRANSIENT_FAILURE with the reason
// (b.mu held).
func (b *fairwayBalancer) noCandidateLocked() (connectivity.State, error) {
	var connecting bool
	var lastErr error
	healthy := 0
	for _, c := range b.conns {
		if c.se.Info.Health != endpointattr.Healthy {
			continue
		}
		healthy++
		switch c.state {
		case connectivity.Idle, connectivity.Connecting:
			connecting = true
		case connectivity.TransientFailure:
			if c.lastErr != nil {
				lastErr = c.lastErr
			}
		}
	}
	switch {
	case connecting:
		return connectivity.Connecting, nil
	case b.resolverErr != nil && len(b.conns) == 0:
		return connectivity.TransientFailure, fmt.Errorf("fairway/balancer: resolver: %w", b.resolverErr)
	case len(b.conns) == 0:
		return connectivity.TransientFailure, errors.New("fairway/balancer: no endpoints")
	case healthy == 0:
		return connectivity.TransientFailure, fmt.Errorf("fairway/balancer: none of %d endpoints is healthy", len(b.conns))
	case lastErr != nil:
		return connectivity.TransientFailure, fmt.Errorf("fairway/balancer: all %d healthy endpoints failed to connect, last error: %w", healthy, lastErr)
	}
	return connectivity.TransientFailure, fmt.Errorf("fairway/balancer: no endpoint is ready")
}

// publishLocked builds and publishes a READY picker over the pool's
// candidates, and reports false, publishing nothing, when there are none
// (b.mu held).
func (b *fairwayBalancer) publishLocked(why string) bool {
	pp, set, ok := b.pool.Build()
	if !ok {
		return false
	}
	b.published = true
	b.logger.Debug("picker rebuilt", "reason", why, "endpoints", len(set.All), "candidates", len(set.Cands),
		"local_zone", set.LocalZone, "spill_fraction", b.pool.Gauges().Value(zoneaffinity.SpillFraction))
	b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.Ready, Picker: newPicker(pp)})
	return true
}

type errPicker struct{ err error }

func (p errPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{}, p.err
}
