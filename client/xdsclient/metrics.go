package xdsclient

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fairway-lb/fairway/internal/promreg"
	"github.com/fairway-lb/fairway/wire"
)

type metrics struct {
	connected  prometheus.Gauge
	updates    *prometheus.CounterVec
	nacks      *prometheus.CounterVec
	lastUpdate prometheus.Gauge
	// streamErrors counts streams ended by an error, by reason (see
	// streamErrorReason).
	streamErrors *prometheus.CounterVec
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

// newMetrics returns the client's metrics, registered with reg (nil: not
// registered); clients sharing a registry share the metrics.
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
		streamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fairway_client_xds_stream_errors_total",
			Help: "ADS streams (or attempts) ended by an error, by reason: the gRPC status code in snake_case (resource_exhausted: a response over the receive limit), no_response (no first response within the response timeout), eof.",
		}, []string{"reason"}),
	}
	var errs [5]error
	m.connected, errs[0] = promreg.Register(reg, m.connected)
	m.updates, errs[1] = promreg.Register(reg, m.updates)
	m.nacks, errs[2] = promreg.Register(reg, m.nacks)
	m.lastUpdate, errs[3] = promreg.Register(reg, m.lastUpdate)
	m.streamErrors, errs[4] = promreg.Register(reg, m.streamErrors)
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("fairway/xdsclient: registering metrics: %w", err)
	}
	return m, nil
}
