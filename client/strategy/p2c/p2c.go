// Package p2c is the power-of-two-choices strategy, Fairway's default
// chooser: it draws two distinct random candidates and picks the one with the
// lower load. Load is in-flight requests (plus one) divided by the
// candidate's weight; with "latency_aware" it is also multiplied by the
// endpoint's peak-EWMA latency, and failed requests count as slow ones (a
// failure penalty) so that fast errors do not look attractive. An endpoint
// with no latency sample yet counts with the mean estimate of the others
// (on in-flight requests alone while no endpoint is measured). Latency is sampled
// (see strategy.Endpoint.StartSample: at most one timed request per endpoint
// per tick, so the pick path reads no clock), and Tick decays the estimate of
// an endpoint that has not been picked for a second toward its peers', so an
// endpoint once measured slow is tried again and regains traffic if it has
// recovered. The default chain (strategy.DefaultChain) turns latency_aware on.
//
// A pick is one 32-bit random draw (both indexes come from it), loads from
// the two candidates' cache lines and a conditional move; it never locks,
// allocates, branches on the coin toss or reads the clock.
package p2c

import (
	"context"
	"encoding/json"
	"fmt"
	"math"

	"github.com/fairway-lb/fairway/client/strategy"
)

// Name is the strategy's name in chains.
const Name = "p2c"

// Config is p2c's typed configuration.
type Config struct {
	// LatencyAware multiplies load by the endpoint's peak-EWMA latency.
	LatencyAware bool `json:"latency_aware"`
	// DecayAlpha is the EWMA weight of a new latency sample below the
	// current estimate, in (0,1]. Default 0.1.
	DecayAlpha float64 `json:"decay_alpha"`
	// FailurePenalty multiplies the current latency estimate to form the
	// sample recorded for a failed request (>= 1). Default 5.
	FailurePenalty float64 `json:"failure_penalty"`
}

func init() { strategy.Register(builder{}) }

type builder struct{}

func (builder) Name() string                { return Name }
func (builder) Position() strategy.Position { return strategy.Terminal }

func (builder) ParseConfig(raw json.RawMessage) (any, error) {
	cfg := &Config{DecayAlpha: 0.1, FailurePenalty: 5}
	if err := strategy.DecodeConfig(Name, raw, cfg); err != nil {
		return nil, err
	}
	if cfg.DecayAlpha <= 0 || cfg.DecayAlpha > 1 {
		return nil, fmt.Errorf("fairway/p2c: decay_alpha %v must be in (0, 1]", cfg.DecayAlpha)
	}
	if cfg.FailurePenalty < 1 {
		return nil, fmt.Errorf("fairway/p2c: failure_penalty %v must be >= 1", cfg.FailurePenalty)
	}
	return cfg, nil
}

// Needs asks the Pool to sample latency when latency_aware is on.
func (builder) Needs(cfg any) strategy.Needs {
	c := cfg.(*Config)
	if !c.LatencyAware {
		return strategy.Needs{}
	}
	return strategy.Needs{LatencyAlpha: c.DecayAlpha, FailurePenalty: c.FailurePenalty}
}

func (builder) Build(cfg any, _ strategy.Strategy, opts strategy.BuildOptions) strategy.Strategy {
	c := cfg.(*Config)
	r32 := opts.Rand32
	if r32 == nil { // built outside Chain.Build
		r := opts.Rand
		r32 = func() uint32 { return uint32(r()) }
	}
	return &p2c{cfg: *c, rand: r32, lat: NewTracker(c.FailurePenalty)}
}

type p2c struct {
	cfg  Config
	rand func() uint32
	// lat keeps the reference latency and decays stale estimates
	// (latency_aware only).
	lat *Tracker
}

// Tick decays stale latency estimates (latency_aware only); the picker
// reads estimates live, so it never asks for a rebuild.
func (s *p2c) Tick(set strategy.Set) bool {
	if s.cfg.LatencyAware {
		s.lat.Tick(set)
	}
	return false
}

func (s *p2c) Build(set strategy.Set) strategy.Picker {
	n := len(set.Cands)
	if n == 0 {
		return strategy.NoEndpoint
	}
	p := &picker{
		rand:    s.rand,
		eps:     make([]entry, n),
		latency: s.cfg.LatencyAware,
		lat:     s.lat,
	}
	if s.cfg.LatencyAware {
		s.lat.Init(set.Cands)
	}
	w0 := set.Cands[0].Weight
	for i, c := range set.Cands {
		w := c.Weight
		if w <= 0 {
			w = math.SmallestNonzeroFloat64
		}
		p.eps[i] = entry{e: c.E, invW: 1 / w}
		if w != w0 {
			p.weighted = true
		}
	}
	return p
}

type entry struct {
	e    *strategy.Endpoint
	invW float64 // 1 / weight
}

// picker is immutable.
type picker struct {
	rand     func() uint32
	eps      []entry
	weighted bool
	latency  bool
	lat      *Tracker // the strategy's reference latency
}

func (p *picker) Pick(context.Context) (*strategy.Endpoint, error) {
	eps := p.eps
	n := uint64(len(eps))
	if n == 1 {
		return eps[0].e, nil
	}
	// Two distinct indexes from 32 random bits, without a branch: a is
	// Lemire's multiply-shift of r, b the same of the product's low half
	// (the fraction left over) over n-1, shifted past a. Each pair is
	// equally likely to within n²/2³² (2×10⁻⁴ at 1,000 endpoints).
	x := uint64(p.rand()) * n
	a := x >> 32
	b := (x & (1<<32 - 1) * (n - 1)) >> 32
	b += (b-a)>>63 ^ 1 // b >= a: b+1
	ea, eb := &eps[a], &eps[b]
	// Both candidates are loaded before comparing, so that the compiler
	// selects with a conditional move: which one wins is a coin toss the
	// branch predictor would miss half the time.
	e, other := ea.e, eb.e
	var less bool
	switch {
	case p.latency:
		ref := p.lat.Unmeasured()
		la, lb := e.LatencyNanos(), other.LatencyNanos()
		if la <= 0 {
			la = ref
		}
		if lb <= 0 {
			lb = ref
		}
		less = float64(other.InFlight()+1)*eb.invW*lb < float64(e.InFlight()+1)*ea.invW*la
	case p.weighted:
		less = float64(other.InFlight()+1)*eb.invW < float64(e.InFlight()+1)*ea.invW
	default:
		less = other.InFlight() < e.InFlight()
	}
	if less {
		e = other
	}
	return e, nil
}
