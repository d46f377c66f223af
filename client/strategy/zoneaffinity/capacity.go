package zoneaffinity

import "github.com/fairway-lb/fairway/client/strategy"

// The capacity part of the spill (caller-aware): see the package comment.

// zoneShare is one zone's part of the candidates and of the callers.
type zoneShare struct {
	zone    string
	usable  float64 // weight of the zone's candidates not ejected
	callers float64 // set.CallerZones[zone], not normalised
}

// shares appends one zoneShare per zone that has candidates, in order of
// first appearance, and returns them with the total usable weight and the
// total of the callers' fractions over those zones.
func shares(set strategy.Set, dst []zoneShare) (zs []zoneShare, usable, callers float64) {
	zs = dst[:0]
	for _, c := range set.Cands {
		i := 0
		for i < len(zs) && zs[i].zone != c.E.Info.Zone {
			i++
		}
		if i == len(zs) {
			zs = append(zs, zoneShare{zone: c.E.Info.Zone, callers: set.CallerZones[c.E.Info.Zone]})
			callers += zs[i].callers
		}
		if !c.E.Excluded(set.Now) && c.Weight > 0 {
			zs[i].usable += c.Weight
			usable += c.Weight
		}
	}
	return zs, usable, callers
}

// capacityTarget returns the capacity spill target and whether it is
// defined: caller-aware, callers known, and the local zone has candidates.
func (z *zone) capacityTarget(set strategy.Set, zs []zoneShare, usable, callers float64) (float64, bool) {
	if !z.cfg.CallerAware || set.CallerZones == nil || set.LocalZone == "" {
		return 0, false
	}
	for _, s := range zs {
		if s.zone != set.LocalZone {
			continue
		}
		if callers <= 0 || s.callers <= 0 || usable <= 0 {
			return 0, true
		}
		keep := (1 + z.cfg.CapacityMargin) * (s.usable / usable) / (s.callers / callers)
		if keep >= 1 {
			return 0, true
		}
		return round(1 - keep), true
	}
	return 0, false
}

// updateCapacity moves the capacity part toward target, at once when it was
// not known before; defined false clears it.
func (z *zone) updateCapacity(target float64, defined bool) {
	switch {
	case !defined:
		z.capacity, z.capKnown = 0, false
	case !z.capKnown:
		z.capacity, z.capKnown = target, true
	default:
		z.capacity = round(approach(z.capacity, target, maxStepFactor*z.cfg.SpillStep))
	}
}
