package xdsserver

import (
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"

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

// callerZones is the server's caller-zone accounting: it counts, per
// Cluster name, the open streams subscribed to it by name whose node states
// a zone and declares wire.CallerZonesFeature, by zone, and decides which
// Clusters a push must re-render with new caller_zones.
//
// The streams' side (node, subscribe, closed) is called from the streams'
// goroutines (go-control-plane callbacks); each reports whether a count
// changed, so that the caller schedules a push. The push side (republish,
// forget) is called only from the push goroutine. No method blocks or calls
// out while holding mu.
type callerZones struct {
	gauge *prometheus.GaugeVec // fairway_xds_caller_streams{zone}
	from  time.Time            // when caller_zones may be published (end of the warm-up)

	mu      sync.Mutex
	streams map[streamID]*callerStream // guarded by mu
	// counts is, per Cluster name, the streams subscribed to it by name
	// that stated a zone, by zone.
	counts map[string]map[string]int // guarded by mu
	// zoneStreams counts the open streams that stated each zone.
	zoneStreams map[string]int // guarded by mu
	// dirty holds the Cluster names whose counts changed since the push
	// goroutine last took them.
	dirty map[string]bool // guarded by mu

	// Owned by the push goroutine.
	warmedUp bool // the push goroutine has seen from pass
	// published is, per Cluster name, the callers' distribution (zone to
	// thousandths) in the Cluster in the cache.
	published map[string]map[string]int
}

// callerStream is what callerZones keeps of one stream.
type callerStream struct {
	nodeSeen bool            // a request carrying a node has been seen
	zone     string          // the zone of the first node, "" when none or not a zone-aware caller
	clusters map[string]bool // Cluster names subscribed to by name
}

// newCallerZones returns an empty accounting that mirrors the open streams
// per zone in gauge and publishes no caller_zones before from.
func newCallerZones(gauge *prometheus.GaugeVec, from time.Time) *callerZones {
	return &callerZones{
		gauge:       gauge,
		from:        from,
		streams:     map[streamID]*callerStream{},
		counts:      map[string]map[string]int{},
		zoneStreams: map[string]int{},
		dirty:       map[string]bool{},
		published:   map[string]map[string]int{},
	}
}

// streamLocked returns the state of stream id, creating it. z.mu is held.
func (z *callerZones) streamLocked(id streamID) *callerStream {
	st, ok := z.streams[id]
	if !ok {
		st = &callerStream{}
		z.streams[id] = st
	}
	return st
}

// node records the zone the stream's node states, from the first request of
// the stream carrying a node (nil: nothing to record). A node without
// wire.CallerZonesFeature is not a zone-aware caller and counts for no
// zone. It reports whether a count changed.
func (z *callerZones) node(id streamID, node *corepb.Node) bool {
	if node == nil {
		return false
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	st := z.streamLocked(id)
	if st.nodeSeen {
		return false
	}
	st.nodeSeen = true
	zone := node.GetLocality().GetZone()
	if zone == "" || !slices.Contains(node.GetClientFeatures(), wire.CallerZonesFeature) {
		return false
	}
	st.zone = zone
	z.zoneStreamsLocked(zone, 1)
	for name := range st.clusters {
		z.countLocked(name, zone, 1)
	}
	return len(st.clusters) > 0
}

// subscribe applies a Cluster request of stream id to the set of Clusters
// it is subscribed to by name: a SotW request's names replace the set, a
// delta request subscribes to names and unsubscribes from unsubscribe. The
// wildcard counts for no Cluster. It reports whether a count changed.
func (z *callerZones) subscribe(id streamID, names, unsubscribe []string) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	st := z.streamLocked(id)
	if id.protocol == protoSotW {
		next := clusterNames(names)
		if maps.Equal(next, st.clusters) {
			return false // an ACK, or the same names again
		}
		return z.setClustersLocked(st, next)
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
	maps.Copy(next, clusterNames(names))
	return z.setClustersLocked(st, next)
}

// closed forgets stream id: it counts for nothing any more. It reports
// whether a count changed.
func (z *callerZones) closed(id streamID) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	st, ok := z.streams[id]
	if !ok {
		return false
	}
	delete(z.streams, id)
	if st.zone != "" {
		z.zoneStreamsLocked(st.zone, -1)
	}
	return z.setClustersLocked(st, nil)
}

// setClustersLocked replaces the set of Clusters st is subscribed to by
// name, adjusting the counts when st has a zone. It reports whether a count
// changed. z.mu is held.
func (z *callerZones) setClustersLocked(st *callerStream, clusters map[string]bool) bool {
	changed := false
	if st.zone != "" {
		for name := range st.clusters {
			if !clusters[name] {
				z.countLocked(name, st.zone, -1)
				changed = true
			}
		}
		for name := range clusters {
			if !st.clusters[name] {
				z.countLocked(name, st.zone, 1)
				changed = true
			}
		}
	}
	st.clusters = clusters
	return changed
}

// countLocked adds d to the streams of zone subscribed to Cluster name and
// marks name for the next push. z.mu is held.
func (z *callerZones) countLocked(name, zone string, d int) {
	byZone := z.counts[name]
	if byZone == nil {
		byZone = map[string]int{}
		z.counts[name] = byZone
	}
	byZone[zone] += d
	if byZone[zone] <= 0 {
		delete(byZone, zone)
	}
	if len(byZone) == 0 {
		delete(z.counts, name)
	}
	z.dirty[name] = true
}

// zoneStreamsLocked adds d to the open streams that stated zone and mirrors
// the count in the gauge, dropping the zone's series when it reaches 0 so
// that zones no client states any more (or made-up ones) do not pile up.
// z.mu is held.
func (z *callerZones) zoneStreamsLocked(zone string, d int) {
	n := z.zoneStreams[zone] + d
	if n <= 0 {
		delete(z.zoneStreams, zone)
		z.gauge.DeleteLabelValues(zone)
		return
	}
	z.zoneStreams[zone] = n
	z.gauge.WithLabelValues(zone).Set(float64(n))
}

// republish is the caller-zone step of a push of snap at now. clusters holds
// the Clusters the push renders for a topology change; republish adds those
// of snap whose callers alone changed since the last push and moved enough
// from the published distribution (callerZonesMoved), and returns the
// caller_zones every Cluster in clusters must carry (by name; a name
// without callers is absent) and how many Clusters it added. Before the
// warm-up ends no Cluster carries caller_zones; the first push after it
// looks at every Cluster with callers. It records the result as published.
// Called only from the push goroutine.
func (z *callerZones) republish(now time.Time, snap *topology.Snapshot, clusters map[string]*topology.Service) (zones map[string]map[string]float64, added int) {
	warm := !now.Before(z.from)
	if warm && !z.warmedUp {
		z.warmedUp = true
		z.markAllDirty()
	}
	dirty, cur := z.take(clusters)
	if !warm {
		dirty, cur = nil, nil
	}
	for name := range dirty {
		if clusters[name] != nil {
			continue
		}
		svc, ok := serviceOf(snap, name)
		if !ok || !callerZonesMoved(z.published[name], cur[name]) {
			continue
		}
		clusters[name] = svc
		added++
	}
	zones = make(map[string]map[string]float64, len(clusters))
	for name := range clusters {
		if len(cur[name]) == 0 {
			delete(z.published, name)
			continue
		}
		z.published[name] = cur[name]
		zones[name] = fractions(cur[name])
	}
	return zones, added
}

// forget drops what was published for the Clusters names, removed from the
// caches. Called only from the push goroutine.
func (z *callerZones) forget(names []string) {
	for _, name := range names {
		delete(z.published, name)
	}
}

// take returns the Cluster names whose counts changed since the last call,
// and the callers' distribution (in thousandths) of those names and of the
// names in also.
func (z *callerZones) take(also map[string]*topology.Service) (dirty map[string]bool, cur map[string]map[string]int) {
	z.mu.Lock()
	defer z.mu.Unlock()
	dirty = z.dirty
	z.dirty = map[string]bool{}
	cur = make(map[string]map[string]int, len(dirty)+len(also))
	for name := range dirty {
		cur[name] = permille(z.counts[name])
	}
	for name := range also {
		cur[name] = permille(z.counts[name])
	}
	return dirty, cur
}

// markAllDirty marks every Cluster with callers for the next push.
func (z *callerZones) markAllDirty() {
	z.mu.Lock()
	defer z.mu.Unlock()
	for name := range z.counts {
		z.dirty[name] = true
	}
}

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

// clusterNames is the set of Cluster names a request subscribes to by name:
// its resource names without the wildcard.
func clusterNames(names []string) map[string]bool {
	set := make(map[string]bool, len(names))
	for _, n := range names {
		if n != "" && n != "*" {
			set[n] = true
		}
	}
	return set
}

// serviceOf returns the service of snap whose Cluster is named name.
func serviceOf(snap *topology.Snapshot, name string) (*topology.Service, bool) {
	if strings.HasPrefix(name, "xdstp:") {
		return nil, false
	}
	key, ok := parseKey(name)
	if !ok {
		return nil, false
	}
	svc, ok := snap.Service(key)
	if !ok || svc.Key.ResourceName() != name {
		return nil, false
	}
	return svc, true
}

// parseKey parses an xDS resource name into the key of a service port.
func parseKey(name string) (topology.ServiceKey, bool) {
	k, err := wire.ParseResourceName(name)
	return topology.ServiceKey(k), err == nil
}
