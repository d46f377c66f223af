package xdsclient

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fairway-lb/fairway/wire"
)

type metrics struct {
	connected  prometheus.Gauge
	updates    *prometheus.CounterVec
	nacks      *prometheus.CounterVec
	lastUpdate prometheus.Gauge
}

// typeLabel is the short type label of the metrics.
func typeLabel(typeURL string) string {
	switch typeURL {
	case wire.ClusterType:
		return "cluster"
	case wire.EndpointType:
		return "endpoints"
	default:
		return "other"
	}
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fairway_client_xds_connected",
			Help: "1 while the ADS stream to the control plane is up, else 0.",
		}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fairway_client_xds_updates_total",
			Help: "Resource updates accepted from the control plane, by type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fairway_client_xds_nacks_total",
			Help: "Responses NACKed because they held an invalid resource, by type.",
		}, []string{"type"}),
		lastUpdate: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fairway_client_xds_last_update_timestamp_seconds",
			Help: "Unix time of the last response accepted from the control plane.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.connected = register(reg, m.connected, &err)
	m.updates = register(reg, m.updates, &err)
	m.nacks = register(reg, m.nacks, &err)
	m.lastUpdate = register(reg, m.lastUpdate, &err)
	return m, err
}

// register registers c with reg, or returns the collector already registered
// under the same descriptor (clients sharing a registry share metrics).
func register[C prometheus.Collector](reg prometheus.Registerer, c C, errp *error) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		*errp = errors.Join(*errp, err)
	}
	return c
}
