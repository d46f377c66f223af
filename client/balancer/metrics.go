package balancer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fairway-lb/fairway/client/strategy"
	"github.com/fairway-lb/fairway/client/strategy/zoneaffinity"
)

// Collector returns the collector of the balancers' per-target metrics, for
// the application's registry (client.WithRegisterer registers it through
// promreg.Register, so several channels share it). It reads every live
// balancer at scrape time from the per-endpoint atomics, so the pick path
// pays nothing for the metrics. Its series are per target (and zone), so
// they do not churn when pods come and go:
//
//	fairway_client_picks_total{target,zone}            counter (zone: the endpoint's)
//	fairway_client_inflight{target}                    gauge
//	fairway_client_ejections_total{target}             counter
//	fairway_client_zone_spill_fraction{target}         gauge (zone_affinity's gauge)
//	fairway_client_load_probes_total{target,result}    counter (load_aware's probes: sent, dropped)
//
// The counters keep the counts of endpoints since removed; a balancer that
// closes (its channel closed) takes its counts with it, as a restarted
// process would. EndpointCollector adds per-endpoint series.
func Collector() prometheus.Collector { return collector{} }

// EndpointCollector returns the collector of the per-endpoint series, one
// per endpoint address of every live balancer (client.WithEndpointMetrics
// registers it). They follow every rollout (a new pod IP, a new series), so
// they are for debugging or small fleets, off by default:
//
//	fairway_client_endpoint_picks_total{target,endpoint,zone}   counter
//	fairway_client_endpoint_inflight{target,endpoint}           gauge
func EndpointCollector() prometheus.Collector { return endpointCollector{} }

var (
	picksDesc    = prometheus.NewDesc("fairway_client_picks_total", "Requests sent, by target and the endpoint's zone.", []string{"target", "zone"}, nil)
	inflightDesc = prometheus.NewDesc("fairway_client_inflight", "Requests in flight, by target.", []string{"target"}, nil)
	ejectDesc    = prometheus.NewDesc("fairway_client_ejections_total", "Outlier ejections.", []string{"target"}, nil)
	spillDesc    = prometheus.NewDesc("fairway_client_zone_spill_fraction", "Share of requests sent out of the local zone.", []string{"target"}, nil)
	probesDesc   = prometheus.NewDesc("fairway_client_load_probes_total", "Load probes sent, and dropped because too many were under way.", []string{"target", "result"}, nil)

	endpointPicksDesc    = prometheus.NewDesc("fairway_client_endpoint_picks_total", "Requests sent to each endpoint.", []string{"target", "endpoint", "zone"}, nil)
	endpointInflightDesc = prometheus.NewDesc("fairway_client_endpoint_inflight", "Requests in flight to each endpoint.", []string{"target", "endpoint"}, nil)
)

// liveByTarget copies the live balancers, by target.
func liveByTarget() map[string][]*fairwayBalancer {
	liveMu.Lock()
	defer liveMu.Unlock()
	all := make(map[string][]*fairwayBalancer, len(live))
	for t, bs := range live {
		all[t] = append([]*fairwayBalancer(nil), bs...)
	}
	return all
}

// endpointKey identifies an endpoint's series.
type endpointKey struct{ addr, zone string }

// targetStats are a target's counts, summed over its balancers (several
// channels).
type targetStats struct {
	picks     map[endpointKey]uint64
	inflight  map[string]int64 // by address
	ejections uint64
	spill     float64
	probes    struct{ sent, dropped uint64 }
	pastPicks map[string]uint64 // by zone, of endpoints since removed
}

// retired holds the counts of a balancer's endpoints since removed, so that
// its per-target counters never go down when endpoints go. Guarded by the
// balancer's mu.
type retired struct {
	ejections uint64
	picks     map[string]uint64 // by zone
}

func (r *retired) add(se *strategy.Endpoint) {
	r.ejections += se.Exclusions()
	if r.picks == nil {
		r.picks = map[string]uint64{}
	}
	r.picks[se.Info.Zone] += se.Picks()
}

func statsOf(bs []*fairwayBalancer) targetStats {
	s := targetStats{picks: map[endpointKey]uint64{}, inflight: map[string]int64{}, pastPicks: map[string]uint64{}}
	for _, b := range bs {
		b.mu.Lock()
		for se := range b.conns {
			s.picks[endpointKey{se.Addr, se.Info.Zone}] += se.Picks()
			s.inflight[se.Addr] += se.InFlight()
			s.ejections += se.Exclusions()
		}
		s.ejections += b.past.ejections
		for zone, n := range b.past.picks {
			s.pastPicks[zone] += n
		}
		s.spill = max(s.spill, b.pool.Gauges().Value(zoneaffinity.SpillFraction))
		s.probes.sent += b.probesSent.Load()
		s.probes.dropped += b.probesDropped.Load()
		b.mu.Unlock()
	}
	return s
}

// collector reads all live balancers at scrape time.
type collector struct{}

func (collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- picksDesc
	ch <- inflightDesc
	ch <- ejectDesc
	ch <- spillDesc
	ch <- probesDesc
}

func (collector) Collect(ch chan<- prometheus.Metric) {
	for target, bs := range liveByTarget() {
		s := statsOf(bs)
		byZone := s.pastPicks
		for k, n := range s.picks {
			byZone[k.zone] += n
		}
		for zone, n := range byZone {
			ch <- prometheus.MustNewConstMetric(picksDesc, prometheus.CounterValue, float64(n), target, zone)
		}
		var inflight int64
		for _, n := range s.inflight {
			inflight += n
		}
		ch <- prometheus.MustNewConstMetric(inflightDesc, prometheus.GaugeValue, float64(inflight), target)
		ch <- prometheus.MustNewConstMetric(ejectDesc, prometheus.CounterValue, float64(s.ejections), target)
		ch <- prometheus.MustNewConstMetric(spillDesc, prometheus.GaugeValue, s.spill, target)
		ch <- prometheus.MustNewConstMetric(probesDesc, prometheus.CounterValue, float64(s.probes.sent), target, "sent")
		ch <- prometheus.MustNewConstMetric(probesDesc, prometheus.CounterValue, float64(s.probes.dropped), target, "dropped")
	}
}

// endpointCollector reads all live balancers at scrape time, per endpoint.
type endpointCollector struct{}

func (endpointCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- endpointPicksDesc
	ch <- endpointInflightDesc
}

func (endpointCollector) Collect(ch chan<- prometheus.Metric) {
	for target, bs := range liveByTarget() {
		s := statsOf(bs)
		for k, n := range s.picks {
			ch <- prometheus.MustNewConstMetric(endpointPicksDesc, prometheus.CounterValue, float64(n), target, k.addr, k.zone)
		}
		for a, n := range s.inflight {
			ch <- prometheus.MustNewConstMetric(endpointInflightDesc, prometheus.GaugeValue, float64(n), target, a)
		}
	}
}
