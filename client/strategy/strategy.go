// Package strategy defines how Fairway picks an endpoint for each request:
// the small Strategy/Picker interfaces, the per-endpoint live state shared by
// the balancer and the strategies, and a registry of strategies by name.
//
// A strategy is one package under client/strategy/ that calls Register from
// its init function; nothing else has to change for it to be usable in a
// strategy chain. A chain is a JSON array of single-key objects, outermost
// first, whose last element picks:
//
//	[{"zone_affinity": {"spill_margin": 0.2}}, {"slow_start": {}}, {"outlier": {}}, {"p2c": {}}]
//
// Wrappers (zone_affinity, slow_start, outlier, shard) shape the candidate set
// their inner strategy sees; terminals (p2c, round_robin, weighted) choose.
// Time-dependent work happens in Tick, off the pick path; Pick never locks,
// allocates or reads the clock.
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
// chain; client/balancer's tests register such a strategy from a test file.
package strategy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"

	"github.com/fairway-lb/fairway/client/endpointattr"
)

// ErrNoEndpoint is returned by a Picker with no candidate to offer. The
// balancer turns it into an UNAVAILABLE status.
var ErrNoEndpoint = errors.New("fairway/strategy: no endpoint available")

// NoEndpoint is the Picker of a terminal strategy with no candidate: every
// Pick returns ErrNoEndpoint.
var NoEndpoint Picker = PickerFunc(func(context.Context) (*Endpoint, error) { return nil, ErrNoEndpoint })

// Endpoint is one backend address and its live state. The balancer creates
// one per address and keeps it while the address stays in the resolver state,
// so counters survive picker rebuilds. Counters are atomics updated on the
// pick and done paths; the other fields are written only by the owner of the
// Endpoint (the balancer) before the Endpoint is handed to Build or Tick, and
// by strategies' Tick/Build for the fields documented so.
//
// Everything a pick and its done touch (the load, latency and sampling
// counters, SubConn and the done functions) fills the Endpoint's own 64
// bytes, one cache line: a pick among 1,000 endpoints reads two lines, and
// the 64 KiB they take stay in cache. The rest (Addr, Info, Initial, Added,
// outcome counters, ejection state) lives behind one pointer and is reached
// through the embedded *EndpointState.
type Endpoint struct {
	// SubConn and Done are the owner's handles, returned with each pick
	// (set before the Endpoint reaches any Build). TimedDone is returned
	// instead of Done for the one request whose latency is being sampled
	// (see StartSample); the owner sets it to the method value FinishTimed.
	SubConn   balancer.SubConn
	Done      func(balancer.DoneInfo)
	TimedDone func(balancer.DoneInfo)

	// load packs picks (high 40 bits) and in-flight requests (low 24 bits)
	// so that a pick is a single atomic add and a successful request's
	// done another.
	load    atomic.Uint64
	latency atomic.Uint64 // peak-EWMA latency in ns, as float64 bits
	// sample is the latency-sampling slot: sampleIdle, sampleWanted,
	// sampleTaking, or 1 + the start (ns since lcfg.base) of the one timed
	// request in flight.
	sample atomic.Int64

	*EndpointState
}

// EndpointState is the part of an Endpoint that picks do not touch.
type EndpointState struct {
	// Addr is the endpoint's address (immutable).
	Addr string
	// Info is what the resolver says of the endpoint. The balancer updates it
	// only while no Build or Tick runs; pickers must not read it.
	Info endpointattr.Info
	// Initial is true for endpoints of the client's first resolver update
	// (immutable).
	Initial bool
	// Added is when this client first saw the endpoint: Info.FirstSeen when
	// set, else the balancer's clock at creation (immutable).
	Added time.Time

	failed [17]atomic.Uint64 // finished requests by code; OK is derived

	// Written by strategies from Tick/Build, read by anyone.
	EjectedUntil    atomic.Int64  // unix ns; 0 when not ejected (outlier)
	Ejections       atomic.Uint64 // times ejected (outlier)
	effectiveWeight atomic.Uint64 // float64 bits; 0 = unset (slow_start)

	lcfg atomic.Pointer[latencyConfig] // nil: latency not measured
	ref  atomic.Int64                  // typical latency of the peers, ns (DecayStale)

	// Written and read only by the latency-aware terminal's Tick.
	tickPicks  uint64 // Picks at the last Tick
	idleTicks  uint32 // Ticks in a row without a new pick
	tickFailed uint64 // failed requests at the last Tick
}

const (
	inflightBits = 24
	inflightMask = 1<<inflightBits - 1
	onePick      = 1<<inflightBits | 1
)

// NewEndpoint returns an Endpoint for addr with info.
func NewEndpoint(addr string, info endpointattr.Info, added time.Time) *Endpoint {
	if info.Weight == 0 {
		info.Weight = 1
	}
	return &Endpoint{EndpointState: &EndpointState{Addr: addr, Info: info, Added: added}}
}

// Picked records that a request was sent to e: one atomic add. Every Picked
// must be followed by one Finish.
func (e *Endpoint) Picked() { e.load.Add(onePick) }

// InFlight returns the requests picked and not yet finished.
func (e *Endpoint) InFlight() int64 { return int64(e.load.Load() & inflightMask) }

// Picks returns the requests picked in total (wraps at 2^40).
func (e *Endpoint) Picks() uint64 { return e.load.Load() >> inflightBits }

// Finish records the end of one request with its status code: it decrements
// the in-flight count and, for a code other than OK, counts it. Safe for
// concurrent use; no locks; one atomic add for OK.
func (e *Endpoint) Finish(c codes.Code) {
	e.load.Add(^uint64(0)) // -1: in-flight is >= 1 here
	if c == codes.OK {
		return
	}
	if uint32(c) >= uint32(len(e.failed)) {
		c = codes.Unknown
	}
	e.failed[c].Add(1)
}

// FinishErr is Finish with the code of err (nil is OK).
func (e *Endpoint) FinishErr(err error) {
	if err == nil {
		e.Finish(codes.OK)
		return
	}
	e.Finish(status.Code(err))
}

// FinishDone is FinishErr shaped as a PickResult.Done; its method value,
// made once per endpoint, serves every request. With latency measurement on
// (SetLatencyConfig), a failure also counts as a slow request: the estimate
// is raised to the failure penalty times itself.
func (e *Endpoint) FinishDone(di balancer.DoneInfo) {
	if di.Err == nil {
		e.load.Add(^uint64(0)) // the common case, in one call
		return
	}
	if lc := e.lcfg.Load(); lc != nil {
		if f := e.failureSample(lc, 0); f > 0 {
			e.ObserveLatency(f, lc.alpha)
		}
	}
	e.Finish(status.Code(di.Err))
}

// Latency sampling. Timing every request costs two clock reads per request;
// instead each endpoint has one sampling slot. The owner's Tick arms it
// (ArmSample) when no timed request is in flight; the next pick of the
// endpoint that wins the slot (StartSample: one atomic load when the slot is
// not armed) reads the clock and returns TimedDone, whose FinishTimed reads
// it again and folds the latency into the estimate. So clock reads are
// bounded by two per endpoint per tick, whatever the request rate, and a
// client that sends less than one request per endpoint per tick times
// nearly all of them.
const (
	sampleIdle   = 0
	sampleWanted = -1
	sampleTaking = -2
)

// latencyConfig is how an endpoint measures latency; immutable.
type latencyConfig struct {
	clock   clock.PassiveClock
	base    time.Time // monotonic origin of the sample slot's start times
	alpha   float64
	penalty float64
}

// failureSample is the latency recorded for a failed request that took d:
// at least the penalty times the estimate, or times the peers' typical
// latency when that is higher (a fast error on a pod not measured yet).
func (e *Endpoint) failureSample(lc *latencyConfig, d time.Duration) time.Duration {
	base := max(e.Latency(), time.Duration(e.ref.Load()))
	return max(d, time.Duration(float64(base)*lc.penalty))
}

// SetLatencyConfig turns latency measurement on with the clock, EWMA alpha
// and failure penalty (alpha <= 0 turns it off). Called by the owner (from
// Build/Tick context); safe while requests are in flight.
func (e *Endpoint) SetLatencyConfig(c clock.PassiveClock, alpha, penalty float64) {
	if alpha <= 0 || c == nil {
		e.lcfg.Store(nil)
		e.sample.CompareAndSwap(sampleWanted, sampleIdle)
		return
	}
	if old := e.lcfg.Load(); old != nil && old.clock == c && old.alpha == alpha && old.penalty == max(penalty, 1) {
		return
	}
	e.lcfg.Store(&latencyConfig{clock: c, base: c.Now(), alpha: alpha, penalty: max(penalty, 1)})
	e.sample.CompareAndSwap(sampleIdle, sampleWanted) // time the first request
}

// ArmSample asks for the next request to e to be timed, unless one timed
// request is already in flight; that one, if it has been running for longer
// than the estimate at now, already proves the endpoint slower, and its
// elapsed time is folded in at once (a peak). Called by the owner's tick.
func (e *Endpoint) ArmSample(now time.Time) {
	lc := e.lcfg.Load()
	if lc == nil {
		return
	}
	switch s := e.sample.Load(); {
	case s == sampleIdle:
		e.sample.CompareAndSwap(sampleIdle, sampleWanted)
	case s > 0:
		if d := now.Sub(lc.base) - time.Duration(s-1); d > e.Latency() {
			e.ObserveLatency(d, lc.alpha)
		}
	}
}

// StartSample is called on the pick path after Picked: it reports whether
// this request is the one to time, in which case it has stored the start
// time and the caller must finish the request with FinishTimed (TimedDone).
// One atomic load when no sample is wanted.
func (e *Endpoint) StartSample() bool {
	return e.sample.Load() == sampleWanted && e.startSample() // inlined fast path
}

func (e *Endpoint) startSample() bool {
	if !e.sample.CompareAndSwap(sampleWanted, sampleTaking) {
		return false
	}
	lc := e.lcfg.Load()
	if lc == nil {
		e.sample.Store(sampleIdle)
		return false
	}
	e.sample.Store(int64(lc.clock.Since(lc.base)) + 1)
	return true
}

// FinishTimed is FinishDone for the request StartSample chose: it observes
// the request's latency (a failure counts as at least the penalty times the
// estimate), frees the slot and finishes the request.
func (e *Endpoint) FinishTimed(di balancer.DoneInfo) {
	s := e.sample.Load()
	if lc := e.lcfg.Load(); lc != nil && s > 0 {
		// d < 0 only if the config changed meanwhile: no sample then.
		if d := lc.clock.Since(lc.base) - time.Duration(s-1); d >= 0 {
			if di.Err != nil {
				d = e.failureSample(lc, d)
			}
			e.ObserveLatency(d, lc.alpha)
		}
	}
	e.sample.Store(sampleIdle)
	if di.Err == nil {
		e.load.Add(^uint64(0))
		return
	}
	e.Finish(status.Code(di.Err))
}

// DecayStale is for a latency-aware terminal's Tick, from one goroutine:
// it counts the ticks in a row in which e got no new pick and, once there
// have been idle of them, moves the estimate a fraction toward ref (a
// typical estimate of the other endpoints, which is also kept for failures
// to be measured against). A pod once measured slow then
// wins a comparison again after a while and is re-measured, so one that
// has recovered gets its traffic back. If requests to e failed since the
// last call, the estimate is raised to at least penalty × ref: a fast
// error, or one on a pod not yet measured, must not look attractive. The
// estimate is capped at maxOver × ref. It reports whether e was idle.
func (e *Endpoint) DecayStale(ref time.Duration, idle uint32, fraction, penalty, maxOver float64) bool {
	p := e.Picks()
	if p != e.tickPicks {
		e.tickPicks, e.idleTicks = p, 0
	} else if e.idleTicks < math.MaxUint32 {
		e.idleTicks++
	}
	e.ref.Store(int64(ref))
	_, failed := e.Finished(^MaskOf(codes.OK, codes.Canceled))
	newFailures := failed != e.tickFailed
	e.tickFailed = failed
	old := e.latency.Load()
	cur, r := math.Float64frombits(old), float64(ref)
	if r <= 0 || (cur <= 0 && !newFailures) {
		return e.idleTicks > 0
	}
	next := cur
	if e.idleTicks >= idle && cur > r {
		next -= fraction * (cur - r)
	}
	if newFailures {
		next = max(next, penalty*r)
	}
	next = min(next, maxOver*r)
	if next != cur {
		// Unless a sample changed it meanwhile.
		e.latency.CompareAndSwap(old, math.Float64bits(next))
	}
	return e.idleTicks > 0
}

// Outcomes returns how many requests ended with code c.
func (e *Endpoint) Outcomes(c codes.Code) uint64 {
	if c == codes.OK {
		total, notOK := e.Finished(^CodeMask(1))
		return total - notOK
	}
	if uint32(c) >= uint32(len(e.failed)) {
		return 0
	}
	return e.failed[c].Load()
}

// Finished returns how many requests have ended, and how many of them ended
// with a code in mask (bit 1<<code set; OK is never matched).
func (e *Endpoint) Finished(mask CodeMask) (total, matching uint64) {
	l := e.load.Load()
	total = l>>inflightBits - l&inflightMask
	for c := 1; c < len(e.failed); c++ {
		if mask.Has(codes.Code(c)) {
			matching += e.failed[c].Load()
		}
	}
	return total, min(matching, total)
}

// ObserveLatency folds one request's latency into the peak-EWMA estimate:
// a sample above the estimate replaces it (peak), a lower one decays it with
// weight alpha. Lock-free (compare-and-swap loop).
func (e *Endpoint) ObserveLatency(d time.Duration, alpha float64) {
	s := float64(d)
	for {
		old := e.latency.Load()
		cur := math.Float64frombits(old)
		next := s
		if old != 0 && s < cur {
			next = cur + alpha*(s-cur)
		}
		if e.latency.CompareAndSwap(old, math.Float64bits(next)) {
			return
		}
	}
}

// Latency returns the peak-EWMA latency estimate (0 when none yet).
func (e *Endpoint) Latency() time.Duration {
	return time.Duration(math.Float64frombits(e.latency.Load()))
}

// LatencyNanos is Latency as a float64 of nanoseconds, for the pick path.
func (e *Endpoint) LatencyNanos() float64 { return math.Float64frombits(e.latency.Load()) }

// SetEffectiveWeight records the weight a strategy currently applies, for
// inspection. Called from Build/Tick.
func (e *Endpoint) SetEffectiveWeight(w float64) { e.effectiveWeight.Store(math.Float64bits(w)) }

// EffectiveWeight returns the last weight recorded by SetEffectiveWeight; 0
// when none was.
func (e *Endpoint) EffectiveWeight() float64 {
	if b := e.effectiveWeight.Load(); b != 0 {
		return math.Float64frombits(b)
	}
	return 0
}

// Ejected reports whether the endpoint is ejected at now.
func (e *Endpoint) Ejected(now time.Time) bool {
	u := e.EjectedUntil.Load()
	return u != 0 && now.UnixNano() < u
}

// CodeMask is a set of gRPC codes, bit 1<<code.
type CodeMask uint32

// Has reports whether c is in m.
func (m CodeMask) Has(c codes.Code) bool { return uint32(c) < 32 && m&(1<<uint32(c)) != 0 }

// MaskOf returns the set of cs.
func MaskOf(cs ...codes.Code) CodeMask {
	var m CodeMask
	for _, c := range cs {
		m |= 1 << uint32(c)
	}
	return m
}

// ParseCodes parses gRPC code names ("UNAVAILABLE", "unavailable", ...).
func ParseCodes(names []string) (CodeMask, error) {
	var m CodeMask
	for _, n := range names {
		var c codes.Code
		if err := c.UnmarshalJSON([]byte(fmt.Sprintf("%q", upper(n)))); err != nil {
			return 0, fmt.Errorf("unknown gRPC code %q", n)
		}
		m |= MaskOf(c)
	}
	return m, nil
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// Candidate is an endpoint offered to a strategy's Build with the weight it
// should carry there (Info.Weight, possibly scaled by an outer strategy).
type Candidate struct {
	E      *Endpoint
	Weight float64
}

// Set is what Build and Tick receive.
type Set struct {
	// Cands are the endpoints that may be picked: READY and healthy, minus
	// whatever outer strategies removed. Build may keep the slice; nobody
	// modifies it afterwards.
	Cands []Candidate
	// All are all endpoints the resolver reported, whatever their state, for
	// ratios such as a zone's healthy fraction.
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

// Strategy is one link of a chain, owned by one balancer.
//
// The balancer calls Build and Tick from one goroutine at a time, never
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

// Stats are live values a chain exposes for metrics. Written by strategies
// from Build/Tick, read by anyone.
type Stats struct {
	spill atomic.Uint64 // float64 bits
}

// SetSpillFraction records the share of traffic sent out of the local zone.
func (s *Stats) SetSpillFraction(f float64) { s.spill.Store(math.Float64bits(f)) }

// SpillFraction returns the value last set by SetSpillFraction.
func (s *Stats) SpillFraction() float64 { return math.Float64frombits(s.spill.Load()) }

// BuildOptions are what a balancer gives the strategies of its chain.
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
	// Stats receives the chain's live values. Never nil after Chain.Build.
	Stats *Stats
	// Features collects what the strategies need from the balancer; a
	// strategy sets fields from its builder's Build.
	Features *Features
}

// Features are services a strategy asks of the balancer.
type Features struct {
	// LatencyAlpha > 0 makes the balancer time each request (one clock read
	// at pick and at done) and call Endpoint.ObserveLatency with this alpha.
	LatencyAlpha float64
	// FailurePenalty multiplies the latency estimate to form the sample of a
	// failed request (with LatencyAlpha > 0).
	FailurePenalty float64
}

// Position says where a strategy may stand in a chain.
type Position int

const (
	// Wrapper strategies need an inner strategy: never last.
	Wrapper Position = iota
	// Terminal strategies choose: always last.
	Terminal
)

// Builder makes a strategy from its config. Registered by name from the
// strategy package's init function.
type Builder interface {
	// Name is the snake_case name used in chains.
	Name() string
	// Position says whether the strategy wraps another or chooses.
	Position() Position
	// ParseConfig parses and validates the strategy's JSON config (nil or
	// "{}" means defaults) into the strategy's typed config. Errors read
	// "fairway/<name>: ...".
	ParseConfig(raw json.RawMessage) (any, error)
	// Build makes the strategy with a config returned by ParseConfig. inner
	// is nil for terminals.
	Build(cfg any, inner Strategy, opts BuildOptions) Strategy
}

var (
	regMu    sync.RWMutex
	registry = map[string]Builder{}
)

// Register makes b available by b.Name(). Call it from an init function; a
// later registration under the same name replaces the earlier one.
func Register(b Builder) {
	regMu.Lock()
	defer regMu.Unlock()
	registry[b.Name()] = b
}

// Get returns the builder registered under name.
func Get(name string) (Builder, bool) {
	regMu.RLock()
	defer regMu.RUnlock()
	b, ok := registry[name]
	return b, ok
}

// Names returns the registered names, sorted.
func Names() []string {
	regMu.RLock()
	defer regMu.RUnlock()
	out := make([]string, 0, len(registry))
	for n := range registry {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// DefaultChain is the composition used when a service names none, with the
// configs of DefaultChainConfigs (defaults for the others). Its p2c is
// latency-aware: with many clients each sending a few requests per second,
// a client's own in-flight counts are nearly always 0 and tell the
// endpoints apart no better than chance, while its latency samples do.
var DefaultChain = []string{"zone_affinity", "slow_start", "outlier", "p2c"}

// DefaultChainConfigs are the non-default configs of DefaultChain's links.
var DefaultChainConfigs = map[string]json.RawMessage{"p2c": json.RawMessage(`{"latency_aware":true}`)}

// Link is one parsed element of a chain.
type Link struct {
	Builder Builder
	Config  any
}

// Chain is a parsed, validated strategy chain, outermost first. Immutable.
type Chain struct {
	Links []Link
	// Raw is the chain in canonical JSON, for comparing configs.
	Raw string
}

// ParseChain parses a JSON chain. Empty input (or JSON null) selects
// DefaultChain with default configs.
func ParseChain(raw json.RawMessage) (*Chain, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return DefaultChainConfig()
	}
	var elems []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return nil, fmt.Errorf("fairway/strategy: chain must be a JSON array of single-key objects: %w", err)
	}
	if len(elems) == 0 {
		return DefaultChainConfig()
	}
	c := &Chain{}
	for i, el := range elems {
		if len(el) != 1 {
			return nil, fmt.Errorf("fairway/strategy: chain element %d has %d keys, want one strategy name", i, len(el))
		}
		for name, cfg := range el {
			if err := c.add(name, cfg, i == len(elems)-1); err != nil {
				return nil, err
			}
		}
	}
	c.Raw = canonical(elems)
	return c, nil
}

// DefaultChainConfig returns DefaultChain with default configs.
func DefaultChainConfig() (*Chain, error) {
	c := &Chain{}
	elems := make([]map[string]json.RawMessage, 0, len(DefaultChain))
	for i, name := range DefaultChain {
		raw := DefaultChainConfigs[name]
		if err := c.add(name, raw, i == len(DefaultChain)-1); err != nil {
			return nil, err
		}
		if raw == nil {
			raw = json.RawMessage("{}")
		}
		elems = append(elems, map[string]json.RawMessage{name: raw})
	}
	c.Raw = canonical(elems)
	return c, nil
}

func (c *Chain) add(name string, cfg json.RawMessage, last bool) error {
	b, ok := Get(name)
	if !ok {
		return fmt.Errorf("fairway/strategy: unknown strategy %q (registered: %v)", name, Names())
	}
	switch {
	case b.Position() == Terminal && !last:
		return fmt.Errorf("fairway/strategy: %q chooses and must be last in the chain", name)
	case b.Position() == Wrapper && last:
		return fmt.Errorf("fairway/strategy: %q wraps another strategy and cannot be last in the chain", name)
	}
	pc, err := b.ParseConfig(cfg)
	if err != nil {
		return err
	}
	c.Links = append(c.Links, Link{Builder: b, Config: pc})
	return nil
}

func canonical(elems []map[string]json.RawMessage) string {
	out, err := json.Marshal(elems) // map keys sorted; RawMessage compacted
	if err != nil {
		return ""
	}
	return string(out)
}

// Build makes the chain's strategies, innermost first, and returns the
// outermost. It fills defaults into opts (Rand, Stats, Features) and returns
// the effective options.
func (c *Chain) Build(opts BuildOptions) (Strategy, BuildOptions) {
	if opts.Rand == nil {
		opts.Rand = FastRand
		if opts.Rand32 == nil {
			opts.Rand32 = FastRand32
		}
	}
	if opts.Rand32 == nil {
		r := opts.Rand
		opts.Rand32 = func() uint32 { return uint32(r()) }
	}
	if opts.Stats == nil {
		opts.Stats = &Stats{}
	}
	if opts.Features == nil {
		opts.Features = &Features{}
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	var s Strategy
	for i := len(c.Links) - 1; i >= 0; i-- {
		s = c.Links[i].Builder.Build(c.Links[i].Config, s, opts)
	}
	return s, opts
}

// Index maps a random value r to [0, n) (Lemire's multiply-shift; the bias
// is below n/2^64).
func Index(r uint64, n int) int {
	hi, _ := bits.Mul64(r, uint64(n))
	return int(hi)
}

// Index32 maps the 32-bit value r to [0, n).
func Index32(r uint32, n int) int {
	return int((uint64(r) * uint64(n)) >> 32)
}

// Threshold converts a probability p in [0,1] into a uint64 such that
// r < Threshold(p) has probability p for uniform r.
func Threshold(p float64) uint64 {
	switch {
	case p <= 0:
		return 0
	case p >= 1:
		return math.MaxUint64
	}
	return uint64(p * (1 << 63) * 2)
}

// Duration is a time.Duration that unmarshals from a Go duration string
// ("30s") or a number of seconds.
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("duration must be a string such as \"30s\" or a number of seconds")
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// DecodeConfig unmarshals raw (nil = keep defaults) into cfg, rejecting
// unknown fields, and prefixes errors with "fairway/<name>: ".
func DecodeConfig(name string, raw json.RawMessage, cfg any) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytesReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return fmt.Errorf("fairway/%s: invalid config: %w", name, err)
	}
	return nil
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
