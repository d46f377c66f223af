package kube

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the source's Prometheus metrics.
type metrics struct {
	problems *prometheus.CounterVec // fairway_source_problems_total{source,reason}
	sync     prometheus.Histogram   // fairway_kube_sync_seconds
	services prometheus.Gauge       // fairway_kube_services
}

func newMetrics(reg prometheus.Registerer, queueDepth func() float64) *metrics {
	m := &metrics{
		problems: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fairway_source_problems_total",
			Help: "Invalid or surprising input objects reported by a source, by source and reason.",
		}, []string{"source", "reason"}),
		sync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fairway_kube_sync_seconds",
			Help:    "Time from taking queued Service keys off the workqueue to handing the new snapshot to the sink.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		services: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fairway_kube_services",
			Help: "Kubernetes Services with at least one port in the current snapshot.",
		}),
	}
	if reg == nil {
		return m
	}
	m.problems = register(reg, m.problems)
	m.sync = register(reg, m.sync)
	m.services = register(reg, m.services)
	register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fairway_kube_queue_depth",
		Help: "Service keys waiting in the Kubernetes source's workqueue.",
	}, queueDepth))
	return m
}

// register registers c with reg, or returns the collector already registered
// under the same name (fairway_source_problems_total is shared by sources).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
