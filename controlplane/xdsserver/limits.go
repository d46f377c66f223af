package xdsserver

import (
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The server's limits on what one client may hold (see
// docs/reliability.md, "Limits"). Zero disables a limit.
const (
	// DefaultMaxStreamsPerConnection is the default of
	// WithMaxStreamsPerConnection: HTTP/2's recommended minimum for
	// SETTINGS_MAX_CONCURRENT_STREAMS. An xDS client needs one ADS stream
	// per connection (grpc-go, Envoy and the Fairway client open exactly
	// one); 100 leaves room for per-type xDS streams and reconnects.
	DefaultMaxStreamsPerConnection = 100
	// DefaultMaxStreamsPerNode is the default of WithMaxStreamsPerNode. A
	// pod's node id is its own (the Fairway client's default is
	// namespace/pod), and each of its processes opens one stream per xDS
	// client; 100 is far above that, and still lets clients that share one
	// node id (a bootstrap file common to a Deployment) connect by the
	// hundred: raise it, or give each pod its id, beyond that.
	DefaultMaxStreamsPerNode = 100
	// DefaultMaxNamesPerStream is the default of WithMaxNamesPerStream: a
	// client subscribed to 2,500 services through one stream (Listener,
	// RouteConfiguration, Cluster and ClusterLoadAssignment each) is at the
	// limit; a Fairway client subscribes to two names per service it calls.
	DefaultMaxNamesPerStream = 10000
)

// maxUnknownPerStream is how many unknown resource names a stream's state
// remembers (so that each is counted once); past it, unknown names are
// counted per stream for its closing summary only.
const maxUnknownPerStream = 100

// unknownExamples is how many unknown names the stream's log line shows.
const unknownExamples = 3

// refusalLogEvery is how often a refusal of each reason is logged at warn
// level; the others in between log at debug level.
const refusalLogEvery = 10 * time.Second

// Refusal reasons: the label of fairway_xds_refused_streams_total.
const (
	refusedStreamsPerNode = "streams_per_node"
	refusedNamesPerStream = "names_per_stream"
	refusedNoIdentity     = "no_identity" // WithRequireIdentity
)

// limits are the server's limits; zero: none.
type limits struct {
	streamsPerConn int // streams open on one gRPC connection (grpc.MaxConcurrentStreams)
	streamsPerNode int // streams open with one node id
	namesPerStream int // resource names one stream subscribes to, over all types

	// Connections and messages (connlimits.go).
	maxSendMsgSize   int
	sizeWarning      int
	maxAge           time.Duration
	maxAgeGrace      time.Duration
	keepaliveTime    time.Duration
	keepaliveTimeout time.Duration

	extra []grpc.ServerOption // WithGRPCServerOptions
}

// WithMaxStreamsPerConnection limits the streams open at once on one gRPC
// connection of the server Serve starts (grpc.MaxConcurrentStreams; default
// DefaultMaxStreamsPerConnection; 0: no limit). The HTTP/2 transport
// enforces it: a grpc-go client waits for a free slot before it opens
// another stream, a client ignoring the setting gets REFUSED_STREAM. A
// caller of RegisterGRPC sets it on its own server.
func WithMaxStreamsPerConnection(n int) Option {
	return func(o *options) { o.limits.streamsPerConn = max(n, 0) }
}

// WithMaxStreamsPerNode limits the streams open at once with one node id
// (default DefaultMaxStreamsPerNode; 0: no limit): a stream whose first
// request carrying a node id would exceed it ends with RESOURCE_EXHAUSTED.
// Streams whose requests carry no node id are not counted.
func WithMaxStreamsPerNode(n int) Option {
	return func(o *options) { o.limits.streamsPerNode = max(n, 0) }
}

// WithMaxNamesPerStream limits the resource names one stream subscribes to,
// over all types (default DefaultMaxNamesPerStream; 0: no limit): a request
// that would take a stream past it ends the stream with RESOURCE_EXHAUSTED.
// A SotW request counts its resource_names, a delta stream the names it is
// subscribed to.
func WithMaxNamesPerStream(n int) Option {
	return func(o *options) { o.limits.namesPerStream = max(n, 0) }
}

// WithCallerZonesInterval sets the shortest time between two republishes
// of one Cluster for a change of its callers alone (default
// DefaultCallerZonesInterval; 0: every change that moves enough). A change
// within the interval is published when it ends.
func WithCallerZonesInterval(d time.Duration) Option {
	return func(o *options) { o.callerZonesInterval = max(d, 0) }
}

// defaultLimits are the limits New starts from.
func defaultLimits() limits {
	return limits{
		streamsPerConn:   DefaultMaxStreamsPerConnection,
		streamsPerNode:   DefaultMaxStreamsPerNode,
		namesPerStream:   DefaultMaxNamesPerStream,
		maxSendMsgSize:   DefaultMaxSendMsgSize,
		sizeWarning:      DefaultResponseSizeWarning,
		maxAge:           DefaultMaxConnectionAge,
		maxAgeGrace:      DefaultMaxConnectionAgeGrace,
		keepaliveTime:    DefaultKeepaliveTime,
		keepaliveTimeout: DefaultKeepaliveTimeout,
	}
}

// errStreamsPerNode is the status a stream refused for its node's streams
// ends with.
func errStreamsPerNode(node string, open, limit int) error {
	return status.Errorf(codes.ResourceExhausted, "fairway/xdsserver: node %q has %d streams open (limit %d)", node, open, limit)
}

// errNamesPerStream is the status a stream refused for its names ends with.
func errNamesPerStream(names, limit int) error {
	return status.Errorf(codes.ResourceExhausted, "fairway/xdsserver: the request would subscribe the stream to %d resource names (limit %d)", names, limit)
}

// refused counts and logs a stream refused for reason with err.
func (s *Server) refused(sid streamID, nodeID, reason string, err error) {
	s.metrics.refused.WithLabelValues(reason).Inc()
	attrs := []any{"node", nodeID, "stream", sid.id, "protocol", sid.protocol, "reason", reason, "error", err}
	if skipped, ok := s.refusals.Allow(reason, s.clock.Now()); ok {
		attrs = append(attrs, "not_warned_since_last", skipped)
		s.log.Warn(fmt.Sprintf("refused an xDS stream (further refusals for %s within %v log at debug level)", reason, refusalLogEvery), attrs...)
		return
	}
	s.log.Debug("refused an xDS stream", attrs...)
}
