package kube

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fairway-lb/fairway/internal/promreg"
)

// metrics are the source's Prometheus metrics.
type metrics struct {
	problems *prometheus.CounterVec // fairway_source_problems_total{source,reason}
	sync     prometheus.Histogram   // fairway_kube_sync_seconds
	services prometheus.Gauge       // fairway_kube_services
	watchErr *prometheus.CounterVec // fairway_kube_watch_errors_total{resource,verb}
}

// newMetrics returns the source's metrics, registered with reg (nil: not
// registered). A collector reg already holds (fairway_source_problems_total,
// shared by sources) is reused; any other registration error is returned,
// with metrics that work but are not all registered.
func newMetrics(reg prometheus.Registerer, queueDepth func() float64) (*metrics, error) {
	m := &metrics{
		problems: promreg.SourceProblems(),
		sync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fairway_kube_sync_seconds",
			Help:    "Time from taking queued Service keys off the workqueue to handing the new snapshot to the sink.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		services: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fairway_kube_services",
			Help: "Kubernetes Services with at least one port in the current snapshot.",
		}),
		watchErr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fairway_kube_watch_errors_total",
			Help: "Failed list and watch requests of the Kubernetes source (connection errors and error responses), by resource and verb (list, watch).",
		}, []string{"resource", "verb"}),
	}
	depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fairway_kube_queue_depth",
		Help: "Service keys waiting in the Kubernetes source's workqueue.",
	}, queueDepth)
	var errs [5]error
	m.problems, errs[0] = promreg.Register(reg, m.problems)
	m.sync, errs[1] = promreg.Register(reg, m.sync)
	m.services, errs[2] = promreg.Register(reg, m.services)
	_, errs[3] = promreg.Register(reg, depth)
	m.watchErr, errs[4] = promreg.Register(reg, m.watchErr)
	return m, errors.Join(errs[:]...)
}
