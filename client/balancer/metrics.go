package balancer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fairway-lb/fairway/client/strategy/zoneaffinity"
)

// Collector returns the collector of the balancers' metrics, for the
// application's registry (client.WithRegisterer registers it through
// promreg.Register, so several channels share it). It reads every live
// balancer at scrape time from the per-endpoint atomics, so the pick path
// pays nothing for the metrics:
//
//	fairway_client_picks_total{target,endpoint,zone}   counter
//	fairway_client_inflight{target,endpoint}           gauge
//	fairway_client_ejections_total{target}             counter
//	fairway_client_zone_spill_fraction{target}         gauge (zone_affinity's gauge)
//	fairway_client_load_probes_total{target,result}    counter (load_aware's probes: sent, dropped)
func Collector() prometheus.Collector { return collector{} }

var (
	picksDesc    = prometheus.NewDesc("fairway_client_picks_total", "Requests sent to each endpoint.", []string{"target", "endpoint", "zone"}, nil)
	inflightDesc = prometheus.NewDesc("fairway_client_inflight", "Requests in flight to each endpoint.", []string{"target", "endpoint"}, nil)
	ejectDesc    = prometheus.NewDesc("fairway_client_ejections_total", "Outlier ejections.", []string{"target"}, nil)
	spillDesc    = prometheus.NewDesc("fairway_client_zone_spill_fraction", "Share of requests sent out of the local zone.", []string{"target"}, nil)
	probesDesc   = prometheus.NewDesc("fairway_client_load_probes_total", "Load probes sent, and dropped because too many were under way.", []string{"target", "result"}, nil)
)

// collector reads all live balancers at scrape time. Balancers of the same
// target (several channels) are summed per endpoint.
type collector struct{}

func (collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- picksDesc
	ch <- inflightDesc
	ch <- ejectDesc
	ch <- spillDesc
	ch <- probesDesc
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
		var ejections, probesSent, probesDropped uint64
		var spill float64
		for _, b := range bs {
			b.mu.Lock()
			for se := range b.conns {
				picks[key{se.Addr, se.Info.Zone}] += se.Picks()
				inflight[se.Addr] += se.InFlight()
				ejections += se.Exclusions()
			}
			ejections += b.pastEjects
			probesSent += b.probesSent.Load()
			probesDropped += b.probesDropped.Load()
			spill = max(spill, b.pool.Gauges().Value(zoneaffinity.SpillFraction))
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
		ch <- prometheus.MustNewConstMetric(probesDesc, prometheus.CounterValue, float64(probesSent), target, "sent")
		ch <- prometheus.MustNewConstMetric(probesDesc, prometheus.CounterValue, float64(probesDropped), target, "dropped")
	}
}
