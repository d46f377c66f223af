// Package slowstart ramps the weight of new endpoints, as Envoy's slow start
// does: an endpoint t into its window carries
//
//	weight × max(min_weight_percent/100, (t/window)^(1/aggression))
//
// Endpoints present in the client's first resolver update are not ramped.
// The factors are computed in Build; while some endpoint is ramping, Tick asks
// for a rebuild, so the pick path never reads the clock.
package slowstart

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/fairway-lb/fairway/client/strategy"
)

// Name is the strategy's name in chains.
const Name = "slow_start"

// Config is slow_start's typed configuration.
type Config struct {
	// Window is the ramp length. Default 30s; 0 turns slow start off.
	Window strategy.Duration `json:"window"`
	// Aggression shapes the curve (> 0; 1 is linear). Default 1.
	Aggression float64 `json:"aggression"`
	// MinWeightPercent is the floor of the ramp, 0–100. Default 10.
	MinWeightPercent float64 `json:"min_weight_percent"`
}

func init() { strategy.Register(builder{}) }

type builder struct{}

func (builder) Name() string                { return Name }
func (builder) Position() strategy.Position { return strategy.Wrapper }

func (builder) ParseConfig(raw json.RawMessage) (any, error) {
	cfg := &Config{Window: strategy.Duration(30 * time.Second), Aggression: 1, MinWeightPercent: 10}
	if err := strategy.DecodeConfig(Name, raw, cfg); err != nil {
		return nil, err
	}
	switch {
	case cfg.Window < 0:
		return nil, fmt.Errorf("fairway/slow_start: window %v must not be negative", time.Duration(cfg.Window))
	case cfg.Aggression <= 0 || math.IsNaN(cfg.Aggression):
		return nil, fmt.Errorf("fairway/slow_start: aggression %v must be > 0", cfg.Aggression)
	case cfg.MinWeightPercent < 0 || cfg.MinWeightPercent > 100:
		return nil, fmt.Errorf("fairway/slow_start: min_weight_percent %v must be within 0–100", cfg.MinWeightPercent)
	}
	return cfg, nil
}

func (builder) Build(cfg any, inner strategy.Strategy, _ strategy.BuildOptions) strategy.Strategy {
	return &slowStart{cfg: *cfg.(*Config), inner: inner}
}

// Factor returns the weight multiplier of an endpoint age into the ramp
// (Envoy's formula). It is 1 from the end of the window on.
func (c *Config) Factor(age time.Duration) float64 {
	w := time.Duration(c.Window)
	if w <= 0 || age >= w {
		return 1
	}
	if age < 0 {
		age = 0
	}
	f := math.Pow(float64(age)/float64(w), 1/c.Aggression)
	return max(c.MinWeightPercent/100, f)
}

type slowStart struct {
	cfg   Config
	inner strategy.Strategy
	// ramping is true when some endpoint was ramping at the last Tick
	// (touched only from Tick, which the balancer serializes).
	ramping bool
}

func (s *slowStart) ramps(e *strategy.Endpoint, now time.Time) bool {
	return !e.Initial && now.Sub(e.Added) < time.Duration(s.cfg.Window)
}

func (s *slowStart) Build(set strategy.Set) strategy.Picker {
	out := make([]strategy.Candidate, len(set.Cands))
	for i, c := range set.Cands {
		if s.ramps(c.E, set.Now) {
			c.Weight *= s.cfg.Factor(set.Now.Sub(c.E.Added))
		}
		c.E.SetEffectiveWeight(c.Weight)
		out[i] = c
	}
	set.Cands = out
	return s.inner.Build(set)
}

func (s *slowStart) Tick(set strategy.Set) bool {
	rebuild := s.inner.Tick(set)
	ramping := false
	for _, c := range set.Cands {
		if s.ramps(c.E, set.Now) {
			ramping = true
			break
		}
	}
	// Rebuild while factors move, and once more when the last ramp ends.
	rebuild = rebuild || ramping || s.ramping
	s.ramping = ramping
	return rebuild
}
