// Package strategy defines how Fairway picks an endpoint for each request:
// the small Strategy/Picker interfaces, the per-endpoint live state shared by
// the balancer and the strategies (Endpoint), the Pool that owns a channel's
// endpoints and drives a chain over them, and a registry of strategies by
// name.
//
// A strategy is one package under client/strategy/ that calls Register from
// its init function and keeps its per-endpoint state to itself; nothing else
// has to change for it to be usable in a strategy chain. A chain is a JSON
// array of single-key objects, outermost first, whose last element picks:
//
//	[{"zone_affinity": {"spill_margin": 0.2}}, {"slow_start": {}}, {"outlier": {}}, {"p2c": {}}]
//
// Wrappers (zone_affinity, slow_start, outlier, shard) shape the candidate set
// their inner strategy sees; terminals (p2c, round_robin, weighted) choose.
// Time-dependent work happens in Tick, off the pick path; Pick never locks,
// allocates or reads the clock. Package strategy/all registers every
// built-in strategy.
//
// The files: endpoint.go (an endpoint's counters and the cross-strategy
// contracts), latency.go (latency sampling), chain.go (registry and
// chains), config.go (helpers for ParseConfig), pool.go (the owner of
// endpoints) and this one (the interfaces).
//
// Adding a strategy takes one package and nothing else:
//
//	package firsthealthy
//
//	const Name = "first_healthy"
//
//	type Config struct{}
//
//	func init() { strategy.Register(builder{}) }
//
//	type builder struct{}
//
//	func (builder) Name() string                { return Name }
//	func (builder) Position() strategy.Position { return strategy.Terminal }
//	func (builder) ParseConfig(raw json.RawMessage) (any, error) {
//		cfg := &Config{}
//		return cfg, strategy.DecodeConfig(Name, raw, cfg)
//	}
//	func (builder) Build(any, strategy.Strategy, strategy.BuildOptions) strategy.Strategy { ... }
//
// An application imports it (import _ ".../firsthealthy") and names it in a
// chain; Example (customStrategy) shows a wrapper and a terminal of an
// application's own, and client/balancer's tests register such a strategy
// from a test file.
package strategy

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"
)

// ErrNoEndpoint is returned by a Picker with no candidate to offer. The
// balancer turns it into an UNAVAILABLE status.
var ErrNoEndpoint = errors.New("fairway/strategy: no endpoint available")

// NoEndpoint is the Picker of a terminal strategy with no candidate: every
// Pick returns ErrNoEndpoint.
var NoEndpoint Picker = PickerFunc(func(context.Context) (*Endpoint, error) { return nil, ErrNoEndpoint })

// Candidate is an endpoint offered to a strategy's Build with the weight it
// should carry there (Info.Weight, possibly scaled by an outer strategy).
type Candidate struct {
	E      *Endpoint
	Weight float64
}

// Set is what Build and Tick receive.
type Set struct {
	// Cands are the endpoints that may be picked: connected and healthy,
	// minus whatever outer strategies removed. Build may keep the slice;
	// nobody modifies it afterwards.
	Cands []Candidate
	// All are all endpoints of the membership, whatever their state, in
	// resolver order, for ratios such as a zone's healthy fraction.
	All []*Endpoint
	// LocalZone is the caller's zone; "" when unknown.
	LocalZone string
	// CallerZones is the fraction of this service's callers in each zone,
	// from the control plane; nil when unknown. Read-only.
	CallerZones map[string]float64
	// Now is the clock reading of this Build or Tick.
	Now time.Time
}

// Picker chooses an endpoint for one request.
//
// The balancer calls Pick from any number of goroutines at once, once per
// request. Pick must not block, lock, allocate or read the clock; it returns
// ErrNoEndpoint, or a status error, when it has nothing to offer. A Picker is
// immutable once built.
type Picker interface {
	Pick(ctx context.Context) (*Endpoint, error)
}

// PickerFunc adapts a function to Picker.
type PickerFunc func(ctx context.Context) (*Endpoint, error)

// Pick calls f.
func (f PickerFunc) Pick(ctx context.Context) (*Endpoint, error) { return f(ctx) }

// Strategy is one link of a chain, owned by one Pool.
//
// The Pool calls Build and Tick from one goroutine at a time, never
// concurrently; they may take as long as needed (they are off the pick path)
// but should not block on I/O. A wrapper calls its inner strategy's Build
// (possibly several times, with subsets) and forwards Tick with the whole set.
type Strategy interface {
	// Build returns a picker over s.Cands.
	Build(s Set) Picker
	// Tick runs periodically (every 100 ms by default) with the current set;
	// it updates time-dependent tables and returns true when the picker must
	// be rebuilt. The set's slices are reused after Tick returns: do not
	// keep them.
	Tick(s Set) bool
}

// BuildOptions are what a Pool gives the strategies of its chain.
type BuildOptions struct {
	// Clock is read in Build and Tick (never in Pick). Required.
	Clock clock.Clock
	// Rand returns uniformly random 64-bit values; called on the pick path,
	// from many goroutines at once. Defaults to FastRand (the runtime's
	// per-M generator); math/rand/v2's Uint64 works too, at a few more
	// nanoseconds a call.
	Rand func() uint64
	// Rand32 returns 32 uniformly random bits, for pick paths that need no
	// more; called like Rand. Chain.Build defaults it to
	// FastRand32 when Rand is nil too, else to the low half of Rand, so
	// that a seeded Rand drives every strategy.
	Rand32 func() uint32
	// Gauges receives the chain's live values. Never nil after Chain.Build.
	Gauges *Gauges
	// Probe asks the owner to probe e's load asynchronously (one unary
	// RPC whose trailer carries an ORCA load report, recorded with
	// ReportORCA when it comes back); nil when the owner cannot probe.
	// Called on the pick path, from many goroutines at once: it must not
	// block or allocate, and drops the probe when too many are under way.
	Probe func(e *Endpoint)
}

// Needs are what a chain asks of the owner of its endpoints, a pure
// function of its parsed config (see NeedsBuilder); Chain.Needs holds them.
type Needs struct {
	// LatencyAlpha > 0 makes the Pool sample each endpoint's latency (see
	// Endpoint.StartSample) and fold the samples into the peak-EWMA
	// estimate with this alpha.
	LatencyAlpha float64
	// FailurePenalty multiplies the latency estimate to form the sample of a
	// failed request (with LatencyAlpha > 0; at least 1).
	FailurePenalty float64
	// OOBInterval > 0 asks the owner for an out-of-band ORCA load report
	// stream on every connection, reporting at this interval (the backend
	// may send less often), recorded with ReportORCA.
	OOBInterval time.Duration
}

// NeedsBuilder is implemented by a Builder whose strategy needs services of
// the Pool. ParseChain calls Needs with the config ParseConfig returned;
// it must not keep or modify it.
type NeedsBuilder interface {
	Needs(cfg any) Needs
}

// Gauges are named live values the strategies of one chain publish, for
// metrics and logs: a strategy gets its gauge by name from Build (the name
// is a constant of its package) and sets it from Build/Tick; anyone reads
// them. Safe for concurrent use.
type Gauges struct {
	mu sync.Mutex
	m  map[string]*Gauge
}

// Gauge is one float64 value. Safe for concurrent use.
type Gauge struct{ bits atomic.Uint64 }

// Set stores f.
func (g *Gauge) Set(f float64) { g.bits.Store(math.Float64bits(f)) }

// Value returns the value last set (0 before any).
func (g *Gauge) Value() float64 { return math.Float64frombits(g.bits.Load()) }

// Gauge returns the gauge named name, creating it.
func (gs *Gauges) Gauge(name string) *Gauge {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if gs.m == nil {
		gs.m = map[string]*Gauge{}
	}
	g := gs.m[name]
	if g == nil {
		g = &Gauge{}
		gs.m[name] = g
	}
	return g
}

// Value returns the value of the gauge named name; 0 when no strategy of
// the chain publishes it (or gs is nil).
func (gs *Gauges) Value(name string) float64 {
	if gs == nil {
		return 0
	}
	gs.mu.Lock()
	g := gs.m[name]
	gs.mu.Unlock()
	if g == nil {
		return 0
	}
	return g.Value()
}

// Position says where a strategy may stand in a chain.
type Position int

const (
	// Wrapper strategies need an inner strategy: never last.
	Wrapper Position = iota
	// Terminal strategies choose: always last.
	Terminal
)
