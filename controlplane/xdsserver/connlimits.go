package xdsserver

import (
	"context"
	"log/slog"
	"time"

	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
	"k8s.io/utils/clock"

	"github.com/fairway-lb/fairway/internal/loglimit"
	"github.com/fairway-lb/fairway/wire"
)

// Limits of the gRPC connections and of the responses the server sends. docs/reliability.md
// ("Limits") gives the reasons and the measurements behind each default.
const (
	// DefaultMaxSendMsgSize is the largest response the server sends:
	// wire.MaxMessageSize, the largest a Fairway client accepts by default.
	// A larger response fails its stream (gRPC ResourceExhausted), which
	// is logged at error level and counted in
	// fairway_xds_large_responses_total{limit="max"}.
	DefaultMaxSendMsgSize = wire.MaxMessageSize
	// DefaultResponseSizeWarning is the response size from which the
	// server warns: 3 MiB, three quarters of the 4 MiB receive limit that
	// gRPC clients have unless told otherwise (grpc-go's proxyless xDS
	// client among them, and Fairway clients before they were given
	// wire.MaxMessageSize): such a client cannot take much more.
	DefaultResponseSizeWarning = 3 << 20

	// DefaultMaxConnectionAge is how long a client connection lives before
	// the server asks the client to reconnect (GOAWAY; gRPC adds ±10 %
	// jitter), so that clients spread over every replica again after a
	// rollout or a scale-up instead of staying on the replicas that were up
	// first.
	DefaultMaxConnectionAge = 30 * time.Minute
	// DefaultMaxConnectionAgeGrace is how long an aged-out connection's
	// streams may go on before the server closes it: long enough for the
	// largest response (64 MiB) to finish at 2.2 MB/s, short enough that
	// ADS streams, which never end by themselves, do move.
	DefaultMaxConnectionAgeGrace = 30 * time.Second

	// DefaultKeepaliveTime and DefaultKeepaliveTimeout: the server pings a
	// connection silent for DefaultKeepaliveTime and closes it when the ping
	// is not answered within DefaultKeepaliveTimeout, so streams of clients
	// that vanished without a word end (and stop counting as callers).
	DefaultKeepaliveTime    = 30 * time.Second
	DefaultKeepaliveTimeout = 10 * time.Second
	// KeepaliveMinTime is the keepalive enforcement: clients may ping as
	// often as every 5 s, with or without a stream, without being told to go
	// away (ENHANCE_YOUR_CALM). The Fairway client pings after 20 s of
	// silence, grpc-go's default is none, Envoy's a configured interval.
	KeepaliveMinTime = 5 * time.Second
)

// WithMaxSendMsgSize sets the largest response the server sends, in bytes
// (default DefaultMaxSendMsgSize). Clients must accept at least as much.
func WithMaxSendMsgSize(n int) Option { return func(o *options) { o.limits.maxSendMsgSize = n } }

// WithResponseSizeWarning sets the response size, in bytes, from which the
// server counts the response in fairway_xds_large_responses_total{limit=
// "warning"} and logs a warning (at most one a minute); default
// DefaultResponseSizeWarning, zero or less: never.
func WithResponseSizeWarning(n int) Option { return func(o *options) { o.limits.sizeWarning = n } }

// WithMaxConnectionAge sets how long a client connection lives (age; zero
// or less: for ever) and how long its streams may go on after the server
// asked the client to reconnect (grace). Defaults DefaultMaxConnectionAge
// and DefaultMaxConnectionAgeGrace.
func WithMaxConnectionAge(age, grace time.Duration) Option {
	return func(o *options) { o.limits.maxAge, o.limits.maxAgeGrace = age, grace }
}

// WithKeepalive sets the server's keepalive pings: after interval without
// a frame from the client, answered within timeout or the connection is
// closed. Defaults DefaultKeepaliveTime and DefaultKeepaliveTimeout.
func WithKeepalive(interval, timeout time.Duration) Option {
	return func(o *options) { o.limits.keepaliveTime, o.limits.keepaliveTimeout = interval, timeout }
}

// WithGRPCServerOptions adds options to those of GRPCServerOptions, after
// them: transport credentials (grpc.Creds) and the authentication
// interceptor (grpc.StreamInterceptor) of the caller.
func WithGRPCServerOptions(opts ...grpc.ServerOption) Option {
	return func(o *options) { o.limits.extra = append(o.limits.extra, opts...) }
}

// GRPCServerOptions are the options Serve creates its gRPC server with:
// the streams per connection, the send limit, keepalive and its
// enforcement, the connection age, then WithGRPCServerOptions'. A
// caller of RegisterGRPC passes them to its own grpc.NewServer.
func (s *Server) GRPCServerOptions() []grpc.ServerOption {
	params := keepalive.ServerParameters{Time: s.limits.keepaliveTime, Timeout: s.limits.keepaliveTimeout}
	if s.limits.maxAge > 0 {
		params.MaxConnectionAge, params.MaxConnectionAgeGrace = s.limits.maxAge, s.limits.maxAgeGrace
	}
	return append([]grpc.ServerOption{
		grpc.MaxConcurrentStreams(uint32(s.limits.streamsPerConn)),
		grpc.MaxSendMsgSize(s.limits.maxSendMsgSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(params),
	}, s.limits.extra...)
}

// sizeLogInterval is the least time between two log lines of responseSizes
// at the same level.
const sizeLogInterval = time.Minute

// responseSizes measures every response before it is sent: its size goes
// into fairway_xds_response_bytes, and one over the warning threshold or
// the send limit is counted in fairway_xds_large_responses_total and logged
// (warn, or error: that one will not be sent), at most once a
// sizeLogInterval per level, with the number of such responses since the
// last line. Called from the streams' goroutines; it never blocks.
type responseSizes struct {
	// immutable
	warnAt, max int
	bytes       *prometheus.HistogramVec // {type, protocol}
	large       *prometheus.CounterVec   // {type, protocol, limit}
	log         *slog.Logger
	clock       clock.PassiveClock
	lines       *loglimit.Limit[slog.Level] // a line per level each sizeLogInterval
}

func newResponseSizes(l limits, m *metrics, log *slog.Logger, c clock.PassiveClock) *responseSizes {
	return &responseSizes{warnAt: l.sizeWarning, max: l.maxSendMsgSize, bytes: m.responseBytes, large: m.largeResponses,
		log: log, clock: c, lines: loglimit.New[slog.Level](sizeLogInterval)}
}

// callbacks sets the response callbacks of cb; each also calls sent (the
// server's record of the last response of a stream's type, for
// /debug/clients).
func (r *responseSizes) callbacks(cb *serverv3.CallbackFuncs, sent func(sid streamID, typeURL, version, nonce string)) {
	cb.StreamResponseFunc = func(_ context.Context, id int64, _ *discoverypb.DiscoveryRequest, resp *discoverypb.DiscoveryResponse) {
		r.observe(protoSotW, id, resp.GetTypeUrl(), resp.GetVersionInfo(), len(resp.GetResources()), proto.Size(resp))
		sent(streamID{protoSotW, id}, resp.GetTypeUrl(), resp.GetVersionInfo(), resp.GetNonce())
	}
	cb.StreamDeltaResponseFunc = func(id int64, _ *discoverypb.DeltaDiscoveryRequest, resp *discoverypb.DeltaDiscoveryResponse) {
		r.observe(protoDelta, id, resp.GetTypeUrl(), resp.GetSystemVersionInfo(), len(resp.GetResources()), proto.Size(resp))
		sent(streamID{protoDelta, id}, resp.GetTypeUrl(), resp.GetSystemVersionInfo(), resp.GetNonce())
	}
}

func (r *responseSizes) observe(protocol string, stream int64, typeURL, version string, resources, size int) {
	t := typeLabel(typeURL)
	r.bytes.WithLabelValues(t, protocol).Observe(float64(size))
	var level slog.Level
	var limit, msg string
	switch {
	case r.max > 0 && size > r.max:
		level, limit = slog.LevelError, "max"
		msg = "xDS response larger than the send limit: not sent, the stream fails and its client stays on what it had"
	case r.warnAt > 0 && size >= r.warnAt:
		level, limit = slog.LevelWarn, "warning"
		msg = "large xDS response: gRPC clients with the stock 4 MiB receive limit (grpc-go proxyless) cannot take much more"
	default:
		return
	}
	r.large.WithLabelValues(t, protocol, limit).Inc()
	skipped, ok := r.lines.Allow(level, r.clock.Now())
	if !ok {
		return
	}
	r.log.Log(context.Background(), level, msg, "type", t, "protocol", protocol, "stream", stream, "version", version,
		"resources", resources, "size_bytes", size, "warning_bytes", r.warnAt, "limit_bytes", r.max, "not_logged_since_last", skipped)
}
