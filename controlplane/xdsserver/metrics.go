package xdsserver

import (
	"log/slog"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fairway-lb/fairway/internal/promreg"
)

// metrics are the server's collectors. All of them are defined here and
// registered by newMetrics.
type metrics struct {
	streams        *prometheus.GaugeVec   // fairway_xds_streams{type, protocol}
	pushes         prometheus.Counter     // fairway_xds_pushes_total
	nacks          *prometheus.CounterVec // fairway_xds_nacks_total{type}
	unknown        *prometheus.CounterVec // fairway_xds_unknown_resource_requests_total{type}
	version        prometheus.Gauge       // fairway_xds_snapshot_version
	changeToPush   prometheus.Histogram   // fairway_xds_change_to_push_seconds
	resources      *prometheus.GaugeVec   // fairway_xds_resources{type}
	refused        *prometheus.CounterVec // fairway_xds_refused_streams_total{reason}
	renderFailures prometheus.Counter     // fairway_xds_render_failures_total
	views          prometheus.Gauge       // fairway_xds_namespace_views, kept by views

	callerStreams      *prometheus.GaugeVec // fairway_xds_caller_streams{zone}, kept by callerZones
	callerZonesUpdates prometheus.Counter   // fairway_xds_caller_zones_updates_total

	responseBytes  *prometheus.HistogramVec // fairway_xds_response_bytes{type, protocol}, kept by responseSizes
	largeResponses *prometheus.CounterVec   // fairway_xds_large_responses_total{type, protocol, limit}
}

// newMetrics creates the server's collectors and registers them with reg
// through promreg.Register (nil: not registered), reusing those another
// Server registered there before. A collector that cannot be registered is
// logged and kept unregistered: the server counts, nobody scrapes it.
func newMetrics(reg prometheus.Registerer, log *slog.Logger) *metrics {
	m := &metrics{}
	m.streams = register(reg, log, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fairway_xds_streams",
		Help: "Open xDS streams by resource type and protocol (an ADS stream counts once per type it has requested).",
	}, []string{"type", "protocol"}))
	m.pushes = register(reg, log, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fairway_xds_pushes_total",
		Help: "Snapshots pushed to the xDS caches.",
	}))
	m.nacks = register(reg, log, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fairway_xds_nacks_total",
		Help: "Responses rejected by clients (requests carrying error_detail), by resource type.",
	}, []string{"type"}))
	m.unknown = register(reg, log, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fairway_xds_unknown_resource_requests_total",
		Help: "Resource names requested that the server does not serve (counted once per stream and name, for the first 100 names of a stream), by resource type.",
	}, []string{"type"}))
	m.refused = register(reg, log, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fairway_xds_refused_streams_total",
		Help: "xDS streams refused, by reason: RESOURCE_EXHAUSTED for exceeding a limit (streams_per_node, names_per_stream), UNAUTHENTICATED for carrying no identity when one is required (no_identity).",
	}, []string{"reason"}))
	m.version = register(reg, log, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "fairway_xds_snapshot_version",
		Help: "Version of the last topology snapshot pushed to the xDS caches.",
	}))
	m.changeToPush = register(reg, log, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "fairway_xds_change_to_push_seconds",
		Help:    "Time from a source observing a change to its resources being in the xDS caches.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	}))
	m.resources = register(reg, log, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fairway_xds_resources",
		Help: "Resources in the xDS caches by type.",
	}, []string{"type"}))
	m.renderFailures = register(reg, log, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fairway_xds_render_failures_total",
		Help: "Services left out of the xDS caches because they could not be rendered (invalid for xDS, or translating them panicked), once per version of a service.",
	}))
	m.views = register(reg, log, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "fairway_xds_namespace_views",
		Help: "Namespaces whose authenticated streams read caches of their own (a namespace's view lives while it has a stream open, and a minute after).",
	}))
	m.callerStreams = register(reg, log, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fairway_xds_caller_streams",
		Help: "Open xDS streams counted for a caller zone (their node's), by zone; zones no endpoint is in are counted as (other).",
	}, []string{"zone"}))
	m.callerZonesUpdates = register(reg, log, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fairway_xds_caller_zones_updates_total",
		Help: "Clusters re-rendered because their callers' distribution over zones moved (without a topology change).",
	}))
	m.responseBytes = register(reg, log, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "fairway_xds_response_bytes",
		Help:    "Size of the xDS responses sent, by resource type and protocol.",
		Buckets: prometheus.ExponentialBuckets(1024, 4, 10), // 1 KiB to 256 MiB
	}, []string{"type", "protocol"}))
	m.largeResponses = register(reg, log, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fairway_xds_large_responses_total",
		Help: "xDS responses at or over the size warning (limit=\"warning\") or over the send limit (limit=\"max\": not sent, the stream fails), by resource type and protocol.",
	}, []string{"type", "protocol", "limit"}))
	return m
}

// register is promreg.Register, logging the error it may return.
func register[C prometheus.Collector](reg prometheus.Registerer, log *slog.Logger, c C) C {
	c, err := promreg.Register(reg, c)
	if err != nil {
		log.Error("registering a metric; it will not be exported", "error", err)
	}
	return c
}

// typeLabel is the metric label of a type URL: "cluster", "endpoint",
// "listener", "route", or the type URL itself for anything else.
func typeLabel(typeURL string) string {
	switch typeURL {
	case resourcev3.ClusterType:
		return "cluster"
	case resourcev3.EndpointType:
		return "endpoint"
	case resourcev3.ListenerType:
		return "listener"
	case resourcev3.RouteType:
		return "route"
	}
	return typeURL
}
