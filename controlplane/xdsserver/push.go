package xdsserver

import (
	"fmt"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
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
	ch := diff(prev, snap, s.broken)
	s.callers.forget(ch.removedNames())
	zones, republished := s.callers.republish(s.clock.Now(), snap, ch.clusters)
	res, done, failed := render(ch, zones)
	s.recordFailures(ch, failed)
	s.update(res)
	s.views.push(ch, done)
	s.pushed.Store(snap)
	s.record(prev, snap, ch, republished)
}

// change is what a push brings to the caches: the services whose resources
// must be rendered, by kind of resource, and the services removed.
type change struct {
	endpoints map[string]*topology.Service // ClusterLoadAssignments to render, by name
	clusters  map[string]*topology.Service // Clusters to render, by name
	added     []*topology.Service          // new services, and routes changed: RouteConfiguration and Listeners to render
	removed   []topology.ServiceKey        // services whose resources to remove
	exports   []*topology.Service          // changed services whose Export changed (views, views.go)
	changed   int                          // services added or changed
}

// diff returns the change from prev (nil before the first push) to next. A
// service whose *topology.Service is the same pointer, or Equal, is
// unchanged; a changed one renders its ClusterLoadAssignment if its
// endpoints changed, its Cluster if its policy did and its RouteConfiguration
// and Listeners if its route did (routeChanged), and is among exports if
// its Export did; a new one, or a
// changed one among broken (whose last render failed, so that its resources
// may be missing), renders everything. The same snapshot twice is no change.
func diff(prev, next *topology.Snapshot, broken map[topology.ServiceKey]*topology.Service) change {
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
		if old != nil && !old.Export.Equal(svc.Export) {
			ch.exports = append(ch.exports, svc)
		}
		if _, ok := broken[svc.Key]; ok {
			old = nil
		}
		ch.changed++
		name := svc.Key.ResourceName()
		if old == nil || !endpointsEqual(old, svc) {
			ch.endpoints[name] = svc
		}
		if old == nil || !old.Policy.Equal(svc.Policy) {
			ch.clusters[name] = svc
		}
		// The RouteConfiguration carries the ring_hash header hash policy:
		// a change of either re-renders it (with the Listeners) like a new
		// service's.
		if old == nil || routeChanged(old.Policy, svc.Policy) {
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

// routeChanged reports whether a's and b's RouteConfigurations differ: only
// ring_hash routes carry a policy (the hash on HashHeader).
func routeChanged(a, b topology.Policy) bool {
	if (a.LB == topology.RingHash) != (b.LB == topology.RingHash) {
		return true
	}
	return a.LB == topology.RingHash && a.HashHeader != b.HashHeader
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

// translateLoadAssignment is translate.LoadAssignment; tests replace it to
// make rendering panic.
var translateLoadAssignment = translate.LoadAssignment

// render translates ch into resources, service by service, returned both
// merged (res) and by service (done). zones holds the
// caller_zones of the Clusters to render, by name (absent: none). A service
// that fails topology.Service.Validate, or whose translation panics, is left
// out whole and returned in failed: the last line of defence behind the
// sources' validation, so that one bad service never stops the push
// goroutine or poisons the responses that carry other services.
func render(ch change, zones map[string]map[string]float64) (res resources, done []rendered, failed map[*topology.Service]error) {
	res = resources{
		update: make(map[string]map[string]types.Resource, len(typeURLs)),
		remove: make(map[string][]string, len(typeURLs)),
	}
	for _, t := range typeURLs {
		res.update[t] = map[string]types.Resource{}
	}
	jobs := ch.jobs()
	done = make([]rendered, 0, len(jobs))
	for _, job := range jobs {
		r, err := renderService(job, zones[job.svc.Key.ResourceName()])
		if err != nil {
			if failed == nil {
				failed = map[*topology.Service]error{}
			}
			failed[job.svc] = err
			continue
		}
		r.addTo(res.update)
		done = append(done, r)
	}
	for _, key := range ch.removed {
		removeNames(key, res.remove)
	}
	return res, done, failed
}

// renderJob is what a push renders of one service.
type renderJob struct {
	svc                       *topology.Service
	endpoints, cluster, added bool // render the ClusterLoadAssignment, the Cluster, the RouteConfiguration and Listeners
}

// jobs are the services ch renders, each with what to render of it.
func (ch change) jobs() []*renderJob {
	byName := map[string]*renderJob{}
	job := func(svc *topology.Service) *renderJob {
		name := svc.Key.ResourceName()
		j, ok := byName[name]
		if !ok {
			j = &renderJob{svc: svc}
			byName[name] = j
		}
		return j
	}
	for _, svc := range ch.endpoints {
		job(svc).endpoints = true
	}
	for _, svc := range ch.clusters {
		job(svc).cluster = true
	}
	for _, svc := range ch.added {
		job(svc).added = true
	}
	jobs := make([]*renderJob, 0, len(byName))
	for _, j := range byName {
		jobs = append(jobs, j)
	}
	return jobs
}

// rendered is the resources of one service a push renders (nil: not
// rendered).
type rendered struct {
	svc        *topology.Service
	name       string
	assignment *endpointpb.ClusterLoadAssignment
	cluster    *clusterpb.Cluster
	route      *routepb.RouteConfiguration
	listeners  []*listenerpb.Listener
}

// renderService renders what job asks for, or says why it cannot: the
// service is invalid, or translating it panicked.
func renderService(job *renderJob, zones map[string]float64) (r rendered, err error) {
	defer func() {
		if p := recover(); p != nil {
			r, err = rendered{}, fmt.Errorf("fairway/xdsserver: rendering service %s panicked: %v", job.svc.Key, p)
		}
	}()
	if err := job.svc.Validate(); err != nil {
		return rendered{}, err
	}
	r.svc, r.name = job.svc, job.svc.Key.ResourceName()
	if job.endpoints {
		r.assignment = translateLoadAssignment(job.svc)
	}
	if job.cluster {
		r.cluster = translate.Cluster(job.svc, translate.WithCallerZones(zones))
	}
	if job.added {
		r.route = translate.RouteConfig(job.svc)
		r.listeners = translate.Listeners(job.svc)
	}
	return r, nil
}

// addTo adds r's resources to upd (by type URL, then name).
func (r *rendered) addTo(upd map[string]map[string]types.Resource) {
	if r.assignment != nil {
		upd[resourcev3.EndpointType][r.name] = r.assignment
	}
	if r.cluster != nil {
		upd[resourcev3.ClusterType][r.name] = r.cluster
	}
	if r.route != nil {
		upd[resourcev3.RouteType][r.name] = r.route
	}
	for _, l := range r.listeners {
		upd[resourcev3.ListenerType][l.GetName()] = l
	}
}

// recordFailures keeps s.broken up to date after a push of ch in which the
// services in failed could not be rendered, and logs and counts each
// failing service once per version of it (a Cluster re-rendered for its
// callers fails again silently).
func (s *Server) recordFailures(ch change, failed map[*topology.Service]error) {
	for _, key := range ch.removed {
		delete(s.broken, key)
	}
	for _, svc := range ch.added { // rendered whole: no longer broken unless it failed again
		if _, bad := failed[svc]; !bad {
			delete(s.broken, svc.Key)
		}
	}
	for svc, err := range failed {
		if s.broken[svc.Key] == svc {
			continue
		}
		s.broken[svc.Key] = svc
		s.metrics.renderFailures.Inc()
		s.log.Error("leaving out a service that cannot be rendered; its clients keep what they had", "service", svc.Key.ResourceName(), "error", err)
	}
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
