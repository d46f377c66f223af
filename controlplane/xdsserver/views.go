package xdsserver

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/fairway-lb/fairway/controlplane/topology"
)

// Visibility: a stream whose context carries an auth.Identity sees only the
// services visible to the identity's namespace (topology.Service.Visible:
// its own namespace's, and those exported to it); a stream without one (the
// server runs with authentication off) sees every service.
//
// Every resource belongs to one service (package translate names each by
// its service's key, a Listener also by the FQDN form; none aggregates
// several services), so what a stream sees is a set of services.
//
// Each set of streams that sees the same services is a view with caches of
// its own, one LinearCache per type as the server's: the "all" view (the
// streams without identity) is the server's caches themselves, updated by a
// push exactly as before visibility existed, and each namespace with an
// authenticated stream open has a view holding only what that namespace
// sees. A push renders each changed service once and hands the same
// resources to every view that sees it; a view that starts or stops seeing a
// service (its export changed) gets all its resources, or their removal.
//
// Why not one cache and a filter: go-control-plane records what a stream
// was sent and compares it with the cache; a resource filtered out of a
// response looks changed forever and the stream is answered in a loop. A
// view's cache holds exactly what its streams may see, so a request for an
// invisible name meets a cache without it: the same path as an unknown name
// (SotW: absent from the answer; delta: nothing sent), and a wildcard lists
// only visible resources.
//
// How a request finds its view: go-control-plane hands the cache only the
// request, whose node it fills from the stream's first request. The request
// callbacks (which run before the server creates the watch, after the SotW
// server has filled in the node and before the delta server does) replace
// the request's node with the stream's view's stamp, a node of the server's
// own (its id names the view, for debugging); the cache (viewCache) routes by
// the stamp's pointer. Whatever node the client sent, it cannot pick a view:
// it is replaced, and no node a client sent is a stamp. The callbacks read
// the client's node before replacing it.
//
// A namespace's view is made at the first stream of its namespace, filled
// with the last rendered resources it sees, and updated by every push; it is
// dropped once its last stream has been closed for viewIdle (a client
// reconnecting at once finds it warm).

// viewIdle is how long a namespace's view outlives its last stream.
const viewIdle = time.Minute

// stampPrefix prefixes the node id of a view's stamp.
const stampPrefix = "fairway.io/view:"

// view is the caches of one set of streams that see the same services.
type view struct {
	// immutable
	ns     string       // the namespace; "" in the all view
	all    bool         // the all view: sees everything
	stamp  *corepb.Node // replaces the node of the view's requests; never mutated
	caches map[string]*cachev3.LinearCache

	// guarded by views.mu
	has     map[topology.ServiceKey]bool // services in the caches (namespace views)
	streams int                          // open streams
	idle    time.Time                    // when streams dropped to zero
}

func newView(ns string, all bool) *view {
	id := stampPrefix + ns
	if all {
		id = stampPrefix + "*"
	}
	v := &view{ns: ns, all: all, stamp: &corepb.Node{Id: id}, caches: make(map[string]*cachev3.LinearCache, len(typeURLs))}
	if !all {
		v.has = map[topology.ServiceKey]bool{}
	}
	for _, t := range typeURLs {
		v.caches[t] = cachev3.NewLinearCache(t) // no version prefix: nackCache relies on it
	}
	return v
}

// sees reports whether v's streams see svc.
func (v *view) sees(svc *topology.Service) bool { return v.all || svc.Visible(v.ns) }

// serviceState is what the views know of a service: its latest version in
// the pushed snapshot, and the latest resources rendered of it (all four
// kinds; a service that never rendered has none).
type serviceState struct {
	svc *topology.Service
	res rendered
}

// views are the server's views. The push goroutine updates them (push);
// streams acquire and release them from their goroutines; the cache reads
// them (lookup) from the streams' goroutines without a lock.
type views struct {
	// immutable
	all   *view
	clock clock.Clock
	gauge prometheus.Gauge // fairway_xds_namespace_views; nil: none

	// byStamp maps each view's stamp (the pointer: a node a client sent
	// never matches) to the view; replaced under mu.
	byStamp atomic.Pointer[map[*corepb.Node]*view]

	mu   sync.Mutex
	byNS map[string]*view // guarded by mu
	// current is, by key, every service of the pushed snapshot; guarded by
	// mu, written by the push goroutine.
	current map[topology.ServiceKey]*serviceState
}

func newViews(all *view, c clock.Clock, gauge prometheus.Gauge) *views {
	vs := &views{all: all, clock: c, gauge: gauge, byNS: map[string]*view{}, current: map[topology.ServiceKey]*serviceState{}}
	vs.publishLocked()
	return vs
}

// publishLocked publishes the lookup map. vs.mu is held (or vs is new).
func (vs *views) publishLocked() {
	m := make(map[*corepb.Node]*view, len(vs.byNS)+1)
	m[vs.all.stamp] = vs.all
	for _, v := range vs.byNS {
		m[v.stamp] = v
	}
	vs.byStamp.Store(&m)
	if vs.gauge != nil {
		vs.gauge.Set(float64(len(vs.byNS)))
	}
}

// lookup returns the view whose stamp is node, nil for none.
func (vs *views) lookup(node *corepb.Node) *view {
	return (*vs.byStamp.Load())[node]
}

// acquire returns the view of a stream opening: the all view without an
// identity, else its namespace's, made and filled if it has none.
func (vs *views) acquire(identified bool, ns string) *view {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if !identified {
		vs.all.streams++
		return vs.all
	}
	vs.sweepLocked()
	v, ok := vs.byNS[ns]
	if !ok {
		v = newView(ns, false)
		upd := newResources()
		for key, st := range vs.current {
			if st.res.svc != nil && v.sees(st.svc) {
				st.res.addTo(upd)
				v.has[key] = true
			}
		}
		v.apply(upd, nil)
		vs.byNS[ns] = v
		vs.publishLocked()
	}
	v.streams++
	return v
}

// release is acquire's counterpart, at a stream's close.
func (vs *views) release(v *view) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if v.streams--; v.streams == 0 {
		v.idle = vs.clock.Now()
	}
}

// sweepLocked drops the namespace views without a stream for viewIdle.
// vs.mu is held.
func (vs *views) sweepLocked() {
	now := vs.clock.Now()
	dropped := false
	for ns, v := range vs.byNS {
		if v.streams == 0 && now.Sub(v.idle) >= viewIdle {
			delete(vs.byNS, ns)
			dropped = true
		}
	}
	if dropped {
		vs.publishLocked()
	}
}

// count returns the number of namespace views.
func (vs *views) count() int {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	return len(vs.byNS)
}

// push brings the namespace views up to date after a push of ch that
// rendered done (the all view's caches are the server's, updated by the
// caller). Called only from the push goroutine.
func (vs *views) push(ch change, done []rendered) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	for _, r := range done {
		st := vs.current[r.svc.Key]
		if st == nil {
			st = &serviceState{}
			vs.current[r.svc.Key] = st
		}
		st.svc = r.svc
		st.res.merge(r)
	}
	for _, svc := range ch.exports {
		if st := vs.current[svc.Key]; st != nil {
			st.svc = svc
		} else {
			vs.current[svc.Key] = &serviceState{svc: svc} // never rendered (broken)
		}
	}
	for _, key := range ch.removed {
		delete(vs.current, key)
	}
	vs.sweepLocked()
	for _, v := range vs.byNS {
		v.push(vs.current, ch, done)
	}
}

// push applies a push to the namespace view v: the services it sees get
// the resources rendered (all of them when it did not see them before),
// those it no longer sees (their export changed, or they are gone) are
// removed. views.mu is held.
func (v *view) push(current map[topology.ServiceKey]*serviceState, ch change, done []rendered) {
	upd, rem := newResources(), map[string][]string{}
	touch := func(key topology.ServiceKey, r *rendered) {
		st := current[key]
		switch sees := st != nil && st.res.svc != nil && v.sees(st.svc); {
		case sees && v.has[key] && r != nil:
			r.addTo(upd)
		case sees && !v.has[key]:
			st.res.addTo(upd)
			v.has[key] = true
		case !sees && v.has[key]:
			removeNames(key, rem)
			delete(v.has, key)
		}
	}
	for i := range done {
		touch(done[i].svc.Key, &done[i])
	}
	for _, svc := range ch.exports {
		touch(svc.Key, nil)
	}
	for _, key := range ch.removed {
		touch(key, nil)
	}
	v.apply(upd, rem)
}

// apply updates v's caches with upd and rem, in typeURLs order.
func (v *view) apply(upd map[string]map[string]types.Resource, rem map[string][]string) {
	for _, t := range typeURLs {
		if len(upd[t]) == 0 && len(rem[t]) == 0 {
			continue
		}
		// UpdateResources fails only when notifying a watch fails to
		// compute a response (marshalling): nothing to do about it here.
		_ = v.caches[t].UpdateResources(upd[t], rem[t])
	}
}

// newResources returns an empty update, by type URL then name.
func newResources() map[string]map[string]types.Resource {
	m := make(map[string]map[string]types.Resource, len(typeURLs))
	for _, t := range typeURLs {
		m[t] = map[string]types.Resource{}
	}
	return m
}

// removeNames adds the names of key's resources to rem, by type URL.
func removeNames(key topology.ServiceKey, rem map[string][]string) {
	name := key.ResourceName()
	for _, t := range []string{resourcev3.EndpointType, resourcev3.ClusterType, resourcev3.RouteType} {
		rem[t] = append(rem[t], name)
	}
	rem[resourcev3.ListenerType] = append(rem[resourcev3.ListenerType], name, key.FQDNResourceName())
}

// viewCache is the server's cache: it routes each request to the cache of
// its type in the view its node stamps (see above). A request without a
// view's stamp, or for a type the server does not serve, is refused (it
// ends the stream). go-control-plane calls it from the streams' goroutines.
type viewCache struct {
	views *views
}

func (c viewCache) cache(node *corepb.Node, typeURL string) (*cachev3.LinearCache, error) {
	v := c.views.lookup(node)
	if v == nil {
		return nil, fmt.Errorf("fairway/xdsserver: the stream has no view")
	}
	lc, ok := v.caches[typeURL]
	if !ok {
		return nil, fmt.Errorf("fairway/xdsserver: no cache defined for type %s", typeURL)
	}
	return lc, nil
}

func (c viewCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	lc, err := c.cache(req.GetNode(), req.GetTypeUrl())
	if err != nil {
		return nil, err
	}
	return lc.CreateWatch(req, sub, out)
}

func (c viewCache) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, out chan cachev3.DeltaResponse) (func(), error) {
	lc, err := c.cache(req.GetNode(), req.GetTypeUrl())
	if err != nil {
		return nil, err
	}
	return lc.CreateDeltaWatch(req, sub, out)
}

// Fetch (REST xDS) is not served.
func (c viewCache) Fetch(context.Context, *cachev3.Request) (cachev3.Response, error) {
	return nil, fmt.Errorf("fairway/xdsserver: fetch is not served")
}

// merge sets in s the parts r rendered.
func (s *rendered) merge(r rendered) {
	s.svc, s.name = r.svc, r.name
	if r.assignment != nil {
		s.assignment = r.assignment
	}
	if r.cluster != nil {
		s.cluster = r.cluster
	}
	if r.route != nil {
		s.route = r.route
	}
	if r.listeners != nil {
		s.listeners = r.listeners
	}
}

// resourcesOf returns the all view's resources of type typeURL that a stream
// of namespace ns sees (every one when all).
func (vs *views) resourcesOf(typeURL, ns string, all bool) map[string]types.Resource {
	res := vs.all.caches[typeURL].GetResources()
	if all {
		return res
	}
	vs.mu.Lock()
	defer vs.mu.Unlock()
	maps.DeleteFunc(res, func(name string, _ types.Resource) bool {
		key, ok := parseKey(name)
		st := vs.current[key]
		return !ok || st == nil || !st.svc.Visible(ns)
	})
	return res
}
