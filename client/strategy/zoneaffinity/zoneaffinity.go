// Package zoneaffinity keeps traffic in the caller's zone and spills part of
// it to the other zones when the local zone is overloaded, unhealthy, or
// holds less of the service's capacity than its share of the callers.
//
// Build splits the candidates into local and remote sets and builds the
// inner strategy over each; a pick sends a request out of the zone with
// probability f, the spill fraction (one random draw, no clock, no lock).
// Tick adjusts f in steps of SpillStep:
//
//   - overload: when the local in-flight requests per endpoint exceed the
//     remote ones by more than SpillMargin (relative) and are at least
//     MinLoad, or when the local latency-weighted load exceeds the remote one
//     by more than LatencyMargin, f grows by one step; when both fall below
//     half their margins, f shrinks by one step; in between it holds
//     (hysteresis, no flapping). The latency margin is wider (50% by
//     default) because the two sides' estimates are not alike: a client
//     measures its local endpoints with most of its requests and the remote
//     ones with the few it spills, and a peak-EWMA estimate fed more samples
//     meets more peaks, so like zones look a few tens of percent apart. The latency-weighted load of a zone is the
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
//     usable);
//   - capacity (caller-aware, Envoy's zone-aware routing): the control plane
//     tells each client the fraction of the service's callers in each zone
//     (strategy.Set.CallerZones). With U_z the usable (not ejected) candidate
//     weight of zone z over the total usable weight, and C_z the callers'
//     fraction of zone z normalised over the zones that have candidates, the
//     local zone L keeps up to (1+CapacityMargin)·U_L/C_L of its callers'
//     traffic: the capacity part is 1 − (1+CapacityMargin)·U_L/C_L when
//     that is positive, else 0 (and 0 when C_L is 0 or the callers are
//     unknown). It moves toward that target by at most 4 × SpillStep per
//     tick, except that the first Build or Tick that sees caller
//     information (or a Build after the local zone appears among the
//     candidates) starts at the target directly. Config caller_aware: false
//     turns it off. CapacityMargin (default 0.05) lets a zone take up to 5% more than its
//     fair share of the load before it spills. The smaller the margin, the
//     more evenly like pods are loaded, and the more clients of the other
//     zones meet (and have to learn about, each on its own) the pods of a
//     zone with room, a slow or failing pod among them included. With
//     zones of 7/7/6 pods and callers a third each, margin 0.2 (Kubernetes'
//     topology-aware routing's tolerance) spills nothing and leaves each
//     pod of the 6-pod zone 1.11× the mean load; 0.05 spills 5.5% of that
//     zone's requests and leaves 1.05×; 0 (Envoy's zone-aware routing)
//     spills 10% and loads every pod alike. In simulation (docs/results.md,
//     "load_aware") going from 0.2 to 0.05 brought the share max/mean of
//     like pods from 1.17–1.21 to 1.04–1.09 and the p99 down 5–12%, with
//     4% of the requests crossing zones instead of none, and raised the
//     errors from a pod failing half its requests by about half (0.6% →
//     1.0%, 0.85% → 1.3%) and a 5× slow pod's p99 from 86–131 ms to
//     108–172 ms; 0 did worse on both counts than 0.05.
//
// f is the largest of the three parts. Without caller information, spilled
// requests go to the inner strategy over all remote endpoints. With it, a
// spilled request first chooses a remote zone with probability proportional
// to its excess capacity E_z = max(0, U_z − C_z) (proportional to U_z when no
// zone has any), then the inner strategy picks within that zone; the same
// random draw decides both. When every zone's callers and capacity match,
// nothing spills and every endpoint gets the same share of the traffic.
//
// Excluded endpoints (strategy.Endpoint.Excluded: an inner outlier's
// ejections) count as unusable. When the
// chosen side has nothing to offer, the other side answers. Without a local
// zone, or when only one side has endpoints, it behaves like the inner
// strategy.
package zoneaffinity

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/fairway-lb/fairway/client/strategy"
)

// Name is the strategy's name in chains.
const Name = "zone_affinity"

// SpillFraction is the name of the gauge (strategy.Gauges) in which the
// strategy publishes its spill fraction, the share of requests it sends out
// of the local zone.
const SpillFraction = "zone_spill_fraction"

// Config is zone_affinity's typed configuration.
type Config struct {
	// SpillMargin is how much more in-flight requests per endpoint
	// (relative, e.g. 0.2 = 20%) the local zone must have than the others to
	// spill. Default 0.2.
	SpillMargin float64 `json:"spill_margin"`
	// LatencyMargin is how much higher (relative) the local zone's
	// latency-weighted load must be than the others' to spill. Default 0.5.
	LatencyMargin float64 `json:"latency_margin"`
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
	// CapacityMargin is how much more than its fair share of the load
	// (relative) the local zone takes before the capacity part spills.
	// Default 0.05.
	CapacityMargin float64 `json:"capacity_margin"`
	// CallerAware enables the capacity part of the spill and the choice of
	// remote zones by excess capacity, from the callers per zone the control
	// plane sends. Default true.
	CallerAware bool `json:"caller_aware"`
}

func init() { strategy.Register(builder{}) }

type builder struct{}

func (builder) Name() string                { return Name }
func (builder) Position() strategy.Position { return strategy.Wrapper }

func (builder) ParseConfig(raw json.RawMessage) (any, error) {
	cfg := &Config{SpillMargin: 0.2, LatencyMargin: 0.5, MinLoad: 1, MinHealthyFraction: 0.7, SpillStep: 0.05, MaxSpill: 0.8, CapacityMargin: 0.05, CallerAware: true}
	if err := strategy.DecodeConfig(Name, raw, cfg); err != nil {
		return nil, err
	}
	switch {
	case cfg.SpillMargin < 0 || math.IsNaN(cfg.SpillMargin):
		return nil, fmt.Errorf("fairway/zone_affinity: spill_margin %v must be >= 0", cfg.SpillMargin)
	case cfg.CapacityMargin < 0 || math.IsNaN(cfg.CapacityMargin):
		return nil, fmt.Errorf("fairway/zone_affinity: capacity_margin %v must be >= 0", cfg.CapacityMargin)
	case cfg.LatencyMargin < 0 || math.IsNaN(cfg.LatencyMargin):
		return nil, fmt.Errorf("fairway/zone_affinity: latency_margin %v must be >= 0", cfg.LatencyMargin)
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
	return &zone{cfg: *cfg.(*Config), inner: inner, rand: opts.Rand, spillGauge: opts.Gauges.Gauge(SpillFraction)}
}

type zone struct {
	cfg        Config
	inner      strategy.Strategy
	rand       func() uint64
	spillGauge *strategy.Gauge

	// Touched only from Build/Tick (serialized by the balancer).
	overload float64     // overload part of the spill fraction
	health   float64     // health part of the spill fraction
	capacity float64     // capacity (caller-aware) part of the spill fraction
	capKnown bool        // capacity was set from caller information
	scratch  []zoneShare // reused by Tick
}

// Spill returns the current spill fraction.
func (z *zone) spill() float64 { return max(z.overload, z.health, z.capacity) }

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
		z.updateCapacity(0, false)
		z.spillGauge.Set(0)
		return z.inner.Build(set)
	}
	local, remote := split(set)
	if len(local) == 0 {
		z.updateCapacity(0, false) // starts at the target when the zone comes back
		z.spillGauge.Set(1)
		return z.inner.Build(set)
	}
	zs, usable, callers := shares(set, nil)
	target, defined := z.capacityTarget(set, zs, usable, callers)
	if !defined || !z.capKnown {
		z.updateCapacity(target, defined)
	}
	if len(remote) == 0 {
		z.spillGauge.Set(0)
		return z.inner.Build(set)
	}
	f := z.spill()
	z.spillGauge.Set(f)
	ls, rs := set, set
	ls.Cands, rs.Cands = local, remote
	lp := z.inner.Build(ls)
	if f == 0 && anyUsable(local, set.Now) {
		return lp // no spill, and the local side can answer: no layer at all
	}
	rp := z.inner.Build(rs)
	threshold := strategy.Threshold(f)
	if defined && len(zs) > 2 {
		if zp := z.zonedPicker(set, zs, usable, callers, remote, threshold); zp != nil {
			zp.local, zp.remote = lp, rp
			return zp
		}
	}
	return &picker{rand: z.rand, threshold: threshold, local: lp, remote: rp}
}

// zonedPicker builds one inner picker per remote zone that gets spilled
// requests, drawn in proportion to the zones' excess capacity (or usable
// capacity when no zone has excess). It returns nil when no remote zone has
// usable capacity; the caller fills in local and remote.
func (z *zone) zonedPicker(set strategy.Set, zs []zoneShare, usable, callers float64, remote []strategy.Candidate, threshold uint64) *zonedPicker {
	if usable <= 0 {
		return nil
	}
	weights := make([]float64, len(zs))
	var total float64
	for i, s := range zs {
		if s.zone == set.LocalZone {
			continue
		}
		c := 0.0
		if callers > 0 {
			c = s.callers / callers
		}
		weights[i] = max(0, s.usable/usable-c)
		total += weights[i]
	}
	if total <= 0 {
		for i, s := range zs {
			if s.zone != set.LocalZone {
				weights[i] = s.usable / usable
				total += weights[i]
			}
		}
	}
	if total <= 0 {
		return nil
	}
	p := &zonedPicker{rand: z.rand, threshold: threshold}
	var cum float64
	for i, s := range zs {
		if weights[i] <= 0 {
			continue
		}
		cum += weights[i]
		var cands []strategy.Candidate
		for _, c := range remote {
			if c.E.Info.Zone == s.zone {
				cands = append(cands, c)
			}
		}
		zset := set
		zset.Cands = cands
		p.zones = append(p.zones, z.inner.Build(zset))
		p.cum = append(p.cum, uint64(float64(threshold)*(cum/total)))
	}
	p.cum[len(p.cum)-1] = threshold // every spilled draw lands in a zone
	return p
}

// anyUsable reports whether some candidate is not ejected at now.
func anyUsable(cs []strategy.Candidate, now time.Time) bool {
	for _, c := range cs {
		if !c.E.Excluded(now) {
			return true
		}
	}
	return false
}
