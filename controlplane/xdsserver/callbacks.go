package xdsserver

import (
	"context"
	"slices"
	"strings"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fairway-lb/fairway/controlplane/auth"
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
// kept by callerZones). It stays small: types, names, nacked, debug and sotw
// have at most one entry per type the server serves (a request for another type
// ends the stream), delta at most the names limit, unknown at most
// maxUnknownPerStream, debug at most maxDebugNames names per type.
type streamState struct {
	nodeID      string                     // the first node id the stream stated; later ones are ignored
	nodeCounted bool                       // counted in Server.nodeStreams[nodeID]
	types       map[string]bool            // type URLs this stream has requested
	names       map[string]int             // type URL → names subscribed to
	total       int                        // sum of names
	delta       map[string]map[string]bool // delta, with a names limit: type URL → names subscribed to
	nacked      map[string]string          // type URL → response nonce of the last NACK counted
	unknown     map[string]bool            // "type/name" reported as unknown, at most maxUnknownPerStream
	// unknownLogged: the stream's log line about unknown names is written;
	// unknownAfter counts the unknown names found since (past the cap: each
	// time one is requested), for the closing summary.
	unknownLogged bool
	unknownAfter  int
	// zone is node.locality.zone of the request that stated nodeID; debug
	// is, by served type URL, what /debug/clients shows (debug.go).
	zone  string
	debug map[string]*typeDebug
	// sent is the last response of each type (debug.go), also in
	// Server.sent; it has a lock of its own.
	sent *streamSent
	// identity is the stream's, from its context at its opening
	// (identified: it had one); view is the view it reads (views.go).
	identity   auth.Identity
	identified bool
	view       *view
	// sotw is, by type URL, what the last SotW request subscribed to, so
	// that a request repeating it (an ACK) skips the work that depends on
	// its names alone.
	sotw map[string]sotwNames
}

// sotwNames is what a SotW stream's last request of a type subscribed to.
type sotwNames struct {
	names []string // a copy of the request's resource_names
	// scanned is the snapshot the names were last looked up in for unknown
	// ones (nil: not yet), again whether some were found that the stream
	// could not remember (found again on each request).
	scanned *topology.Snapshot
	again   bool
	// callers is the snapshot the Cluster names were last given to the
	// callers' accounting with (scoped streams: the names it sees depend
	// on it); callersSet: they were.
	callers    *topology.Snapshot
	callersSet bool
}

func newStreamState() *streamState {
	return &streamState{types: map[string]bool{}, names: map[string]int{}, unknown: map[string]bool{}, nacked: map[string]string{},
		sent: &streamSent{}}
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

// callbacks returns the go-control-plane callbacks of s: the limits, stream
// accounting, caller zones, NACKs and unknown names. go-control-plane calls them from
// each stream's goroutine; they do not block.
func (s *Server) callbacks() serverv3.CallbackFuncs {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			return s.streamOpened(ctx, streamID{protoSotW, id})
		},
		StreamClosedFunc: func(id int64, _ *corepb.Node) { s.streamClosed(streamID{protoSotW, id}) },
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			return s.streamOpened(ctx, streamID{protoDelta, id})
		},
		DeltaStreamClosedFunc: func(id int64, _ *corepb.Node) { s.streamClosed(streamID{protoDelta, id}) },
		// Each request's node, once read, is replaced with the stamp of the
		// stream's view (views.go).
		StreamRequestFunc: func(id int64, req *discoverypb.DiscoveryRequest) error {
			stamp, err := s.request(streamID{protoSotW, id}, streamRequest{
				node: req.GetNode(), typeURL: req.GetTypeUrl(), names: req.GetResourceNames(),
				version: req.GetVersionInfo(), nonce: req.GetResponseNonce(), errorDetail: req.GetErrorDetail(),
			})
			req.Node = stamp
			return err
		},
		StreamDeltaRequestFunc: func(id int64, req *discoverypb.DeltaDiscoveryRequest) error {
			stamp, err := s.request(streamID{protoDelta, id}, streamRequest{
				node: req.GetNode(), typeURL: req.GetTypeUrl(), names: req.GetResourceNamesSubscribe(),
				unsubscribe: req.GetResourceNamesUnsubscribe(), nonce: req.GetResponseNonce(), errorDetail: req.GetErrorDetail(),
			})
			req.Node = stamp
			return err
		},
	}
}

// errNoIdentity ends a stream without identity when one is required.
var errNoIdentity = status.Error(codes.Unauthenticated, "fairway/xdsserver: the stream carries no identity")

// streamOpened starts the accounting of a stream and gives it its view:
// its identity's namespace's, or the all view without identity (refused
// with WithRequireIdentity).
func (s *Server) streamOpened(ctx context.Context, sid streamID) error {
	id, ok := auth.FromContext(ctx)
	if !ok && s.requireIdentity {
		s.refused(sid, "", refusedNoIdentity, errNoIdentity)
		return errNoIdentity
	}
	st := newStreamState()
	st.identity, st.identified = id, ok
	st.view = s.views.acquire(ok, id.Namespace)
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	s.streams[sid] = st
	s.sent.Store(sid, st.sent)
	return nil
}

func (s *Server) streamClosed(sid streamID) {
	s.streamsMu.Lock()
	st, ok := s.streams[sid]
	if !ok {
		s.streamsMu.Unlock()
		return
	}
	delete(s.streams, sid)
	s.sent.Delete(sid)
	if st.view != nil {
		defer s.views.release(st.view)
	}
	for t := range st.types {
		s.metrics.streams.WithLabelValues(typeLabel(t), sid.protocol).Dec()
	}
	if st.nodeCounted {
		if s.nodeStreams[st.nodeID]--; s.nodeStreams[st.nodeID] <= 0 {
			delete(s.nodeStreams, st.nodeID)
		}
	}
	s.streamsMu.Unlock()
	if st.unknownAfter > 0 {
		s.log.Debug("xDS stream closed; it requested more resources this server does not serve after the first ones logged",
			"node", st.nodeID, "stream", sid.id, "protocol", sid.protocol, "unknown", st.unknownAfter)
	}
	if s.callers.closed(sid) {
		s.callersChanged()
	}
}

// accounted is what account found in a request.
type accounted struct {
	nodeID     string   // the stream's node id
	unknown    []string // unknown names to count: new to the stream, remembered
	found      int      // unknown names new to the stream, remembered or not
	logUnknown bool     // the stream's log line about unknown names is due
	firstNACK  bool     // the stream's first NACK of the response it names
	rejected   string   // a NACK's: the version of the response it names ("": not the last sent)
	// stamp is the stream's view's (nil: none, its watches are refused);
	// scoped: the stream sees only namespace ns (it has an identity).
	stamp  *corepb.Node
	scoped bool
	ns     string
	// pushed is the snapshot the request was judged against (nil: none
	// pushed yet); sameCallers: a SotW Cluster request that gives the
	// callers' accounting nothing new (its names and, for a scoped
	// stream, pushed are those of the stream's last one).
	pushed      *topology.Snapshot
	sameCallers bool
}

// request handles one request of a stream: the limits, stream accounting,
// callers' zones, NACKs and unknown names. It returns the stamp of the
// stream's view for the request's node. A non-nil error (a status) ends
// the stream: the request would take it past a limit.
func (s *Server) request(sid streamID, req streamRequest) (*corepb.Node, error) {
	acc, reason, err := s.account(sid, req)
	if err != nil {
		s.refused(sid, acc.nodeID, reason, err)
		return acc.stamp, err
	}
	callersChanged := s.callers.node(sid, req.node)
	if req.typeURL == resourcev3.ClusterType && !acc.sameCallers {
		names := req.names
		if acc.scoped { // it counts only for the Clusters it sees (none before the first push)
			pushed := acc.pushed
			names = slices.DeleteFunc(slices.Clone(names), func(n string) bool {
				return pushed == nil || !known(pushed, resourcev3.ClusterType, n) || !visibleIn(pushed, n, acc.ns)
			})
		}
		callersChanged = s.callers.subscribe(sid, names, req.unsubscribe) || callersChanged
	}
	if callersChanged {
		s.callersChanged()
	}
	if req.nack() {
		s.nacked(sid, acc.nodeID, acc.rejected, req, acc.firstNACK)
	}
	if len(acc.unknown) > 0 {
		s.metrics.unknown.WithLabelValues(typeLabel(req.typeURL)).Add(float64(len(acc.unknown)))
	}
	if acc.logUnknown {
		s.log.Info("xDS client requested resources this server does not serve; answering without them (further ones on this stream are counted, not logged)",
			"node", acc.nodeID, "stream", sid.id, "protocol", sid.protocol, "type", typeLabel(req.typeURL),
			"unknown", acc.found, "examples", acc.unknown[:min(len(acc.unknown), unknownExamples)])
	}
	return acc.stamp, nil
}

// account records a request in its stream's state: the node id, the names
// and type requested, the names not known since the first push, the NACK.
// It refuses (a status, and the reason) a request that would take the
// stream or its node past a limit, recording nothing of it but the node id.
func (s *Server) account(sid streamID, req streamRequest) (acc accounted, reason string, err error) {
	pushed := s.pushed.Load()
	acc.pushed = pushed
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	st, ok := s.streams[sid]
	if !ok { // not seen opening (cannot happen with go-control-plane); track from here
		st = newStreamState()
		s.streams[sid] = st
		s.sent.Store(sid, st.sent)
	}
	if st.view != nil {
		acc.stamp = st.view.stamp
	}
	acc.scoped, acc.ns = st.identified, st.identity.Namespace
	if err := s.admitNodeLocked(st, req.node.GetId()); err != nil {
		acc.nodeID = st.nodeID
		return acc, refusedStreamsPerNode, err
	}
	acc.nodeID = st.nodeID
	_, served := s.caches[req.typeURL]
	if !served {
		return acc, "", nil
	}
	if err := s.subscribeLocked(st, sid, req); err != nil {
		return acc, refusedNamesPerStream, err
	}
	prev, same := st.sotwLocked(sid, req)
	debugRequestLocked(st, sid, req, same)
	if !st.types[req.typeURL] {
		st.types[req.typeURL] = true
		s.metrics.streams.WithLabelValues(typeLabel(req.typeURL), sid.protocol).Inc()
	}
	if pushed != nil && !(same && prev.scanned == pushed && !prev.again) {
		acc.unknown, acc.found, acc.logUnknown = unknownLocked(st, pushed, req.typeURL, req.names)
		prev.scanned, prev.again = pushed, acc.found > len(acc.unknown)
	}
	if req.typeURL == resourcev3.ClusterType {
		acc.sameCallers = same && prev.callersSet && (!acc.scoped || prev.callers == pushed)
		prev.callers, prev.callersSet = pushed, true
	}
	if sid.protocol == protoSotW {
		st.sotw[req.typeURL] = prev
	}
	if req.nack() {
		last, ok := st.nacked[req.typeURL]
		acc.firstNACK = !ok || last != req.nonce
		st.nacked[req.typeURL] = req.nonce
		if sent := st.sent.get(req.typeURL); sent.nonce == req.nonce {
			acc.rejected = sent.version
		}
	}
	return acc, "", nil
}

// sotwLocked returns what the stream's last SotW request of req's type
// subscribed to, updated to req's names, and whether req repeats them (an
// ACK does); nothing for a delta stream. s.streamsMu is held.
func (st *streamState) sotwLocked(sid streamID, req streamRequest) (prev sotwNames, same bool) {
	if sid.protocol != protoSotW {
		return sotwNames{}, false
	}
	if st.sotw == nil {
		st.sotw = map[string]sotwNames{}
	}
	prev, ok := st.sotw[req.typeURL]
	if ok && slices.Equal(prev.names, req.names) {
		return prev, true
	}
	return sotwNames{names: slices.Clone(req.names)}, false
}

// admitNodeLocked counts the stream st for node id, the first id it
// states, unless that would exceed the streams per node. A stream counts
// for one node id, its first: later ones change nothing. s.streamsMu is
// held.
func (s *Server) admitNodeLocked(st *streamState, id string) error {
	if id == "" || st.nodeID != "" {
		return nil
	}
	st.nodeID = id
	if limit := s.limits.streamsPerNode; limit > 0 && s.nodeStreams[id] >= limit {
		return errStreamsPerNode(id, s.nodeStreams[id], limit)
	}
	s.nodeStreams[id]++
	st.nodeCounted = true
	return nil
}

// subscribeLocked applies the names of req, a request for a served type, to
// the names st subscribes to, unless that would exceed the names per stream
// (nothing is applied then). A SotW request replaces the type's names; a
// delta request subscribes, then unsubscribes. Without a limit, only SotW
// counts are kept. s.streamsMu is held.
func (s *Server) subscribeLocked(st *streamState, sid streamID, req streamRequest) error {
	limit := s.limits.namesPerStream
	if limit <= 0 {
		return nil
	}
	if len(req.names) > limit {
		return errNamesPerStream(st.total-st.names[req.typeURL]+len(req.names), limit)
	}
	n := len(req.names)
	if sid.protocol == protoDelta {
		if len(req.names) == 0 && len(req.unsubscribe) == 0 {
			return nil // an ACK or NACK
		}
		n = deltaCount(st.delta[req.typeURL], req.names, req.unsubscribe)
	}
	total := st.total - st.names[req.typeURL] + n
	if total > limit {
		return errNamesPerStream(total, limit)
	}
	st.total, st.names[req.typeURL] = total, n
	if sid.protocol == protoDelta {
		if st.delta == nil {
			st.delta = map[string]map[string]bool{}
		}
		set := st.delta[req.typeURL]
		if set == nil {
			set = make(map[string]bool, len(req.names))
			st.delta[req.typeURL] = set
		}
		for _, name := range req.names {
			set[name] = true
		}
		for _, name := range req.unsubscribe {
			delete(set, name)
		}
	}
	return nil
}

// deltaCount is the size of set once names are subscribed to, then
// unsubscribe unsubscribed from, without changing set: the work is that of
// the request, not of the set.
func deltaCount(set map[string]bool, names, unsubscribe []string) int {
	added := make(map[string]bool, len(names)) // names new to set
	for _, name := range names {
		if !set[name] {
			added[name] = true
		}
	}
	n := len(set) + len(added)
	gone := make(map[string]bool, len(unsubscribe))
	for _, name := range unsubscribe {
		if (set[name] || added[name]) && !gone[name] {
			gone[name] = true
			n--
		}
	}
	return n
}

// unknownLocked finds the names of a request for typeURL that snap, the
// pushed snapshot, does not serve and the stream has not reported yet. The
// stream remembers at most maxUnknownPerStream of them (each counts once, in
// counted); past that they are found again each time. It returns the names
// newly remembered, how many it found, and whether the stream's one log
// line about unknown names is due (the first request with any). The caller
// holds s.streamsMu.
func unknownLocked(st *streamState, snap *topology.Snapshot, typeURL string, names []string) (counted []string, found int, logNow bool) {
	for _, name := range names {
		if known(snap, typeURL, name) && (!st.identified || visibleIn(snap, name, st.identity.Namespace)) {
			continue
		}
		k := typeURL + "/" + name
		if st.unknown[k] {
			continue
		}
		found++
		if len(st.unknown) < maxUnknownPerStream {
			st.unknown[k] = true
			counted = append(counted, name)
		}
	}
	if found == 0 {
		return nil, 0, false
	}
	if st.unknownLogged {
		st.unknownAfter += found
		return counted, found, false
	}
	st.unknownLogged = true
	return counted, found, true
}

// visibleIn reports whether a client of namespace ns sees the service of
// resource name name in snap (true for names that are not a service's:
// known judges those).
func visibleIn(snap *topology.Snapshot, name, ns string) bool {
	key, ok := parseKey(name)
	if !ok {
		return true
	}
	svc, ok := snap.Service(key)
	return !ok || svc.Visible(ns)
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
