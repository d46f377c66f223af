package xdsserver

import (
	"context"
	"slices"
	"strings"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/wire"
)

const (
	protoSotW  = "sotw"
	protoDelta = "delta"
)

type metrics struct {
	streams      *prometheus.GaugeVec
	pushes       prometheus.Counter
	nacks        *prometheus.CounterVec
	unknown      *prometheus.CounterVec
	version      prometheus.Gauge
	changeToPush prometheus.Histogram
	resources    *prometheus.GaugeVec

	callerStreams      *prometheus.GaugeVec
	callerZonesUpdates prometheus.Counter
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fairway_xds_streams",
			Help: "Open xDS streams by resource type and protocol (an ADS stream counts once per type it has requested).",
		}, []string{"type", "protocol"}),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fairway_xds_pushes_total",
			Help: "Snapshots pushed to the xDS caches.",
		}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fairway_xds_nacks_total",
			Help: "Responses rejected by clients (requests carrying error_detail), by resource type.",
		}, []string{"type"}),
		unknown: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fairway_xds_unknown_resource_requests_total",
			Help: "Requests for resource names the server does not serve (counted once per stream and name), by resource type.",
		}, []string{"type"}),
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fairway_xds_snapshot_version",
			Help: "Version of the last topology snapshot pushed to the xDS caches.",
		}),
		changeToPush: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fairway_xds_change_to_push_seconds",
			Help:    "Time from a source observing a change to its resources being in the xDS caches.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		resources: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fairway_xds_resources",
			Help: "Resources in the xDS caches by type.",
		}, []string{"type"}),
		callerStreams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fairway_xds_caller_streams",
			Help: "Open xDS streams whose node states a locality zone, by zone.",
		}, []string{"zone"}),
		callerZonesUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fairway_xds_caller_zones_updates_total",
			Help: "Clusters re-rendered because their callers' distribution over zones moved (without a topology change).",
		}),
	}
	r.MustRegister(m.streams, m.pushes, m.nacks, m.unknown, m.version, m.changeToPush, m.resources,
		m.callerStreams, m.callerZonesUpdates)
	return m
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

// callbacks implements go-control-plane's server callbacks. They are called
// from each stream's goroutine and must not block.
type callbacks struct{ s *Server }

func (c *callbacks) open(protocol string, id int64) error {
	c.s.streamsMu.Lock()
	defer c.s.streamsMu.Unlock()
	c.s.streams[streamID{protocol, id}] = newStreamState()
	return nil
}

func (c *callbacks) closed(protocol string, id int64) {
	c.s.streamsMu.Lock()
	st, ok := c.s.streams[streamID{protocol, id}]
	if !ok {
		c.s.streamsMu.Unlock()
		return
	}
	delete(c.s.streams, streamID{protocol, id})
	for t := range st.types {
		c.s.metrics.streams.WithLabelValues(typeLabel(t), protocol).Dec()
	}
	if st.zone != "" {
		c.s.zoneStreamsLocked(st.zone, -1)
	}
	callersChanged := c.s.setClustersLocked(st, nil)
	c.s.streamsMu.Unlock()
	if callersChanged {
		c.s.callersChanged() // takes s.mu: not under streamsMu
	}
}

// request handles one request of a stream: stream accounting, callers'
// zones, NACKs and unknown names. names are the SotW resource names or the
// delta names subscribed to, unsubscribe the delta names unsubscribed from.
func (c *callbacks) request(protocol string, id int64, node *corepb.Node, typeURL string, names, unsubscribe []string, errDetail string) {
	s := c.s
	pushed := s.pushed.Load()
	var unknown []string
	s.streamsMu.Lock()
	st, ok := s.streams[streamID{protocol, id}]
	if !ok { // not seen opening (cannot happen with go-control-plane); track from here
		st = newStreamState()
		s.streams[streamID{protocol, id}] = st
	}
	if node.GetId() != "" {
		st.nodeID = node.GetId()
	}
	callersChanged := false
	if node != nil && !st.nodeSeen {
		zone := node.GetLocality().GetZone()
		if !slices.Contains(node.GetClientFeatures(), wire.CallerZonesFeature) {
			zone = "" // not a zone-aware caller: not counted
		}
		callersChanged = s.setZoneLocked(st, zone)
	}
	if typeURL == resourcev3.ClusterType {
		callersChanged = s.subscribeLocked(st, protocol, names, unsubscribe) || callersChanged
	}
	if typeURL != "" && !st.types[typeURL] {
		st.types[typeURL] = true
		s.metrics.streams.WithLabelValues(typeLabel(typeURL), protocol).Inc()
	}
	if pushed != nil {
		for _, name := range names {
			if known(pushed, typeURL, name) || st.unknown[typeURL+"/"+name] {
				continue
			}
			st.unknown[typeURL+"/"+name] = true
			unknown = append(unknown, name)
		}
	}
	nodeID := st.nodeID
	firstNACK := false
	if errDetail != "" && !st.nacked[typeURL+"/"+errDetail] {
		st.nacked[typeURL+"/"+errDetail] = true
		firstNACK = true
	}
	s.streamsMu.Unlock()

	if callersChanged {
		s.callersChanged()
	}
	if errDetail != "" {
		s.metrics.nacks.WithLabelValues(typeLabel(typeURL)).Inc()
		if firstNACK {
			s.log.Warn("xDS client rejected a response (NACK)", "node", nodeID, "stream", id, "protocol", protocol,
				"type", typeLabel(typeURL), "names", names, "error", errDetail)
		} else {
			s.log.Debug("xDS client rejected a response again (NACK)", "node", nodeID, "stream", id, "protocol", protocol,
				"type", typeLabel(typeURL), "names", names, "error", errDetail)
		}
		// go-control-plane answers a NACK at once with the same resources,
		// which the client NACKs again: slow that loop down on this stream.
		s.throttleNACK()
	}
	for _, name := range unknown {
		s.metrics.unknown.WithLabelValues(typeLabel(typeURL)).Inc()
		s.log.Info("xDS client requested a resource this server does not serve; answering without it",
			"node", nodeID, "stream", id, "protocol", protocol, "type", typeLabel(typeURL), "name", name)
	}
}

// known reports whether a resource of type typeURL named name is in the
// caches when snap has been pushed.
func known(snap *topology.Snapshot, typeURL, name string) bool {
	if name == "*" || strings.HasPrefix(name, "xdstp:") {
		return true // wildcard; xdstp names are not ours to judge
	}
	key, err := wire.ParseResourceName(name)
	if err != nil {
		return false
	}
	if _, ok := snap.Service(key); !ok {
		return false
	}
	switch typeURL {
	case resourcev3.ListenerType:
		return name == key.ResourceName() || name == key.FQDNResourceName()
	case resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.RouteType:
		return name == key.ResourceName()
	}
	return false
}

func (c *callbacks) OnStreamOpen(_ context.Context, id int64, _ string) error {
	return c.open(protoSotW, id)
}

func (c *callbacks) OnStreamClosed(id int64, _ *corepb.Node) { c.closed(protoSotW, id) }

func (c *callbacks) OnStreamRequest(id int64, req *discoverypb.DiscoveryRequest) error {
	c.request(protoSotW, id, req.GetNode(), req.GetTypeUrl(), req.GetResourceNames(), nil, req.GetErrorDetail().GetMessage())
	return nil
}

func (c *callbacks) OnStreamResponse(context.Context, int64, *discoverypb.DiscoveryRequest, *discoverypb.DiscoveryResponse) {
}

func (c *callbacks) OnDeltaStreamOpen(_ context.Context, id int64, _ string) error {
	return c.open(protoDelta, id)
}

func (c *callbacks) OnDeltaStreamClosed(id int64, _ *corepb.Node) { c.closed(protoDelta, id) }

func (c *callbacks) OnStreamDeltaRequest(id int64, req *discoverypb.DeltaDiscoveryRequest) error {
	c.request(protoDelta, id, req.GetNode(), req.GetTypeUrl(), req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe(), req.GetErrorDetail().GetMessage())
	return nil
}

func (c *callbacks) OnStreamDeltaResponse(int64, *discoverypb.DeltaDiscoveryRequest, *discoverypb.DeltaDiscoveryResponse) {
}

func (c *callbacks) OnFetchRequest(context.Context, *discoverypb.DiscoveryRequest) error { return nil }

func (c *callbacks) OnFetchResponse(*discoverypb.DiscoveryRequest, *discoverypb.DiscoveryResponse) {
}
