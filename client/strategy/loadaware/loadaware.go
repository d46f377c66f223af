// Package loadaware is the load_aware strategy: a chooser that balances on
// the load the backends report of themselves, as Prequal (Google, NSDI
// 2024) does, merged with the client's own signals.
//
// Each endpoint keeps its last reported requests in flight (RIF; see
// wire.RIFMetric and strategy.Endpoint.ServerLoad), from three sources:
// the ORCA trailer of every finished request (free), the out-of-band ORCA
// stream the balancer opens on each connection when oob_interval > 0, and
// asynchronous probes (a unary grpc.health.v1.Health/Check whose trailer
// carries the report) that a pick asks for, with probability probe_rate,
// for a sampled endpoint with no fresh report. A report is fresh while it
// is younger than max_age and this client has sent the endpoint fewer than
// reuse requests since; its estimate is the reported RIF plus this
// client's requests sent since and still in flight, per unit of weight.
//
// A pick samples two distinct candidates at random (as p2c does) and ranks
// each in a class, lowest first, then by a value within the class:
//
//  0. cold: a fresh report at or below the quantile-th quantile of the
//     fresh estimates (computed by Tick) — by estimated RIF per unit of
//     weight (Prequal's hot-cold rule);
//  1. unknown: no fresh report — by this client's own requests in flight
//     (+ 1) per unit of weight;
//  2. hot: a fresh report above the quantile, or slow: a latency estimate
//     above 1.5× the reference (the typical estimate) whatever the reports
//     say, which is how a slow endpoint or one whose requests fail (the
//     failure penalty) is kept out however idle it reports itself — by
//     estimated RIF (+ 1) per unit of weight times the latency over the
//     reference (at least 1); or failing: the last report, fresh or
//     not, younger than 20 × max_age says the endpoint fails more than
//     strategy.FailingShare of its requests (ORCA eps over
//     rps_fractional) — by this client's requests in flight (+ 1) per
//     unit of weight times 8. A pod that fails its requests at once has
//     nothing queued and reports itself idle; its error rate is what tells
//     it apart, and it lasts longer than a queue. Among the hot ones, it
//     still takes requests when its peers' queues grow 8 times longer, so
//     that its zone's other pods are not overloaded.
//
// Latency below 1.5× the reference is noise between like endpoints and is
// left out. Ties within the cold and unknown classes go to the endpoint
// this client has sent fewer requests per unit of weight (its pick count):
// with like endpoints and stale reports most candidates tie, and breaking
// ties at random would spread the requests no more evenly than random
// choice does (share max/mean 1.06–1.07 in 10 s runs where round robin,
// which deals requests out in turn, gives 1.01).
//
// With no reports at all load_aware is p2c on this client's in-flight
// counts that avoids slow endpoints: it falls back cleanly for backends
// that do not report. Latency estimates are the client's own (sampled,
// peak-EWMA, failure penalty, stale decay; see p2c.Tracker). Wrappers
// (zone_affinity, slow_start, outlier) shape its candidates as they do
// p2c's.
//
// Reports help as far as they are fresh: a client that sends each endpoint
// a request every few hundred milliseconds or less, or probes, sees its
// load change; one that sends an endpoint a request every few seconds only
// learns what lasts (a slow or overloaded endpoint) and spreads the rest
// at random.
//
// A pick is one 32-bit random draw (a second one only when a probe may be
// due), one load of what the last Tick computed (clock, threshold,
// reference latency) and three loads from each of the two candidates'
// cache lines (latency estimate, counts, report), each ranked into one
// integer key; no lock, no allocation and no clock read: freshness is judged against the
// strategy's coarse clock, advanced by Tick (so ages are counted in ticks,
// 100 ms by default).
package loadaware

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/fairway-lb/fairway/client/strategy"
	"github.com/fairway-lb/fairway/client/strategy/p2c"
)

// Name is the strategy's name in chains.
const Name = "load_aware"

// Gauges the strategy publishes (strategy.Gauges).
const (
	// FreshFraction is the fraction of candidates with a fresh report at
	// the last Tick.
	FreshFraction = "load_aware_fresh_fraction"
	// Threshold is the hot-cold threshold (estimated RIF per unit of
	// weight) of the last Tick.
	Threshold = "load_aware_threshold"
)

// Config is load_aware's typed configuration.
type Config struct {
	// ProbeRate is the probability, per pick and per sampled candidate
	// with no fresh report, of probing it, in [0, 1]. Default 0.1; 0 turns
	// probes off.
	ProbeRate float64 `json:"probe_rate"`
	// Reuse is how many requests this client may send an endpoint on one
	// report before the report stops counting (1–1000). Default 16.
	Reuse int `json:"reuse"`
	// MaxAge is how long a report counts (measured in ticks of the
	// balancer, 100 ms by default). Default 100ms.
	MaxAge strategy.Duration `json:"max_age"`
	// Quantile is the hot-cold quantile of the fresh estimates, in (0, 1].
	// Default 0.75.
	Quantile float64 `json:"quantile"`
	// OOBInterval asks each backend for an out-of-band report at this
	// interval (the backend may report less often: grpc-go's ORCA service
	// sends at most every 30 s by default). Default 0: no stream. Streams
	// opened together report in step, so every client learns the same
	// pods are idle at the same moment and sends them its next requests:
	// in simulation a 1 s interval raised the p99 by 6–7%.
	OOBInterval strategy.Duration `json:"oob_interval"`
	// DecayAlpha is the EWMA weight of a latency sample below the
	// estimate, in (0, 1]. Default 0.1.
	DecayAlpha float64 `json:"decay_alpha"`
	// FailurePenalty multiplies the latency estimate to form the sample of
	// a failed request (>= 1). Default 5.
	FailurePenalty float64 `json:"failure_penalty"`
}

// noThreshold is the threshold while no Tick has seen a fresh report:
// nothing is cold, and fresh candidates go by their estimated RIF.
const noThreshold float64 = -1

// slowFactor is how far above the reference latency an estimate makes an
// endpoint slow (ranked with the hot ones).
// Below it, differences are noise between like endpoints.
const slowFactor = 1.5

// failingAge is how many times max_age a report saying the endpoint fails
// (strategy.FailingShare) counts, however many requests were sent since:
// errors last longer than a queue, and a client that stops sending to a
// failing endpoint would otherwise forget it within max_age.
const failingAge = 20

// failingFactor is how many times its own requests in flight (+ 1) per
// unit of weight a failing endpoint is ranked at, among the hot ones: it
// is passed over for any candidate but one whose estimate is that many
// times higher, so that when a zone's other pods fill up (or zone
// affinity keeps callers in the failing pod's zone) the failing pod takes
// some load again rather than let the queues grow without bound.
const failingFactor = 8

func init() { strategy.Register(builder{}) }

type builder struct{}

func (builder) Name() string                { return Name }
func (builder) Position() strategy.Position { return strategy.Terminal }

func (builder) ParseConfig(raw json.RawMessage) (any, error) {
	cfg := &Config{ProbeRate: 0.1, Reuse: 16, MaxAge: strategy.Duration(100 * time.Millisecond), Quantile: 0.75,
		DecayAlpha: 0.1, FailurePenalty: 5}
	if err := strategy.DecodeConfig(Name, raw, cfg); err != nil {
		return nil, err
	}
	switch {
	case !(cfg.ProbeRate >= 0 && cfg.ProbeRate <= 1):
		return nil, fmt.Errorf("fairway/load_aware: probe_rate %v must be within [0, 1]", cfg.ProbeRate)
	case cfg.Reuse < 1 || cfg.Reuse > 1000:
		return nil, fmt.Errorf("fairway/load_aware: reuse %d must be within 1–1000", cfg.Reuse)
	case cfg.MaxAge <= 0 || time.Duration(cfg.MaxAge) > 24*time.Hour:
		return nil, fmt.Errorf("fairway/load_aware: max_age %v must be within (0, 24h]", time.Duration(cfg.MaxAge))
	case !(cfg.Quantile > 0 && cfg.Quantile <= 1):
		return nil, fmt.Errorf("fairway/load_aware: quantile %v must be within (0, 1]", cfg.Quantile)
	case cfg.OOBInterval < 0:
		return nil, fmt.Errorf("fairway/load_aware: oob_interval %v must not be negative", time.Duration(cfg.OOBInterval))
	case !(cfg.DecayAlpha > 0 && cfg.DecayAlpha <= 1):
		return nil, fmt.Errorf("fairway/load_aware: decay_alpha %v must be in (0, 1]", cfg.DecayAlpha)
	case !(cfg.FailurePenalty >= 1):
		return nil, fmt.Errorf("fairway/load_aware: failure_penalty %v must be >= 1", cfg.FailurePenalty)
	}
	return cfg, nil
}

// Needs asks the Pool to sample latency, and the owner for out-of-band
// reports.
func (builder) Needs(cfg any) strategy.Needs {
	c := cfg.(*Config)
	return strategy.Needs{LatencyAlpha: c.DecayAlpha, FailurePenalty: c.FailurePenalty, OOBInterval: time.Duration(c.OOBInterval)}
}

func (builder) Build(cfg any, _ strategy.Strategy, opts strategy.BuildOptions) strategy.Strategy {
	c := cfg.(*Config)
	r32 := opts.Rand32
	if r32 == nil { // built outside Chain.Build
		r := opts.Rand
		r32 = func() uint32 { return uint32(r()) }
	}
	s := &loadAware{cfg: *c, rand: r32, probe: opts.Probe, lat: p2c.NewTracker(c.FailurePenalty)}
	if opts.Gauges != nil {
		s.freshGauge, s.thrGauge = opts.Gauges.Gauge(FreshFraction), opts.Gauges.Gauge(Threshold)
	}
	s.thr = noThreshold
	s.publish(strategy.Stamp(opts.Clock.Now()))
	return s
}

// params is what a pick reads of the strategy's last Tick (or Build):
// immutable once published.
type params struct {
	now    uint32  // strategy.Stamp
	thr    float64 // hot-cold threshold (noThreshold: none yet)
	ref    float64 // reference latency, ns (0: none measured)
	unref  float64 // the latency of an endpoint not measured: max(ref, 1)
	slow   float64 // slowFactor × ref: an estimate above it is slow (+Inf while ref is 0)
	invRef float64 // 1 / max(ref, 1)
}

// publish makes the clock at now, the threshold and the tracker's
// reference latency live for pickers.
func (s *loadAware) publish(now uint32) {
	ref := s.lat.Ref()
	pr := &params{now: now, thr: s.thr, ref: ref, unref: max(ref, 1), slow: math.Inf(1), invRef: 1 / max(ref, 1)}
	if ref > 0 {
		pr.slow = slowFactor * ref
	}
	s.live.Store(pr)
}

type loadAware struct {
	cfg   Config
	rand  func() uint32
	probe func(*strategy.Endpoint) // nil: the owner cannot probe
	lat   *p2c.Tracker

	// Read by pickers, written by Tick and Build: what a pick needs of the
	// last Tick, in one load.
	live atomic.Pointer[params]
	thr  float64 // the hot-cold threshold of the last Tick (noThreshold: none yet); Tick and Build only

	// Touched only from Tick (serialized by the Pool).
	scratch    []float64
	freshGauge *strategy.Gauge
	thrGauge   *strategy.Gauge
}

// Tick advances the coarse clock, decays stale latency estimates and
// recomputes the hot-cold threshold; pickers read all three live (one
// params), so it never asks for a rebuild.
func (s *loadAware) Tick(set strategy.Set) bool {
	now := strategy.Stamp(set.Now)
	s.lat.Tick(set)
	s.scratch = s.scratch[:0]
	for _, c := range set.Cands {
		if est, ok := s.estimate(c.E, now); ok {
			s.scratch = append(s.scratch, est/max(c.Weight, math.SmallestNonzeroFloat64))
		}
	}
	thr := noThreshold
	if len(s.scratch) > 0 {
		slices.Sort(s.scratch)
		thr = s.scratch[int(s.cfg.Quantile*float64(len(s.scratch)-1))]
	}
	s.thr = thr
	s.publish(now)
	if s.freshGauge != nil && len(set.Cands) > 0 {
		s.freshGauge.Set(float64(len(s.scratch)) / float64(len(set.Cands)))
		s.thrGauge.Set(thr)
	}
	return false
}

// estimate returns e's estimated RIF (not per weight) and whether its
// report is fresh at now.
func (s *loadAware) estimate(e *strategy.Endpoint, now uint32) (float64, bool) {
	rif, stamp, since := e.ServerLoad()
	if stamp == 0 || strategy.Age(now, stamp) > time.Duration(s.cfg.MaxAge).Milliseconds() || since >= uint64(s.cfg.Reuse) {
		return 0, false
	}
	return rif + float64(min(since, uint64(e.InFlight()))), true
}

func (s *loadAware) Build(set strategy.Set) strategy.Picker {
	n := len(set.Cands)
	if n == 0 {
		return strategy.NoEndpoint
	}
	s.lat.Init(set.Cands)
	s.publish(strategy.Stamp(set.Now))
	p := &picker{
		s:        s,
		eps:      make([]entry, n),
		maxAge:   time.Duration(s.cfg.MaxAge).Milliseconds(),
		failAge:  failingAge * time.Duration(s.cfg.MaxAge).Milliseconds(),
		reuse:    uint64(s.cfg.Reuse),
		probe:    s.probe,
		probeThr: uint32(min(s.cfg.ProbeRate*(1<<16), 1<<16-1)),
	}
	if s.cfg.ProbeRate >= 1 {
		p.probeThr = 1 << 16
	}
	if s.probe == nil || s.cfg.ProbeRate == 0 {
		p.probe = nil
	}
	for i, c := range set.Cands {
		w := c.Weight
		if w <= 0 {
			w = math.SmallestNonzeroFloat64
		}
		p.eps[i] = entry{e: c.E, invW: 1 / w}
	}
	return p
}
