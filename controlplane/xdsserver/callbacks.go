package xdsserver

import (
	"context"
	"strings"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"

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
// kept by callerZones). It stays small: types and nacked have at most one
// entry per type the server serves (a request for another type ends the
// stream).
type streamState struct {
	nodeID  string
	types   map[string]bool   // type URLs this stream has requested
	unknown map[string]bool   // "type/name" already reported as unknown
	nacked  map[string]string // type URL → response nonce of the last NACK counted
}

func newStreamState() *streamState {
	return &streamState{types: map[string]bool{}, unknown: map[string]bool{}, nacked: map[string]string{}}
}

// streamRequest is what the callbacks read of a SotW or delta request.
type streamRequest struct {
	node        *corepb.Node
	typeURL     string
	names       []string // SotW resource_names; delta resource_names_subscribe
	unsubscribe []string // delta resource_names_unsubscribe
	version     string   // SotW version_info (the last version accepted); delta: ""
	nonce       string   // response_nonce
	errorDetail *statuspb.Status
}

// nack reports whether the request is a NACK.
func (r streamRequest) nack() bool { return r.errorDetail != nil }

// callbacks returns the go-control-plane callbacks of s: stream accounting,
// caller zones, NACKs and unknown names. go-control-plane calls them from
// each stream's goroutine; they do not block.
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
			s.request(streamID{protoSotW, id}, streamRequest{
				node: req.GetNode(), typeURL: req.GetTypeUrl(), names: req.GetResourceNames(),
				version: req.GetVersionInfo(), nonce: req.GetResponseNonce(), errorDetail: req.GetErrorDetail(),
			})
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, req *discoverypb.DeltaDiscoveryRequest) error {
			s.request(streamID{protoDelta, id}, streamRequest{
				node: req.GetNode(), typeURL: req.GetTypeUrl(), names: req.GetResourceNamesSubscribe(),
				unsubscribe: req.GetResourceNamesUnsubscribe(), nonce: req.GetResponseNonce(), errorDetail: req.GetErrorDetail(),
			})
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
// accounting, NACKs and unknown names.
func (s *Server) request(sid streamID, req streamRequest) {
	callersChanged := s.callers.node(sid, req.node)
	if req.typeURL == resourcev3.ClusterType {
		callersChanged = s.callers.subscribe(sid, req.names, req.unsubscribe) || callersChanged
	}
	if callersChanged {
		s.callersChanged()
	}
	nodeID, unknown, firstNACK := s.account(sid, req)
	if req.nack() {
		s.nacked(sid, nodeID, req, firstNACK)
	}
	for _, name := range unknown {
		s.metrics.unknown.WithLabelValues(typeLabel(req.typeURL)).Inc()
		s.log.Info("xDS client requested a resource this server does not serve; answering without it",
			"node", nodeID, "stream", sid.id, "protocol", sid.protocol, "type", typeLabel(req.typeURL), "name", name)
	}
}

// account records a request in its stream's state: the node ID, the type
// requested, the names not known since the first push, the NACK. It
// returns the node ID, the names to report as unknown (each once per
// stream) and whether the request is the stream's first NACK of the
// response it names (by nonce) for a type the server serves.
func (s *Server) account(sid streamID, req streamRequest) (nodeID string, unknown []string, firstNACK bool) {
	pushed := s.pushed.Load()
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	st, ok := s.streams[sid]
	if !ok { // not seen opening (cannot happen with go-control-plane); track from here
		st = newStreamState()
		s.streams[sid] = st
	}
	if req.node.GetId() != "" {
		st.nodeID = req.node.GetId()
	}
	_, served := s.caches[req.typeURL]
	if served && !st.types[req.typeURL] {
		st.types[req.typeURL] = true
		s.metrics.streams.WithLabelValues(typeLabel(req.typeURL), sid.protocol).Inc()
	}
	if pushed != nil && served {
		for _, name := range req.names {
			if known(pushed, req.typeURL, name) || st.unknown[req.typeURL+"/"+name] {
				continue
			}
			st.unknown[req.typeURL+"/"+name] = true
			unknown = append(unknown, name)
		}
	}
	if req.nack() && served {
		last, ok := st.nacked[req.typeURL]
		firstNACK = !ok || last != req.nonce
		st.nacked[req.typeURL] = req.nonce
	}
	return st.nodeID, unknown, firstNACK
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
