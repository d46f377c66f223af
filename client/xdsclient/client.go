// Package xdsclient is Fairway's small ADS client: it subscribes by resource
// name (never wildcard) to the Cluster and ClusterLoadAssignment resources of
// the services a process calls, over one ADS stream per Client shared by every
// watcher, and hands watchers decoded, validated updates.
//
// # Protocol
//
// The client speaks State-of-the-World (SotW) ADS, not incremental (delta)
// xDS. SotW is what grpc-go's own xDS client speaks (grpc-go 1.85 has no
// delta), so a Fairway client and a proxyless gRPC client exercise the same
// server code path, and the bookkeeping is smaller: one version and nonce per
// type, a whole resource list per request. The bytes delta would save are small
// here: the client subscribes by name to the few services it calls, and for
// ClusterLoadAssignments a SotW server already sends only the changed resources;
// only Cluster responses carry every subscribed Cluster (SotW full state), and
// Clusters are small and change rarely.
//
// Accepted responses are ACKed (version_info and response_nonce of the
// response). A response holding an invalid resource is NACKed: the request
// carries the previously accepted version, the nonce, and an error_detail
// (google.rpc.Status, code INVALID_ARGUMENT) naming every rejected resource and
// its problem. The valid resources of a partly invalid response are applied
// (as grpc-go does), each invalid one keeps its previous good value, and its
// watchers get an error wrapping ErrInvalidResource.
//
// # Connectivity
//
// The client reconnects with exponential backoff and jitter, rotating through
// its control-plane addresses on each failure, and on every new stream
// re-subscribes to every watched name. While it is disconnected it keeps its
// last good resources: watchers never see an empty endpoint list because the
// control plane is away, only an error wrapping ErrDisconnected, sent once when
// an established stream breaks or when every address has failed in a row.
//
// A replica that keeps its sockets open but stops answering is left for the
// next address: an established stream by keepalive (WithKeepalive, default
// DefaultKeepalive: within 30 s), a new one when its first response does not
// come within WithResponseTimeout (default DefaultResponseTimeout). A
// response larger than the receive limit (WithMaxRecvMsgSize, default
// DefaultMaxRecvMsgSize = wire.MaxMessageSize, the control plane's send
// limit) fails the stream; it is logged at error level with its size, and
// the reconnection backoff keeps growing, as it does for a stream that never
// worked.
//
// # Inspection
//
// Dump returns every subscribed resource with its status (REQUESTED, ACKED
// or NACKED, as CSDS names them), the version in use and, after a NACK,
// the rejected version and the error; package client serves it as CSDS.
//
// # Metrics
//
// With WithRegisterer: fairway_client_xds_connected (gauge, 0/1),
// fairway_client_xds_updates_total{type} (resource updates delivered),
// fairway_client_xds_nacks_total{type} (responses NACKed),
// fairway_client_xds_last_update_timestamp_seconds (last accepted response)
// and fairway_client_xds_stream_errors_total{reason} (streams ended by an
// error: the gRPC status code in snake_case, such as "unavailable" or
// "resource_exhausted", "no_response" for WithResponseTimeout, "eof" for a
// stream the server ended).
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	"github.com/fairway-lb/fairway/wire"
)

// Sentinel errors passed (wrapped) to watchers' OnError.
var (
	// ErrDisconnected: the ADS stream is down; the last good resource stays valid.
	ErrDisconnected = errors.New("fairway/xdsclient: disconnected from the control plane")
	// ErrInvalidResource: the control plane sent an invalid version of the
	// resource, which was NACKed; the last good resource stays valid.
	ErrInvalidResource = errors.New("fairway/xdsclient: invalid resource")
	// ErrResourceRemoved: the control plane no longer serves the Cluster.
	ErrResourceRemoved = errors.New("fairway/xdsclient: resource removed by the control plane")
)

// ClusterWatcher receives the updates of one Cluster. Its methods are called
// one at a time, in order, from the Client's callback goroutine (shared by all
// watchers of the Client): they must not block for long and must not call
// Client.Close. They may call Watch* and cancel functions.
type ClusterWatcher interface {
	// OnCluster is called with each new valid version of the Cluster, and at
	// once with the current one when the watch starts on a known name.
	OnCluster(Cluster)
	// OnError reports a NACKed version (ErrInvalidResource), a lost stream
	// (ErrDisconnected) or a removal (ErrResourceRemoved). Only a removal
	// invalidates the last Cluster delivered.
	OnError(error)
}

// EndpointsWatcher receives the updates of one ClusterLoadAssignment, with the
// same calling contract as ClusterWatcher.
type EndpointsWatcher interface {
	// OnEndpoints is called with each new valid version of the assignment,
	// and at once with the current one when the watch starts on a known name.
	OnEndpoints(Endpoints)
	// OnError reports a NACKed version (ErrInvalidResource) or a lost stream
	// (ErrDisconnected); the last assignment delivered stays valid.
	OnError(error)
}

// BackoffFunc returns how long to wait before reconnection attempt number
// retries (0 for the first retry after a stream that had worked).
type BackoffFunc func(retries int) time.Duration

// ExponentialBackoff returns a BackoffFunc with grpc-go's backoff.Config
// semantics: BaseDelay × Multiplier^retries, capped at MaxDelay, randomised by
// ±Jitter.
func ExponentialBackoff(cfg backoff.Config) BackoffFunc {
	return func(retries int) time.Duration {
		d := float64(cfg.BaseDelay)
		for i := 0; i < retries && d < float64(cfg.MaxDelay); i++ {
			d *= cfg.Multiplier
		}
		d = min(d, float64(cfg.MaxDelay))
		d *= 1 + cfg.Jitter*(rand.Float64()*2-1)
		return time.Duration(max(d, 0))
	}
}

// DefaultBackoff is the reconnection backoff used without WithBackoff.
var DefaultBackoff = backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 30 * time.Second}

// Defaults of the connection to the control plane.
const (
	// DefaultMaxRecvMsgSize is the largest response the client accepts
	// without WithMaxRecvMsgSize: wire.MaxMessageSize, the largest the
	// Fairway control plane sends.
	DefaultMaxRecvMsgSize = wire.MaxMessageSize
	// DefaultResponseTimeout is how long a new stream may wait for its
	// first response without WithResponseTimeout.
	DefaultResponseTimeout = 30 * time.Second
)

// DefaultKeepalive is the keepalive of the connection to the control plane
// without WithKeepalive: a ping after 20 s without a frame from the server,
// and the connection is given up (the stream fails, the client moves to
// the next address) when the ping is not answered within 10 s. A replica
// that keeps its socket open but stops answering is left within 30 s. 20 s
// is above the control plane's keepalive enforcement (5 s), so the server
// never closes the connection for pinging too often.
var DefaultKeepalive = keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 10 * time.Second}

type options struct {
	dialOpts        []grpc.DialOption
	maxRecvMsgSize  int
	keepalive       keepalive.ClientParameters
	responseTimeout time.Duration
	backoff         BackoffFunc
	validator       func(Cluster) error
	reg             prometheus.Registerer
	logger          *slog.Logger
}

// Option configures a Client.
type Option func(*options)

// WithDialOptions adds options used to dial the control plane, after the
// client's own (insecure transport credentials, the receive limit of
// WithMaxRecvMsgSize, the keepalive of WithKeepalive), so they override
// them: pass grpc.WithTransportCredentials for TLS.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOpts = append(o.dialOpts, opts...) }
}

// WithMaxRecvMsgSize sets the largest response the client accepts, in bytes
// (default DefaultMaxRecvMsgSize). A larger response fails the stream: it is
// logged at error level with its size and counted in
// fairway_client_xds_stream_errors_total{reason="resource_exhausted"}, and
// the client retries with backoff.
func WithMaxRecvMsgSize(n int) Option { return func(o *options) { o.maxRecvMsgSize = n } }

// WithKeepalive sets the keepalive of the connection to the control plane
// (default DefaultKeepalive). gRPC raises Time to at least 10 s.
func WithKeepalive(p keepalive.ClientParameters) Option {
	return func(o *options) { o.keepalive = p }
}

// WithResponseTimeout sets how long a new stream may go without its first
// response (default DefaultResponseTimeout; zero or less: no limit), from
// the start of the connection attempt. The Fairway control plane answers
// the first request of each type at once, even with no resource, so a
// stream still silent after d is on a replica that accepts connections but
// does not answer: the client gives it up and moves to the next address
// (fairway_client_xds_stream_errors_total{reason="no_response"}). An
// established stream that goes silent is left by keepalive.
func WithResponseTimeout(d time.Duration) Option {
	return func(o *options) { o.responseTimeout = d }
}

// WithBackoff sets the reconnection backoff (default ExponentialBackoff(DefaultBackoff)).
func WithBackoff(f BackoffFunc) Option { return func(o *options) { o.backoff = f } }

// WithClusterValidator adds a check run on every decoded Cluster before it is
// accepted; an error NACKs the Cluster and keeps its previous version. It is
// called from the stream goroutine and must not block.
func WithClusterValidator(f func(Cluster) error) Option {
	return func(o *options) { o.validator = f }
}

// WithRegisterer registers the client's metrics with r. Clients sharing a
// registerer share the metrics.
func WithRegisterer(r prometheus.Registerer) Option { return func(o *options) { o.reg = r } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Client is one ADS stream to the control plane shared by every watcher. All
// methods are safe for concurrent use.
type Client struct {
	servers []string
	node    *corepb.Node
	opts    options
	log     *slog.Logger
	m       *metrics

	cancel context.CancelFunc
	wg     sync.WaitGroup
	subCh  chan struct{} // signals the stream goroutine that subscriptions changed
	cb     *serializer

	mu        sync.Mutex
	resources map[string]map[string]*resourceState // type URL → name → state; guarded by mu
	connected bool                                 // guarded by mu
	downErr   error                                // why the stream is down, once watchers were told; guarded by mu
	closed    bool                                 // guarded by mu
}

type resourceState struct {
	raw      proto.Message // last accepted resource; nil until one arrives
	value    any           // Cluster or Endpoints decoded from raw
	watchers map[*watcher]struct{}

	// For Dump (CSDS): the version and time of the response that carried
	// raw, and the last rejection since (nil: none).
	version  string
	updated  time.Time
	rejected *rejection
}

// rejection is a NACKed version of a resource.
type rejection struct {
	version string
	err     string
	at      time.Time
}

type watcher struct {
	update    func(any)
	onErr     func(error)
	cancelled atomic.Bool // set by cancel; the serializer skips cancelled watchers
}

// New starts a client of the control planes at servers (host:port, tried in
// order, rotating on failure). node identifies this process (id, cluster,
// locality zone); it is sent in the first request of every stream. The stream
// opens when the first name is watched.
func New(servers []string, node *corepb.Node, opts ...Option) (*Client, error) {
	if len(servers) == 0 {
		return nil, errors.New("fairway/xdsclient: no control-plane address")
	}
	if node == nil || node.GetId() == "" {
		return nil, errors.New("fairway/xdsclient: node id is required")
	}
	o := options{
		maxRecvMsgSize:  DefaultMaxRecvMsgSize,
		keepalive:       DefaultKeepalive,
		responseTimeout: DefaultResponseTimeout,
		backoff:         ExponentialBackoff(DefaultBackoff),
		logger:          slog.Default(),
	}
	for _, opt := range opts {
		opt(&o)
	}
	o.dialOpts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(o.maxRecvMsgSize)),
		grpc.WithKeepaliveParams(o.keepalive),
	}, o.dialOpts...)
	m, err := newMetrics(o.reg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		servers:   slices.Clone(servers),
		node:      proto.Clone(node).(*corepb.Node),
		opts:      o,
		log:       o.logger.With("component", "fairway/xdsclient"),
		m:         m,
		cancel:    cancel,
		subCh:     make(chan struct{}, 1),
		cb:        newSerializer(),
		resources: map[string]map[string]*resourceState{wire.ClusterType: {}, wire.EndpointType: {}},
	}
	c.wg.Add(2)
	go func() { defer c.wg.Done(); c.cb.run(ctx) }()
	go func() { defer c.wg.Done(); c.run(ctx) }()
	return c, nil
}

// WatchCluster watches the Cluster called name. The returned cancel stops the
// watch (idempotent); when the last watcher of a name cancels, the client
// unsubscribes from it. A callback already running may finish after cancel
// returns; no new one starts.
func (c *Client) WatchCluster(name string, w ClusterWatcher) (cancel func()) {
	return c.watch(wire.ClusterType, name, &watcher{
		update: func(v any) { w.OnCluster(v.(Cluster)) },
		onErr:  w.OnError,
	})
}

// WatchEndpoints watches the ClusterLoadAssignment called name, with the
// semantics of WatchCluster.
func (c *Client) WatchEndpoints(name string, w EndpointsWatcher) (cancel func()) {
	return c.watch(wire.EndpointType, name, &watcher{
		update: func(v any) { w.OnEndpoints(v.(Endpoints)) },
		onErr:  w.OnError,
	})
}

func (c *Client) watch(typeURL, name string, w *watcher) func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return func() {}
	}
	rs := c.resources[typeURL][name]
	if rs == nil {
		rs = &resourceState{watchers: map[*watcher]struct{}{}}
		c.resources[typeURL][name] = rs
		c.signalSubsLocked()
		c.log.Debug("subscribe", "type", typeURL, "name", name)
	}
	rs.watchers[w] = struct{}{}
	if rs.value != nil {
		v := rs.value
		c.cb.schedule(w, func() { w.update(v) })
	} else if c.downErr != nil {
		err := c.downErr
		c.cb.schedule(w, func() { w.onErr(err) })
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			w.cancelled.Store(true)
			rs := c.resources[typeURL][name]
			if rs == nil {
				return
			}
			delete(rs.watchers, w)
			if len(rs.watchers) == 0 {
				delete(c.resources[typeURL], name)
				c.signalSubsLocked()
				c.log.Debug("unsubscribe", "type", typeURL, "name", name)
			}
		})
	}
}

// signalSubsLocked wakes the stream goroutine to send the new subscriptions.
// c.mu must be held.
func (c *Client) signalSubsLocked() {
	select {
	case c.subCh <- struct{}{}:
	default:
	}
}

// namesLocked returns the sorted names subscribed for typeURL. c.mu must be held.
func (c *Client) namesLocked(typeURL string) []string {
	return slices.Sorted(maps.Keys(c.resources[typeURL]))
}

// Close stops the stream and the callback goroutine and waits for them. No
// callback runs after Close returns.
func (c *Client) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	c.m.connected.Set(0)
}

// setConnected records that a stream received a response.
func (c *Client) setConnected() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.downErr = nil
	if !c.connected {
		c.connected = true
		c.m.connected.Set(1)
		c.log.Debug("connected")
	}
}

// setDisconnected records a failed stream or connection attempt and, when
// notify is set and watchers were not told yet, tells every watcher.
func (c *Client) setDisconnected(cause error, notify bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.connected = false
	c.m.connected.Set(0)
	if !notify || c.downErr != nil || c.closed {
		return
	}
	err := fmt.Errorf("%w: %w", ErrDisconnected, cause)
	c.downErr = err
	for _, byName := range c.resources {
		for _, rs := range byName {
			for w := range rs.watchers {
				c.cb.schedule(w, func() { w.onErr(err) })
			}
		}
	}
}
