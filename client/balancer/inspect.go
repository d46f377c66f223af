package balancer

import (
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"

	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy/zoneaffinity"
)

// EndpointState is one endpoint as a balancer sees it, for debugging.
type EndpointState struct {
	Address         string
	Hostname        string
	Zone            string
	Weight          uint32
	EffectiveWeight float64 // weight after slow start; Weight when no strategy changed it
	Health          endpointattr.Health
	Connectivity    connectivity.State
	Ready           bool // READY and healthy: a candidate
	InFlight        int64
	Picks           uint64
	Finished        uint64
	Failures        uint64            // finished with a code other than OK
	Codes           map[string]uint64 // finished requests by code (non-zero only)
	Latency         time.Duration     // peak-EWMA latency (latency-aware p2c only)
	Ejections       uint64
	EjectedUntil    time.Time // zero when not ejected
	FirstSeen       time.Time
}

var (
	liveMu sync.Mutex
	live   = map[string][]*fairwayBalancer{} // by target
)

func register(b *fairwayBalancer) {
	liveMu.Lock()
	defer liveMu.Unlock()
	live[b.target] = append(live[b.target], b)
}

func unregister(b *fairwayBalancer) {
	liveMu.Lock()
	defer liveMu.Unlock()
	bs := live[b.target]
	for i, x := range bs {
		if x == b {
			bs = append(bs[:i:i], bs[i+1:]...)
			break
		}
	}
	if len(bs) == 0 {
		delete(live, b.target)
	} else {
		live[b.target] = bs
	}
}

// Targets returns the targets of the live Fairway balancers, sorted.
func Targets() []string {
	liveMu.Lock()
	defer liveMu.Unlock()
	out := make([]string, 0, len(live))
	for t := range live {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Inspect returns the endpoints of target's balancers (a target dialled by
// several channels lists each channel's endpoints in turn), and false when
// no live balancer serves target. Safe to call from any goroutine.
func Inspect(target string) ([]EndpointState, bool) {
	liveMu.Lock()
	bs := append([]*fairwayBalancer(nil), live[target]...)
	liveMu.Unlock()
	if len(bs) == 0 {
		return nil, false
	}
	var out []EndpointState
	for _, b := range bs {
		out = append(out, b.inspect()...)
	}
	return out, true
}

func (b *fairwayBalancer) inspect() []EndpointState {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]EndpointState, 0, len(b.order))
	for _, a := range b.order {
		ep := b.endpoints[a]
		if ep == nil {
			continue
		}
		se := ep.se
		st := EndpointState{
			Address:         a,
			Hostname:        se.Info.Hostname,
			Zone:            se.Info.Zone,
			Weight:          se.Info.Weight,
			EffectiveWeight: se.EffectiveWeight(),
			Health:          se.Info.Health,
			Connectivity:    ep.state,
			Ready:           ep.state == connectivity.Ready && se.Info.Health == endpointattr.Healthy,
			InFlight:        se.InFlight(),
			Picks:           se.Picks(),
			Latency:         se.Latency(),
			Ejections:       se.Exclusions(),
			EjectedUntil:    se.ExcludedUntil(),
			FirstSeen:       se.Added,
		}
		if st.EffectiveWeight == 0 {
			st.EffectiveWeight = float64(se.Info.Weight)
		}
		for c := codes.OK; c <= codes.Unauthenticated; c++ {
			n := se.Outcomes(c)
			if n == 0 {
				continue
			}
			if st.Codes == nil {
				st.Codes = map[string]uint64{}
			}
			st.Codes[c.String()] = n
			st.Finished += n
			if c != codes.OK {
				st.Failures += n
			}
		}
		out = append(out, st)
	}
	return out
}

var registry = prometheus.NewRegistry()

func init() { registry.MustRegister(collector{}) }

// Metrics returns the registry holding the client's metrics; serve it with
// promhttp.HandlerFor(balancer.Metrics(), ...) or merge it into another
// registry's gathering (prometheus.Gatherers). The metrics are computed at
// scrape time from the balancers' per-endpoint atomics, so the pick path
// pays nothing for them:
//
//	fairway_client_picks_total{target,endpoint,zone}   counter
//	fairway_client_inflight{target,endpoint}           gauge
//	fairway_client_ejections_total{target}             counter
//	fairway_client_zone_spill_fraction{target}         gauge
func Metrics() *prometheus.Registry { return registry }

var (
	picksDesc    = prometheus.NewDesc("fairway_client_picks_total", "Requests sent to each endpoint.", []string{"target", "endpoint", "zone"}, nil)
	inflightDesc = prometheus.NewDesc("fairway_client_inflight", "Requests in flight to each endpoint.", []string{"target", "endpoint"}, nil)
	ejectDesc    = prometheus.NewDesc("fairway_client_ejections_total", "Outlier ejections.", []string{"target"}, nil)
	spillDesc    = prometheus.NewDesc("fairway_client_zone_spill_fraction", "Share of requests sent out of the local zone.", []string{"target"}, nil)
)

// collector reads all live balancers at scrape time. Balancers of the same
// target (several channels) are summed per endpoint.
type collector struct{}

func (collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- picksDesc
	ch <- inflightDesc
	ch <- ejectDesc
	ch <- spillDesc
}

func (collector) Collect(ch chan<- prometheus.Metric) {
	liveMu.Lock()
	all := make(map[string][]*fairwayBalancer, len(live))
	for t, bs := range live {
		all[t] = append([]*fairwayBalancer(nil), bs...)
	}
	liveMu.Unlock()
	type key struct{ addr, zone string }
	for target, bs := range all {
		picks := map[key]uint64{}
		inflight := map[string]int64{}
		var ejections uint64
		var spill float64
		for _, b := range bs {
			b.mu.Lock()
			for _, ep := range b.endpoints {
				picks[key{ep.se.Addr, ep.se.Info.Zone}] += ep.se.Picks()
				inflight[ep.se.Addr] += ep.se.InFlight()
				ejections += ep.se.Exclusions()
			}
			ejections += b.pastEjects
			spill = max(spill, b.chainOpts.Gauges.Value(zoneaffinity.SpillFraction))
			b.mu.Unlock()
		}
		for k, n := range picks {
			ch <- prometheus.MustNewConstMetric(picksDesc, prometheus.CounterValue, float64(n), target, k.addr, k.zone)
		}
		for a, n := range inflight {
			ch <- prometheus.MustNewConstMetric(inflightDesc, prometheus.GaugeValue, float64(n), target, a)
		}
		ch <- prometheus.MustNewConstMetric(ejectDesc, prometheus.CounterValue, float64(ejections), target)
		ch <- prometheus.MustNewConstMetric(spillDesc, prometheus.GaugeValue, spill, target)
	}
}
