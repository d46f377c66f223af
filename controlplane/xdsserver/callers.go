package xdsserver

import (
	"maps"
	"math"
	"strings"

	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/wire"
)

// CallerZonesMinMove is the smallest change of a zone's fraction of callers
// that republishes a Cluster's caller_zones (a zone appearing or
// disappearing always does). Smaller moves keep the published fractions, so
// a client connecting or leaving does not push a new Cluster to every
// subscriber.
const CallerZonesMinMove = 0.02

// callerZonesMinMovePermille is CallerZonesMinMove in thousandths, the unit
// fractions are rounded to and compared in.
const callerZonesMinMovePermille = CallerZonesMinMove * 1000

// callerZonesMoved reports whether the callers' distribution cur differs from
// the published one enough to republish: the set of zones changed, or a
// zone's fraction moved by callerZonesMinMovePermille or more. Both map zone
// to thousandths.
func callerZonesMoved(published, cur map[string]int) bool {
	if len(published) != len(cur) {
		return true
	}
	for zone, c := range cur {
		p, ok := published[zone]
		if !ok {
			return true
		}
		if d := c - p; d >= callerZonesMinMovePermille || -d >= callerZonesMinMovePermille {
			return true
		}
	}
	return false
}

// permille turns stream counts by zone into fractions in thousandths,
// rounded half away from zero. It returns nil when counts is empty.
func permille(counts map[string]int) map[string]int {
	total := 0
	for _, n := range counts {
		total += n
	}
	if total == 0 {
		return nil
	}
	out := make(map[string]int, len(counts))
	for zone, n := range counts {
		out[zone] = int(math.Round(float64(n) * 1000 / float64(total)))
	}
	return out
}

// fractions turns thousandths into the fractions translate.WithCallerZones
// takes.
func fractions(p map[string]int) map[string]float64 {
	if len(p) == 0 {
		return nil
	}
	out := make(map[string]float64, len(p))
	for zone, v := range p {
		out[zone] = float64(v) / 1000
	}
	return out
}

// clusterNames is the set of Cluster names a SotW request subscribes to by
// name: its resource names without the wildcard.
func clusterNames(names []string) map[string]bool {
	set := make(map[string]bool, len(names))
	for _, n := range names {
		if n != "" && n != "*" {
			set[n] = true
		}
	}
	return set
}

// setZoneLocked records the zone a stream's node states (once per stream)
// and counts the stream's subscriptions in it. It reports whether a count
// changed. streamsMu is held.
func (s *Server) setZoneLocked(st *streamState, zone string) bool {
	st.nodeSeen = true
	if zone == "" {
		return false
	}
	st.zone = zone
	s.zoneStreamsLocked(zone, 1)
	for name := range st.clusters {
		s.countCallerLocked(name, zone, 1)
	}
	return len(st.clusters) > 0
}

// zoneStreamsLocked adds d to the open streams that stated zone and
// mirrors the count in fairway_xds_caller_streams, dropping the zone's
// series when it reaches 0 so that zones no client states any more (or
// made-up ones) do not pile up. streamsMu is held.
func (s *Server) zoneStreamsLocked(zone string, d int) {
	n := s.zoneStreams[zone] + d
	if n <= 0 {
		delete(s.zoneStreams, zone)
		s.metrics.callerStreams.DeleteLabelValues(zone)
		return
	}
	s.zoneStreams[zone] = n
	s.metrics.callerStreams.WithLabelValues(zone).Set(float64(n))
}

// setClustersLocked replaces the set of Clusters st is subscribed to by
// name, adjusting the counts when st has a zone. It reports whether a count
// changed. streamsMu is held.
func (s *Server) setClustersLocked(st *streamState, clusters map[string]bool) bool {
	changed := false
	if st.zone != "" {
		for name := range st.clusters {
			if !clusters[name] {
				s.countCallerLocked(name, st.zone, -1)
				changed = true
			}
		}
		for name := range clusters {
			if !st.clusters[name] {
				s.countCallerLocked(name, st.zone, 1)
				changed = true
			}
		}
	}
	st.clusters = clusters
	return changed
}

// countCallerLocked adds d to the streams of zone subscribed to Cluster name
// and marks name for the next push. streamsMu is held.
func (s *Server) countCallerLocked(name, zone string, d int) {
	byZone := s.callers[name]
	if byZone == nil {
		byZone = map[string]int{}
		s.callers[name] = byZone
	}
	byZone[zone] += d
	if byZone[zone] <= 0 {
		delete(byZone, zone)
	}
	if len(byZone) == 0 {
		delete(s.callers, name)
	}
	s.callersDirty[name] = true
}

// callersChanged schedules a push for a change of callers. Called from a
// stream's goroutine without streamsMu held.
func (s *Server) callersChanged() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.scheduleLocked()
}

// takeCallers returns the Cluster names whose callers changed since the last
// call, and the callers' distribution (in thousandths) of those names and of
// the names in also. Called by the push goroutine.
func (s *Server) takeCallers(also map[string]*topology.Service) (dirty map[string]bool, cur map[string]map[string]int) {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	dirty = s.callersDirty
	s.callersDirty = map[string]bool{}
	cur = make(map[string]map[string]int, len(dirty)+len(also))
	for name := range dirty {
		cur[name] = permille(s.callers[name])
	}
	for name := range also {
		cur[name] = permille(s.callers[name])
	}
	return dirty, cur
}

// markAllCallersDirty marks every Cluster with callers for the next push.
func (s *Server) markAllCallersDirty() {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	for name := range s.callers {
		s.callersDirty[name] = true
	}
}

// serviceOf returns the service of snap whose Cluster is named name.
func serviceOf(snap *topology.Snapshot, name string) (*topology.Service, bool) {
	if strings.HasPrefix(name, "xdstp:") {
		return nil, false
	}
	key, err := wire.ParseResourceName(name)
	if err != nil {
		return nil, false
	}
	svc, ok := snap.Service(key)
	if !ok || svc.Key.ResourceName() != name {
		return nil, false
	}
	return svc, true
}

// subscribeLocked applies a Cluster request to the set of Clusters st is
// subscribed to by name: a SotW request's names replace the set, a delta
// request adds and removes names. The wildcard counts for no Cluster. It
// reports whether a count changed. streamsMu is held.
func (s *Server) subscribeLocked(st *streamState, protocol string, names, unsubscribe []string) bool {
	if protocol == protoSotW {
		next := clusterNames(names)
		if maps.Equal(next, st.clusters) {
			return false // an ACK, or the same names again
		}
		return s.setClustersLocked(st, next)
	}
	if len(names) == 0 && len(unsubscribe) == 0 {
		return false
	}
	next := maps.Clone(st.clusters)
	if next == nil {
		next = map[string]bool{}
	}
	for _, n := range unsubscribe {
		delete(next, n)
	}
	for _, n := range names {
		if n != "" && n != "*" {
			next[n] = true
		}
	}
	return s.setClustersLocked(st, next)
}
