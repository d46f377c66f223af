package xdsserver

import (
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/controlplane/translate"
)

// push brings the caches from the last pushed snapshot to snap, and
// republishes the Clusters whose callers' distribution moved. It reads as
// its steps: diff the snapshots, add the caller-zone changes, render the
// resources, update the caches. Called only from the push goroutine.
func (s *Server) push(snap *topology.Snapshot) {
	prev := s.pushed.Load()
	ch := diff(prev, snap)
	s.callers.forget(ch.removedNames())
	zones, republished := s.callers.republish(s.clock.Now(), snap, ch.clusters)
	s.update(render(ch, zones))
	s.pushed.Store(snap)
	s.record(prev, snap, ch, republished)
}

// change is what a push brings to the caches: the services whose resources
// must be rendered, by kind of resource, and the services removed.
type change struct {
	endpoints map[string]*topology.Service // ClusterLoadAssignments to render, by name
	clusters  map[string]*topology.Service // Clusters to render, by name
	added     []*topology.Service          // new services: RouteConfiguration and Listeners to render
	removed   []topology.ServiceKey        // services whose resources to remove
	changed   int                          // services added or changed
}

// diff returns the change from prev (nil before the first push) to next. A
// service whose *topology.Service is the same pointer, or Equal, is
// unchanged; a changed one renders its ClusterLoadAssignment if its
// endpoints changed and its Cluster if its policy did; a new one renders
// everything. The same snapshot twice is no change.
func diff(prev, next *topology.Snapshot) change {
	ch := change{endpoints: map[string]*topology.Service{}, clusters: map[string]*topology.Service{}}
	if next == prev {
		return ch
	}
	for svc := range next.All() {
		var old *topology.Service
		if prev != nil {
			old, _ = prev.Service(svc.Key)
		}
		if old == svc || (old != nil && old.Equal(svc)) {
			continue
		}
		ch.changed++
		name := svc.Key.ResourceName()
		if old == nil || !endpointsEqual(old, svc) {
			ch.endpoints[name] = svc
		}
		if old == nil || !old.Policy.Equal(svc.Policy) {
			ch.clusters[name] = svc
		}
		if old == nil {
			ch.added = append(ch.added, svc)
		}
	}
	if prev == nil {
		return ch
	}
	for svc := range prev.All() {
		if _, ok := next.Service(svc.Key); !ok {
			ch.removed = append(ch.removed, svc.Key)
		}
	}
	return ch
}

func endpointsEqual(a, b *topology.Service) bool {
	if len(a.Endpoints) != len(b.Endpoints) {
		return false
	}
	for i := range a.Endpoints {
		if !a.Endpoints[i].Equal(b.Endpoints[i]) {
			return false
		}
	}
	return true
}

// removedNames are the Cluster names of the services ch removes.
func (ch change) removedNames() []string {
	names := make([]string, 0, len(ch.removed))
	for _, key := range ch.removed {
		names = append(names, key.ResourceName())
	}
	return names
}

// resources is what a push puts in the caches, by type URL: the resources
// to add or replace, by name, and the names to remove.
type resources struct {
	update map[string]map[string]types.Resource
	remove map[string][]string
}

// render translates ch into resources. zones holds the caller_zones of the
// Clusters to render, by name (absent: none).
func render(ch change, zones map[string]map[string]float64) resources {
	res := resources{
		update: make(map[string]map[string]types.Resource, len(typeURLs)),
		remove: make(map[string][]string, len(typeURLs)),
	}
	for _, t := range typeURLs {
		res.update[t] = map[string]types.Resource{}
	}
	for name, svc := range ch.endpoints {
		res.update[resourcev3.EndpointType][name] = translate.LoadAssignment(svc)
	}
	for name, svc := range ch.clusters {
		res.update[resourcev3.ClusterType][name] = translate.Cluster(svc, translate.WithCallerZones(zones[name]))
	}
	for _, svc := range ch.added {
		res.update[resourcev3.RouteType][svc.Key.ResourceName()] = translate.RouteConfig(svc)
		for _, l := range translate.Listeners(svc) {
			res.update[resourcev3.ListenerType][l.GetName()] = l
		}
	}
	for _, key := range ch.removed {
		name := key.ResourceName()
		for _, t := range []string{resourcev3.EndpointType, resourcev3.ClusterType, resourcev3.RouteType} {
			res.remove[t] = append(res.remove[t], name)
		}
		res.remove[resourcev3.ListenerType] = append(res.remove[resourcev3.ListenerType], name, key.FQDNResourceName())
	}
	return res
}

// update applies res to the caches, type by type in typeURLs order (what a
// resource points to is in the caches before the resource), and records
// their sizes.
func (s *Server) update(res resources) {
	for _, t := range typeURLs {
		if len(res.update[t]) == 0 && len(res.remove[t]) == 0 {
			continue
		}
		if err := s.caches[t].UpdateResources(res.update[t], res.remove[t]); err != nil {
			s.log.Error("updating xDS cache", "type", typeLabel(t), "error", err)
		}
		s.metrics.resources.WithLabelValues(typeLabel(t)).Set(float64(s.caches[t].NumResources()))
	}
}

// record counts and logs a push from prev to snap. A push of callers alone
// (snap == prev) counts only its republished Clusters.
func (s *Server) record(prev, snap *topology.Snapshot, ch change, republished int) {
	s.metrics.callerZonesUpdates.Add(float64(republished))
	if republished > 0 {
		s.log.Debug("republished Clusters for a change of callers", "clusters", republished)
	}
	if snap == prev {
		return
	}
	s.metrics.pushes.Inc()
	s.metrics.version.Set(float64(snap.Version()))
	if !snap.Changed().IsZero() {
		s.metrics.changeToPush.Observe(time.Since(snap.Changed()).Seconds())
	}
	s.log.Debug("pushed snapshot", "version", snap.Version(), "services", snap.Len(), "changed", ch.changed, "removed", len(ch.removed))
}
