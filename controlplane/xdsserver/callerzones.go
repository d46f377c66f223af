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
	"k8s.io/utils/clock"

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

// DefaultCallerZonesInterval is the default shortest time between two
// republishes of one Cluster for a change of its callers alone
// (WithCallerZonesInterval): whatever clients do, a subscriber receives at
// most one such update of a Cluster per interval. It matches the default
// warm-up of `fairway controlplane`: callers are published about as late
// after they connect as after a restart.
const DefaultCallerZonesInterval = 5 * time.Second

// otherZone is the fairway_xds_caller_streams label of the streams whose
// node states a zone that no endpoint of the topology is in: they count for
// no Cluster, and made-up zones add no series.
const otherZone = "(other)"

// callerZones is the server's caller-zone accounting: it counts, per
// Cluster name, the nodes (by node id) with a stream subscribed to it by
// name that state a zone and declare wire.CallerZonesFeature, by zone, and
// decides which Clusters a push must re-render with new caller_zones.
//
// One node id is one vote, however many streams it opens: its zone is the
// one its first counted stream states, kept while any of its streams is
// open (later streams stating another zone count for the first), and a
// Cluster counts it once while any of its streams subscribes to it. Only
// zones that endpoints of the pushed topology are in count. A Cluster is
// republished for its callers alone at most once per interval.
//
// The streams' side (node, subscribe, closed) is called from the streams'
// goroutines (go-control-plane callbacks); each reports whether a count
// changed, so that the caller schedules a push. The push side (republish,
// forget, stop) is called only from the push goroutine (stop: once it has
// ended). No method blocks or calls out while holding mu.
type callerZones struct {
	// immutable
	gauge    *prometheus.GaugeVec // fairway_xds_caller_streams{zone}
	from     time.Time            // when caller_zones may be published (end of the warm-up)
	interval time.Duration        // shortest time between two caller-only republishes of a Cluster
	clock    clock.WithDelayedExecution
	kick     func() // wakes the push goroutine; only sends on a channel

	mu      sync.Mutex
	streams map[streamID]*callerStream // guarded by mu
	nodes   map[string]*callerNode     // guarded by mu: nodes with a counted stream, by id
	// counts is, per Cluster name, the nodes with a stream subscribed to it
	// by name, by zone.
	counts map[string]map[string]int // guarded by mu
	// zoneStreams counts the open streams counted for each zone (their
	// node's), real or not.
	zoneStreams map[string]int // guarded by mu
	// real holds the zones of the pushed topology's endpoints; nil before
	// the first push.
	real map[string]bool // guarded by mu
	// other is the sum of zoneStreams over the zones not in real.
	other int // guarded by mu
	// dirty holds the Cluster names whose counts changed since the push
	// goroutine last took them.
	dirty map[string]bool // guarded by mu

	// Owned by the push goroutine.
	warmedUp  bool               // the push goroutine has seen from pass
	zonesSnap *topology.Snapshot // the snapshot real was computed from
	// published is, per Cluster name, the callers' distribution (zone to
	// thousandths) in the Cluster in the cache.
	published map[string]map[string]int
	// republished is, per Cluster name, when it was last republished for
	// its callers alone.
	republished map[string]time.Time
	timer       clock.Timer // kicks a push for the republishes held back by interval
	timerAt     time.Time   // when timer fires; zero: not armed
}

// callerStream is what callerZones keeps of one stream.
type callerStream struct {
	nodeSeen bool            // a request carrying a node has been seen
	node     *callerNode     // the node it counts for; nil: none (no zone, not a zone-aware caller, no id)
	nodeID   string          // node's id
	clusters map[string]bool // Cluster names subscribed to by name
}

// callerNode is one vote: a node id with at least one counted stream.
type callerNode struct {
	zone     string
	streams  int            // its open counted streams
	clusters map[string]int // Cluster name → its streams subscribed to it
}

// callerZonesConfig is what newCallerZones needs.
type callerZonesConfig struct {
	gauge    *prometheus.GaugeVec // fairway_xds_caller_streams{zone}
	from     time.Time            // end of the warm-up
	interval time.Duration        // shortest time between caller-only republishes of a Cluster
	clock    clock.WithDelayedExecution
	kick     func() // wakes the push goroutine; must not block
}

// newCallerZones returns an empty accounting.
func newCallerZones(c callerZonesConfig) *callerZones {
	return &callerZones{
		gauge:       c.gauge,
		from:        c.from,
		interval:    c.interval,
		clock:       c.clock,
		kick:        c.kick,
		streams:     map[streamID]*callerStream{},
		nodes:       map[string]*callerNode{},
		counts:      map[string]map[string]int{},
		zoneStreams: map[string]int{},
		dirty:       map[string]bool{},
		published:   map[string]map[string]int{},
		republished: map[string]time.Time{},
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

// node records the node of stream id, from the first request of the stream
// carrying a node (nil: nothing to record). A stream counts for its node
// when the node has an id, declares wire.CallerZonesFeature and states a
// zone; the node's zone is the one its first counted stream stated. It
// reports whether a count changed.
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
	if zone == "" || node.GetId() == "" || !slices.Contains(node.GetClientFeatures(), wire.CallerZonesFeature) {
		return false
	}
	n := z.nodes[node.GetId()]
	if n == nil {
		n = &callerNode{zone: zone, clusters: map[string]int{}}
		z.nodes[node.GetId()] = n
	}
	n.streams++
	st.node, st.nodeID = n, node.GetId()
	z.zoneStreamsLocked(n.zone, 1)
	changed := false
	for name := range st.clusters {
		changed = z.voteLocked(n, name, 1) || changed
	}
	return changed
}

// subscribe applies a Cluster request of stream id to the set of Clusters
// it is subscribed to by name: a SotW request's names replace the set, a
// delta request subscribes to names, then unsubscribes from unsubscribe (as
// go-control-plane does). The wildcard counts for no Cluster. It reports
// whether a count changed.
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
	// In place: the work is that of the request, not of the set.
	if st.clusters == nil {
		st.clusters = map[string]bool{}
	}
	var gone map[string]bool
	if len(unsubscribe) > 0 {
		gone = make(map[string]bool, len(unsubscribe))
		for _, n := range unsubscribe {
			gone[n] = true
		}
	}
	changed := false
	for _, n := range names {
		if n == "" || n == "*" || gone[n] || st.clusters[n] {
			continue
		}
		st.clusters[n] = true
		if st.node != nil {
			changed = z.voteLocked(st.node, n, 1) || changed
		}
	}
	for n := range gone {
		if !st.clusters[n] {
			continue
		}
		delete(st.clusters, n)
		if st.node != nil {
			changed = z.voteLocked(st.node, n, -1) || changed
		}
	}
	return changed
}

// closed forgets stream id: it counts for nothing any more, and its node
// goes with its last counted stream. It reports whether a count changed.
func (z *callerZones) closed(id streamID) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	st, ok := z.streams[id]
	if !ok {
		return false
	}
	delete(z.streams, id)
	changed := z.setClustersLocked(st, nil)
	if n := st.node; n != nil {
		z.zoneStreamsLocked(n.zone, -1)
		if n.streams--; n.streams == 0 {
			delete(z.nodes, st.nodeID)
		}
	}
	return changed
}

// setClustersLocked replaces the set of Clusters st is subscribed to by
// name, adjusting its node's votes. It reports whether a count changed.
// z.mu is held.
func (z *callerZones) setClustersLocked(st *callerStream, clusters map[string]bool) bool {
	changed := false
	if n := st.node; n != nil {
		for name := range st.clusters {
			if !clusters[name] {
				changed = z.voteLocked(n, name, -1) || changed
			}
		}
		for name := range clusters {
			if !st.clusters[name] {
				changed = z.voteLocked(n, name, 1) || changed
			}
		}
	}
	st.clusters = clusters
	return changed
}

// voteLocked adds d to the streams of node n subscribed to Cluster name; n
// counts for name while that is positive. It reports whether a count
// changed. z.mu is held.
func (z *callerZones) voteLocked(n *callerNode, name string, d int) bool {
	before := n.clusters[name]
	after := before + d
	if after <= 0 {
		delete(n.clusters, name)
	} else {
		n.clusters[name] = after
	}
	switch {
	case before == 0 && after > 0:
		z.countLocked(name, n.zone, 1)
		return true
	case before > 0 && after <= 0:
		z.countLocked(name, n.zone, -1)
		return true
	}
	return false
}

// countLocked adds d to the nodes of zone subscribed to Cluster name and
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

// zoneStreamsLocked adds d to the open streams counted for zone and mirrors
// it in the gauge. z.mu is held.
func (z *callerZones) zoneStreamsLocked(zone string, d int) {
	if z.zoneStreams[zone] += d; z.zoneStreams[zone] <= 0 {
		delete(z.zoneStreams, zone)
	}
	if z.real[zone] {
		z.gaugeLocked(zone, z.zoneStreams[zone])
		return
	}
	z.other += d
	z.gaugeLocked(otherZone, z.other)
}

// gaugeLocked sets the gauge's series label to n, dropping it at 0 so that
// zones no client states any more do not pile up. z.mu is held.
func (z *callerZones) gaugeLocked(label string, n int) {
	if n <= 0 {
		z.gauge.DeleteLabelValues(label)
		return
	}
	z.gauge.WithLabelValues(label).Set(float64(n))
}

// setZones makes the zones of snap's endpoints the zones that count, when
// snap is not the snapshot they were taken from: when they changed, every
// Cluster with callers is marked for the push and the gauge relabelled.
// Called only from the push goroutine.
func (z *callerZones) setZones(snap *topology.Snapshot) {
	if snap == z.zonesSnap {
		return
	}
	z.zonesSnap = snap
	real := map[string]bool{}
	for svc := range snap.All() {
		for _, e := range svc.Endpoints {
			if e.Zone != "" {
				real[e.Zone] = true
			}
		}
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.real != nil && maps.Equal(real, z.real) {
		return
	}
	z.real = real
	z.gauge.Reset()
	z.other = 0
	for zone, n := range z.zoneStreams {
		if real[zone] {
			z.gaugeLocked(zone, n)
		} else {
			z.other += n
		}
	}
	z.gaugeLocked(otherZone, z.other)
	for name := range z.counts {
		z.dirty[name] = true
	}
}

// republish is the caller-zone step of a push of snap at now. clusters holds
// the Clusters the push renders for a topology change; republish adds those
// of snap whose callers alone changed since the last push and moved enough
// from the published distribution (callerZonesMoved), unless the Cluster was
// republished so less than interval ago (it is then held back, and a push
// kicked when the interval ends), and returns the caller_zones every Cluster
// in clusters must carry (by name; a name without callers is absent) and
// how many Clusters it added. Before the warm-up ends no Cluster carries
// caller_zones; the first push after it looks at every Cluster with
// callers. It records the result as published. Called only from the push
// goroutine.
func (z *callerZones) republish(now time.Time, snap *topology.Snapshot, clusters map[string]*topology.Service) (zones map[string]map[string]float64, added int) {
	z.setZones(snap)
	warm := !now.Before(z.from)
	if warm && !z.warmedUp {
		z.warmedUp = true
		z.markAllDirty()
	}
	dirty, cur := z.take(clusters)
	if !warm {
		dirty, cur = nil, nil
	}
	var held []string
	var due time.Time
	for name := range dirty {
		if clusters[name] != nil {
			continue
		}
		svc, ok := serviceOf(snap, name)
		if !ok || !callerZonesMoved(z.published[name], cur[name]) {
			continue
		}
		if last, ok := z.republished[name]; ok && now.Before(last.Add(z.interval)) {
			held = append(held, name)
			if at := last.Add(z.interval); due.IsZero() || at.Before(due) {
				due = at
			}
			continue
		}
		z.republished[name] = now
		clusters[name] = svc
		added++
	}
	z.hold(now, held, due)
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

// hold marks the Clusters names, held back until due, for a later push, and
// arms the timer that kicks it. Called only from the push goroutine.
func (z *callerZones) hold(now time.Time, names []string, due time.Time) {
	if len(names) == 0 {
		return
	}
	z.mu.Lock()
	for _, name := range names {
		z.dirty[name] = true
	}
	z.mu.Unlock()
	if !z.timerAt.IsZero() && !z.timerAt.After(due) && z.timerAt.After(now) {
		return // armed early enough
	}
	if z.timer != nil {
		z.timer.Stop()
	}
	z.timerAt = due
	z.timer = z.clock.AfterFunc(due.Sub(now), z.kick)
}

// stop stops the timer. Called once the push goroutine has ended.
func (z *callerZones) stop() {
	if z.timer != nil {
		z.timer.Stop()
	}
}

// forget drops what was published for the Clusters names, removed from the
// caches. Called only from the push goroutine.
func (z *callerZones) forget(names []string) {
	for _, name := range names {
		delete(z.published, name)
		delete(z.republished, name)
	}
}

// take returns the Cluster names whose counts changed since the last call,
// and the callers' distribution (in thousandths, over the zones that count)
// of those names and of the names in also.
func (z *callerZones) take(also map[string]*topology.Service) (dirty map[string]bool, cur map[string]map[string]int) {
	z.mu.Lock()
	defer z.mu.Unlock()
	dirty = z.dirty
	z.dirty = map[string]bool{}
	cur = make(map[string]map[string]int, len(dirty)+len(also))
	for name := range dirty {
		cur[name] = z.permilleLocked(name)
	}
	for name := range also {
		cur[name] = z.permilleLocked(name)
	}
	return dirty, cur
}

// permilleLocked is the callers' distribution of Cluster name over the
// zones that count, in thousandths. z.mu is held.
func (z *callerZones) permilleLocked(name string) map[string]int {
	counts := z.counts[name]
	for zone := range counts {
		if !z.real[zone] {
			counts = maps.Clone(counts)
			maps.DeleteFunc(counts, func(zone string, _ int) bool { return !z.real[zone] })
			break
		}
	}
	return permille(counts)
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
