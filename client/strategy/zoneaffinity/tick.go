package zoneaffinity

import (
	"math"

	"github.com/fairway-lb/fairway/client/strategy"
)

// Tick's adjustment of the overload and health parts of the spill: see the
// package comment.

func (z *zone) Tick(set strategy.Set) bool {
	rebuild := z.inner.Tick(set)
	if set.LocalZone == "" {
		return rebuild
	}
	before := z.spill()
	// Capacity: the scratch slice keeps Tick from allocating.
	zs, usable, callers := shares(set, z.scratch)
	z.scratch = zs
	capTarget, defined := z.capacityTarget(set, zs, usable, callers)
	z.updateCapacity(capTarget, defined)

	l := measure(set)
	if l.nLocal == 0 || l.nRemote == 0 {
		// Nothing to balance between; Build routes to whichever side exists.
		z.overload = 0
		z.health = 0
		if l.nLocal == 0 && l.nRemote > 0 {
			z.health = 1
		}
		z.spillGauge.Set(z.spill())
		return rebuild || z.spill() != before
	}
	z.updateHealth(l)
	z.updateOverload(l)
	z.overload = round(z.overload)
	z.health = round(z.health)
	z.spillGauge.Set(z.spill())
	return rebuild || z.spill() != before
}

// loads are the usable (not excluded) candidates of each side at one Tick.
type loads struct {
	nLocal, nRemote       int
	loadLocal, loadRemote int64 // in-flight requests
	local, remote         latLoad
	localAll              int // local endpoints, usable or not
}

// measure counts each side's usable candidates and their loads, without
// allocating: Tick runs every few hundred milliseconds.
func measure(set strategy.Set) loads {
	var l loads
	for _, c := range set.Cands {
		if c.E.Excluded(set.Now) {
			continue // an inner outlier keeps it out: not usable
		}
		inflight := c.E.InFlight()
		lat := float64(c.E.Latency())
		if c.E.Info.Zone == set.LocalZone {
			l.nLocal++
			l.loadLocal += inflight
			l.local.add(lat, inflight, c.Weight)
		} else {
			l.nRemote++
			l.loadRemote += inflight
			l.remote.add(lat, inflight, c.Weight)
		}
	}
	for _, e := range set.All {
		if e.Info.Zone == set.LocalZone {
			l.localAll++
		}
	}
	return l
}

// updateHealth moves the health part one step toward
// 1 − healthy/MinHealthyFraction when the usable local share is below the
// threshold, else toward 0.
func (z *zone) updateHealth(l loads) {
	target := 0.0
	if hf := float64(l.nLocal) / float64(max(l.localAll, 1)); hf < z.cfg.MinHealthyFraction {
		target = 1 - hf/z.cfg.MinHealthyFraction
	}
	z.health = approach(z.health, target, z.cfg.SpillStep)
}

// updateOverload grows the overload part when the local side is
// overloaded on in-flight counts or on latency, and shrinks it when both
// are well below their margins (hysteresis).
func (z *zone) updateOverload(l loads) {
	lload, rload := float64(l.loadLocal)/float64(l.nLocal), float64(l.loadRemote)/float64(l.nRemote)
	inflightHigh := lload >= z.cfg.MinLoad && lload > rload*(1+z.cfg.SpillMargin)
	inflightLow := lload < z.cfg.MinLoad || lload < rload*(1+z.cfg.SpillMargin/2)
	latHigh, latLow := false, true
	step := z.cfg.SpillStep
	if llat, rlat := l.local.mean(), l.remote.mean(); llat > 0 && rlat > 0 {
		over := llat / (rlat * (1 + z.cfg.LatencyMargin))
		latHigh = over > 1
		latLow = llat < rlat*(1+z.cfg.LatencyMargin/2)
		// Far above the margin, grow faster: up to maxStepFactor steps.
		step *= min(max(over, 1), maxStepFactor)
	}
	switch {
	case inflightHigh || latHigh:
		z.overload = min(z.overload+step, z.cfg.MaxSpill)
	case inflightLow && latLow:
		z.overload = max(z.overload-z.cfg.SpillStep, 0)
	}
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
