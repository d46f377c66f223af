package xdsserver

import (
	"context"
	"strings"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"

	"github.com/fairway-lb/fairway/controlplane/topology"
)

const (
	protoSotW  = "sotw"
	protoDelta = "delta"
)

type streamID struct {
	protocol string // protoSotW or protoDelta
	id       int64
}

// streamState is the server's accounting of one stream (its caller zone is
// kept by callerZones).
type streamState struct {
	nodeID  string
	types   map[string]bool // type URLs this stream has requested
	unknown map[string]bool // "type/name" already reported as unknown
	nacked  map[string]bool // "type/error" already logged as NACKed
}

func newStreamState() *streamState {
	return &streamState{types: map[string]bool{}, unknown: map[string]bool{}, nacked: map[string]bool{}}
}

// callbacks returns the go-control-plane callbacks of s: stream accounting,
// caller zones, NACKs and unknown names. go-control-plane calls them from
// each stream's goroutine; they do not block, except that a NACK delays its
// own stream (throttleNACK).
func (s *Server) callbacks() serverv3.CallbackFuncs {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(_ context.Context, id int64, _ string) error {
			s.streamOpened(streamID{protoSotW, id})
			return nil
		},
		StreamClosedFunc: func(id int64, _ *corepb.Node) { s.streamClosed(streamID{protoSotW, id}) },
		DeltaStreamOpenFunc: func(_ context.Context, id int64, _ string) error {
			s.streamOpened(streamID{protoDelta, id})
			return nil
		},
		DeltaStreamClosedFunc: func(id int64, _ *corepb.Node) { s.streamClosed(streamID{protoDelta, id}) },
		StreamRequestFunc: func(id int64, req *discoverypb.DiscoveryRequest) error {
			s.request(streamID{protoSotW, id}, req.GetNode(), req.GetTypeUrl(), req.GetResourceNames(), nil,
				req.GetErrorDetail().GetMessage())
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, req *discoverypb.DeltaDiscoveryRequest) error {
			s.request(streamID{protoDelta, id}, req.GetNode(), req.GetTypeUrl(), req.GetResourceNamesSubscribe(),
				req.GetResourceNamesUnsubscribe(), req.GetErrorDetail().GetMessage())
			return nil
		},
	}
}

func (s *Server) streamOpened(sid streamID) {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	s.streams[sid] = newStreamState()
}

func (s *Server) streamClosed(sid streamID) {
	s.streamsMu.Lock()
	st, ok := s.streams[sid]
	if !ok {
		s.streamsMu.Unlock()
		return
	}
	delete(s.streams, sid)
	for t := range st.types {
		s.metrics.streams.WithLabelValues(typeLabel(t), sid.protocol).Dec()
	}
	s.streamsMu.Unlock()
	if s.callers.closed(sid) {
		s.callersChanged()
	}
}

// request handles one request of a stream: callers' zones, stream
// accounting, NACKs and unknown names. names are the SotW resource names or
// the delta names subscribed to, unsubscribe the delta names unsubscribed
// from.
func (s *Server) request(sid streamID, node *corepb.Node, typeURL string, names, unsubscribe []string, errDetail string) {
	callersChanged := s.callers.node(sid, node)
	if typeURL == resourcev3.ClusterType {
		callersChanged = s.callers.subscribe(sid, names, unsubscribe) || callersChanged
	}
	if callersChanged {
		s.callersChanged()
	}
	nodeID, unknown, firstNACK := s.account(sid, node, typeURL, names, errDetail)
	if errDetail != "" {
		s.nacked(sid, nodeID, typeURL, names, errDetail, firstNACK)
	}
	for _, name := range unknown {
		s.metrics.unknown.WithLabelValues(typeLabel(typeURL)).Inc()
		s.log.Info("xDS client requested a resource this server does not serve; answering without it",
			"node", nodeID, "stream", sid.id, "protocol", sid.protocol, "type", typeLabel(typeURL), "name", name)
	}
}

// account records a request in its stream's state: the node ID, the type
// requested, the names not known since the first push. It returns the
// node ID, the names to report as unknown (each once per stream) and
// whether the stream reports errDetail for typeURL for the first time.
func (s *Server) account(sid streamID, node *corepb.Node, typeURL string, names []string, errDetail string) (nodeID string, unknown []string, firstNACK bool) {
	pushed := s.pushed.Load()
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	st, ok := s.streams[sid]
	if !ok { // not seen opening (cannot happen with go-control-plane); track from here
		st = newStreamState()
		s.streams[sid] = st
	}
	if node.GetId() != "" {
		st.nodeID = node.GetId()
	}
	if typeURL != "" && !st.types[typeURL] {
		st.types[typeURL] = true
		s.metrics.streams.WithLabelValues(typeLabel(typeURL), sid.protocol).Inc()
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
	if errDetail != "" && !st.nacked[typeURL+"/"+errDetail] {
		st.nacked[typeURL+"/"+errDetail] = true
		firstNACK = true
	}
	return st.nodeID, unknown, firstNACK
}

// nacked counts and logs a NACK (at warn level the first time the stream
// reports the error for the type), then delays the stream: go-control-plane
// answers a NACK at once with the same resources, which the client NACKs
// again.
func (s *Server) nacked(sid streamID, nodeID, typeURL string, names []string, errDetail string, first bool) {
	s.metrics.nacks.WithLabelValues(typeLabel(typeURL)).Inc()
	attrs := []any{"node", nodeID, "stream", sid.id, "protocol", sid.protocol,
		"type", typeLabel(typeURL), "names", names, "error", errDetail}
	if first {
		s.log.Warn("xDS client rejected a response (NACK)", attrs...)
	} else {
		s.log.Debug("xDS client rejected a response again (NACK)", attrs...)
	}
	s.throttleNACK()
}

// throttleNACK delays the stream that sent a NACK by the NACK delay (or until
// Close). It runs on that stream's goroutine.
func (s *Server) throttleNACK() {
	if s.nackDelay <= 0 {
		return
	}
	t := time.NewTimer(s.nackDelay) // real time: a fake clock (WithClock) drives only pushes
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
	}
}

// known reports whether a resource of type typeURL named name is in the
// caches when snap has been pushed.
func known(snap *topology.Snapshot, typeURL, name string) bool {
	if name == "*" || strings.HasPrefix(name, "xdstp:") {
		return true // wildcard; xdstp names are not ours to judge
	}
	key, ok := parseKey(name)
	if !ok {
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
