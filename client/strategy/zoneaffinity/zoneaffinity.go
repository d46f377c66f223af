// Package zoneaffinity keeps traffic in the caller's zone and spills part of
// it to the other zones when the local zone is overloaded or unhealthy.
//
// Build splits the candidates into local and remote sets and builds the
// inner strategy over each; a pick sends a request out of the zone with
// probability f, the spill fraction (one random draw, no clock, no lock).
// Tick adjusts f in steps of SpillStep:
//
//   - overload: when the local in-flight requests per endpoint exceed the
//     remote ones by more than SpillMargin (relative) and are at least
//     MinLoad, or when the local latency-weighted load exceeds the remote one
//     by more than SpillMargin, f grows by one step; when both fall below
//     half that margin, f shrinks by one step; in between it holds
//     (hysteresis, no flapping). The latency-weighted load of a zone is the
//     weighted harmonic mean over its endpoints of latency estimate times
//     one more than the in-flight count: the latency a request meets when
//     the zone's endpoints are used in proportion to their speed. One slow
//     endpoint raises it in proportion to the capacity it takes away, not by
//     its own latency, and queueing on the others raises it too. It needs
//     latency estimates on both sides (a latency-aware inner p2c); remote
//     endpoints are measured once traffic spills, so the in-flight signal
//     (or the health one) starts a spill and the latency signal then sizes
//     it. Far above the margin the fraction grows by up to 4 steps a tick.
//     With many clients each sending a few requests
//     at a time, in-flight counts are mostly 0 and only the latency signal
//     sees a slow zone;
//   - health: when the fraction of local endpoints that are usable falls
//     below MinHealthyFraction, f is at least 1 − healthy/MinHealthyFraction,
//     approached one step per tick (at once to 1 when no local endpoint is
//     usable).
//
// Endpoints ejected by an inner outlier strategy count as unusable. When the
// chosen side has nothing to offer, the other side answers. Without a local
// zone, or when only one side has endpoints, it behaves like the inner
// strategy.
package zoneaffinity

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/fairway-lb/fairway/client/strategy"
)

// Name is the strategy's name in chains.
const Name = "zone_affinity"

// Config is zone_affinity's typed configuration.
type Config struct {
	// SpillMargin is how much more loaded (relative, e.g. 0.2 = 20%) the
	// local zone's endpoints must be than the others' to spill. Default 0.2.
	SpillMargin float64 `json:"spill_margin"`
	// MinLoad is the local in-flight requests per endpoint below which the
	// zone never counts as overloaded. Default 1.
	MinLoad float64 `json:"min_load"`
	// MinHealthyFraction is the share of usable local endpoints below which
	// traffic spills. Default 0.7.
	MinHealthyFraction float64 `json:"min_healthy_fraction"`
	// SpillStep is how much the spill fraction moves per tick. Default 0.05.
	SpillStep float64 `json:"spill_step"`
	// MaxSpill caps the overload spill fraction. Default 0.8.
	MaxSpill float64 `json:"max_spill"`
}

func init() { strategy.Register(builder{}) }

type builder struct{}

func (builder) Name() string                { return Name }
func (builder) Position() strategy.Position { return strategy.Wrapper }

func (builder) ParseConfig(raw json.RawMessage) (any, error) {
	cfg := &Config{SpillMargin: 0.2, MinLoad: 1, MinHealthyFraction: 0.7, SpillStep: 0.05, MaxSpill: 0.8}
	if err := strategy.DecodeConfig(Name, raw, cfg); err != nil {
		return nil, err
	}
	switch {
	case cfg.SpillMargin < 0 || math.IsNaN(cfg.SpillMargin):
		return nil, fmt.Errorf("fairway/zone_affinity: spill_margin %v must be >= 0", cfg.SpillMargin)
	case cfg.MinLoad < 0:
		return nil, fmt.Errorf("fairway/zone_affinity: min_load %v must be >= 0", cfg.MinLoad)
	case cfg.MinHealthyFraction < 0 || cfg.MinHealthyFraction > 1:
		return nil, fmt.Errorf("fairway/zone_affinity: min_healthy_fraction %v must be within 0–1", cfg.MinHealthyFraction)
	case cfg.SpillStep <= 0 || cfg.SpillStep > 1:
		return nil, fmt.Errorf("fairway/zone_affinity: spill_step %v must be within (0, 1]", cfg.SpillStep)
	case cfg.MaxSpill < 0 || cfg.MaxSpill > 1:
		return nil, fmt.Errorf("fairway/zone_affinity: max_spill %v must be within 0–1", cfg.MaxSpill)
	}
	return cfg, nil
}

func (builder) Build(cfg any, inner strategy.Strategy, opts strategy.BuildOptions) strategy.Strategy {
	return &zone{cfg: *cfg.(*Config), inner: inner, rand: opts.Rand, stats: opts.Stats}
}

type zone struct {
	cfg   Config
	inner strategy.Strategy
	rand  func() uint64
	stats *strategy.Stats

	// Touched only from Build/Tick (serialized by the balancer).
	overload float64 // overload part of the spill fraction
	health   float64 // health part of the spill fraction
}

// Spill returns the current spill fraction.
func (z *zone) spill() float64 { return max(z.overload, z.health) }

func split(set strategy.Set) (local, remote []strategy.Candidate) {
	for _, c := range set.Cands {
		if c.E.Info.Zone == set.LocalZone {
			local = append(local, c)
		} else {
			remote = append(remote, c)
		}
	}
	return local, remote
}

func (z *zone) Build(set strategy.Set) strategy.Picker {
	if set.LocalZone == "" {
		z.stats.SetSpillFraction(0)
		return z.inner.Build(set)
	}
	local, remote := split(set)
	switch {
	case len(local) == 0:
		z.stats.SetSpillFraction(1)
		return z.inner.Build(set)
	case len(remote) == 0:
		z.stats.SetSpillFraction(0)
		return z.inner.Build(set)
	}
	f := z.spill()
	z.stats.SetSpillFraction(f)
	ls, rs := set, set
	ls.Cands, rs.Cands = local, remote
	lp := z.inner.Build(ls)
	if f == 0 && anyUsable(local, set.Now) {
		return lp // no spill, and the local side can answer: no layer at all
	}
	return &picker{rand: z.rand, threshold: strategy.Threshold(f), local: lp, remote: z.inner.Build(rs)}
}

// anyUsable reports whether some candidate is not ejected at now.
func anyUsable(cs []strategy.Candidate, now time.Time) bool {
	for _, c := range cs {
		if !c.E.Ejected(now) {
			return true
		}
	}
	return false
}

func (z *zone) Tick(set strategy.Set) bool {
	rebuild := z.inner.Tick(set)
	if set.LocalZone == "" {
		return rebuild
	}
	before := z.spill()
	// Count without allocating: Tick runs every few hundred milliseconds.
	var nLocal, nRemote int
	var loadLocal, loadRemote int64
	var local, remote latLoad
	for _, c := range set.Cands {
		if c.E.Ejected(set.Now) {
			continue // an inner outlier keeps it out: not usable
		}
		inflight := c.E.InFlight()
		lat := float64(c.E.Latency())
		if c.E.Info.Zone == set.LocalZone {
			nLocal++
			loadLocal += inflight
			local.add(lat, inflight, c.Weight)
		} else {
			nRemote++
			loadRemote += inflight
			remote.add(lat, inflight, c.Weight)
		}
	}
	localAll := 0
	for _, e := range set.All {
		if e.Info.Zone == set.LocalZone {
			localAll++
		}
	}
	if nLocal == 0 || nRemote == 0 {
		// Nothing to balance between; Build routes to whichever side exists.
		z.overload = 0
		z.health = 0
		if nLocal == 0 && nRemote > 0 {
			z.health = 1
		}
		z.stats.SetSpillFraction(z.spill())
		return rebuild || z.spill() != before
	}

	// Health: target 1 − healthy/MinHealthyFraction below the threshold.
	target := 0.0
	if hf := float64(nLocal) / float64(max(localAll, 1)); hf < z.cfg.MinHealthyFraction {
		target = 1 - hf/z.cfg.MinHealthyFraction
	}
	z.health = approach(z.health, target, z.cfg.SpillStep)

	// Overload, with hysteresis, on in-flight counts and on latency.
	lload, rload := float64(loadLocal)/float64(nLocal), float64(loadRemote)/float64(nRemote)
	inflightHigh := lload >= z.cfg.MinLoad && lload > rload*(1+z.cfg.SpillMargin)
	inflightLow := lload < z.cfg.MinLoad || lload < rload*(1+z.cfg.SpillMargin/2)
	latHigh, latLow := false, true
	step := z.cfg.SpillStep
	if llat, rlat := local.mean(), remote.mean(); llat > 0 && rlat > 0 {
		over := llat / (rlat * (1 + z.cfg.SpillMargin))
		latHigh = over > 1
		latLow = llat < rlat*(1+z.cfg.SpillMargin/2)
		// Far above the margin, grow faster: up to maxStepFactor steps.
		step *= min(max(over, 1), maxStepFactor)
	}
	switch {
	case inflightHigh || latHigh:
		z.overload = min(z.overload+step, z.cfg.MaxSpill)
	case inflightLow && latLow:
		z.overload = max(z.overload-z.cfg.SpillStep, 0)
	}
	z.overload = round(z.overload)
	z.health = round(z.health)
	z.stats.SetSpillFraction(z.spill())
	return rebuild || z.spill() != before
}

// maxStepFactor bounds how many SpillSteps the spill fraction grows by in
// one Tick when the local latency-weighted load is far above the remote one.
const maxStepFactor = 4

// latLoad accumulates a zone's weighted harmonic mean of latency ×
// (in-flight + 1) over the endpoints with a latency estimate.
type latLoad struct{ weight, speed float64 }

func (l *latLoad) add(lat float64, inflight int64, weight float64) {
	if lat <= 0 || weight <= 0 {
		return
	}
	l.weight += weight
	l.speed += weight / (lat * float64(inflight+1))
}

// mean returns the zone's latency-weighted load; 0 without estimates.
func (l *latLoad) mean() float64 {
	if l.speed == 0 {
		return 0
	}
	return l.weight / l.speed
}

func approach(cur, target, step float64) float64 {
	switch {
	case cur < target:
		return min(cur+step, target)
	case cur > target:
		return max(cur-step, target)
	}
	return cur
}

// round trims float noise from repeated steps.
func round(f float64) float64 { return math.Round(f*1e6) / 1e6 }

// picker is immutable.
type picker struct {
	rand          func() uint64
	threshold     uint64
	local, remote strategy.Picker
}

// Pick draws a random number only while spilling; when the chosen side has
// nothing to offer (say, an inner outlier ejected it all), the other answers.
func (p *picker) Pick(ctx context.Context) (*strategy.Endpoint, error) {
	first, second := p.local, p.remote
	if p.threshold != 0 && p.rand() < p.threshold {
		first, second = p.remote, p.local
	}
	if e, err := first.Pick(ctx); err == nil {
		return e, nil
	}
	return second.Pick(ctx)
}
