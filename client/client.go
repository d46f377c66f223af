package client

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	grpcresolver "google.golang.org/grpc/resolver"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/fairway-lb/fairway/client/balancer"
	"github.com/fairway-lb/fairway/client/resolver"
	"github.com/fairway-lb/fairway/client/xdsclient"
	"github.com/fairway-lb/fairway/internal/promreg"
	"github.com/fairway-lb/fairway/wire"
)

// Environment variables read when the corresponding option is not given.
const (
	// EnvXDSAddr lists the control-plane addresses, comma-separated
	// ("fairway-xds.fairway-system:18000", the Service of deploy/; several are
	// tried in order).
	EnvXDSAddr = "FAIRWAY_XDS_ADDR"
	// EnvZone is the caller's zone (topology.kubernetes.io/zone).
	EnvZone = "FAIRWAY_ZONE"
	// EnvNodeID overrides the xDS node id.
	EnvNodeID = "FAIRWAY_NODE_ID"
	// EnvNodeCluster sets the xDS node cluster (default "fairway-client").
	EnvNodeCluster = "FAIRWAY_NODE_CLUSTER"
	// EnvPodName, EnvPodNamespace and EnvNodeName are the Kubernetes
	// downward-API conventions: the node id is POD_NAMESPACE/POD_NAME, and
	// NODE_NAME goes into the node metadata as "node_name".
	EnvPodName      = "POD_NAME"
	EnvPodNamespace = "POD_NAMESPACE"
	EnvNodeName     = "NODE_NAME"
)

// PodInfoLabelsFile is where a downwardAPI volume exposes the pod's labels
// (fieldRef metadata.labels, mounted at /etc/podinfo, path "labels"). The
// caller's zone is read from its topology.kubernetes.io/zone label (set on
// pods by the PodTopologyLabels admission plugin) when neither WithZone nor
// FAIRWAY_ZONE gives one.
const PodInfoLabelsFile = "/etc/podinfo/labels"

// ZoneLabel is the well-known zone label.
const ZoneLabel = "topology.kubernetes.io/zone"

// podInfoLabels is PodInfoLabelsFile; tests point it elsewhere.
var podInfoLabels = PodInfoLabelsFile

func init() { grpcresolver.Register(&builder{}) }

type config struct {
	servers  []string
	zone     *string
	nodeID   string
	strategy json.RawMessage
	reg      prometheus.Registerer
	logger   *slog.Logger
	xdsDial  []grpc.DialOption
	sec      xdsSecurity // xdscreds.go
}

// Option configures WithFairway.
type Option func(*config)

// WithXDSServers sets the control-plane addresses (host:port), tried in order
// with failover. Default: FAIRWAY_XDS_ADDR.
func WithXDSServers(addrs ...string) Option {
	return func(c *config) { c.servers = addrs }
}

// WithZone sets the caller's zone. Default: FAIRWAY_ZONE, then the
// topology.kubernetes.io/zone line of PodInfoLabelsFile, else unknown.
func WithZone(zone string) Option { return func(c *config) { c.zone = &zone } }

// WithNodeID sets the xDS node id the channel's xDS client presents to the
// control plane. Default: FAIRWAY_NODE_ID, else POD_NAMESPACE/POD_NAME, else
// HOSTNAME-PID. Channels share an xDS client (one ADS stream) only when their
// control-plane addresses, node ids and zones are all the same; a process
// normally has one of each, hence one stream.
func WithNodeID(id string) Option { return func(c *config) { c.nodeID = id } }

// WithStrategy overrides the strategy chain served by the control plane for
// every target of the channel: a JSON array such as
// `[{"zone_affinity":{}},{"p2c":{}}]`. An invalid chain fails the channel's
// resolver with a clear error.
func WithStrategy(chainJSON string) Option {
	return func(c *config) { c.strategy = json.RawMessage(chainJSON) }
}

// WithRegisterer registers the client's metrics with reg: the balancer's
// (balancer.Collector: picks, in-flight requests, ejections, zone spill)
// and the xDS client's. Default nil: not registered. Registration goes
// through promreg.Register, so channels that share reg share the
// collectors; the shared xDS client takes the registerer of the channel that
// created it.
func WithRegisterer(reg prometheus.Registerer) Option { return func(c *config) { c.reg = reg } }

// WithXDSDialOptions adds options to the dial of the control plane (the
// xDS connection, not the channel's own), after the xDS client's defaults,
// which they override: the credentials of WithXDSTLS and WithXDSTokenFile
// (else insecure transport credentials), a receive limit of
// xdsclient.DefaultMaxRecvMsgSize (wire.MaxMessageSize, what the control
// plane may send), the keepalive xdsclient.DefaultKeepalive. For example:
//
//	client.WithXDSDialOptions(
//		grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
//		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(128<<20)),
//		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: time.Minute, Timeout: 20 * time.Second}),
//	)
//
// Like the registerer, they are those of the channel that created the
// shared xDS client.
func WithXDSDialOptions(opts ...grpc.DialOption) Option {
	return func(c *config) { c.xdsDial = append(c.xdsDial, opts...) }
}

// WithLogger sets the logger of the resolver and of a newly created xDS
// client. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithFairway returns a dial option that resolves fairway:/// targets of this
// channel with the given options, without the global registration (which
// still exists but is not used by this channel). Options not given fall back
// to the environment when the channel first resolves.
func WithFairway(opts ...Option) grpc.DialOption {
	var c config
	for _, o := range opts {
		o(&c)
	}
	return grpc.WithResolvers(&builder{cfg: c})
}

// builder completes its config from the environment at each Build, so that
// the global registration at init reads the environment only when a channel
// first resolves.
type builder struct{ cfg config }

func (b *builder) Scheme() string { return resolver.Scheme }

func (b *builder) Build(t grpcresolver.Target, cc grpcresolver.ClientConn, opts grpcresolver.BuildOptions) (grpcresolver.Resolver, error) {
	cfg := b.cfg
	if len(cfg.servers) == 0 {
		cfg.servers = splitList(os.Getenv(EnvXDSAddr))
	}
	if len(cfg.servers) == 0 {
		return nil, fmt.Errorf("fairway/client: no control-plane address for %s: set %s or use WithXDSServers", t.String(), EnvXDSAddr)
	}
	zone := ""
	if cfg.zone != nil {
		zone = *cfg.zone
	} else {
		zone = zoneFromEnv()
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	if _, err := promreg.Register(cfg.reg, balancer.Collector()); err != nil {
		return nil, fmt.Errorf("fairway/client: register the balancer's metrics: %w", err)
	}
	if len(cfg.strategy) > 0 {
		if err := ValidateStrategy(cfg.strategy); err != nil {
			return nil, fmt.Errorf("strategy override: %w", err)
		}
	}
	src := func() (resolver.XDSClient, func(), error) { return shared.acquire(cfg, zone) }
	rb := resolver.NewBuilder(src, resolver.WithZone(zone), resolver.WithStrategy(cfg.strategy), resolver.WithLogger(cfg.logger))
	return rb.Build(t, cc, opts)
}

// ValidateStrategy checks a strategy chain (JSON array; empty means the
// default composition) with the balancer's own config parser. The shared xDS
// client NACKs a Cluster whose chain fails it, keeping the previous one.
func ValidateStrategy(chain json.RawMessage) error {
	cfg := map[string]json.RawMessage{}
	if len(chain) > 0 {
		cfg["strategy"] = chain
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("fairway/client: strategy: %w", err)
	}
	_, err = balancer.ParseConfigJSON(raw)
	return err
}

// validateCluster is the shared xDS client's Cluster validator. Its error
// goes, as is, into the NACK's error_detail and the watchers' errors, after
// the xdsclient's "Cluster NAME: ".
func validateCluster(c xdsclient.Cluster) error { return ValidateStrategy(c.Strategy) }

// shared is the process-wide set of xDS clients.
var shared = &pool{clients: map[poolKey]*pooled{}}

// pool keeps one xdsclient.Client per control-plane address list, node id
// and zone, shared by every channel with the same three and closed when the
// last one closes. The node (id and locality) is what the control plane
// counts callers by, so channels that present different nodes get their own
// streams.
type pool struct {
	mu      sync.Mutex
	clients map[poolKey]*pooled // guarded by mu
}

// poolKey identifies a shared client.
type poolKey struct {
	servers string // comma-joined addresses
	nodeID  string
	zone    string
}

type pooled struct {
	c         *xdsclient.Client
	stopCreds func() // stops watching the TLS files
	refs      int
}

func (p *pool) acquire(cfg config, zone string) (resolver.XDSClient, func(), error) {
	node := nodeFromEnv(cfg.nodeID, zone)
	key := poolKey{servers: strings.Join(cfg.servers, ","), nodeID: node.GetId(), zone: zone}
	p.mu.Lock()
	defer p.mu.Unlock()
	pc := p.clients[key]
	if pc == nil {
		creds, stopCreds, err := cfg.sec.fromEnv().dialOptions(cfg.logger, cfg.reg)
		if err != nil {
			return nil, nil, err
		}
		c, err := xdsclient.New(cfg.servers, node,
			xdsclient.WithClusterValidator(validateCluster),
			xdsclient.WithRegisterer(cfg.reg),
			xdsclient.WithLogger(cfg.logger),
			xdsclient.WithDialOptions(append(creds, cfg.xdsDial...)...))
		if err != nil {
			stopCreds()
			return nil, nil, err
		}
		pc = &pooled{c: c, stopCreds: stopCreds}
		p.clients[key] = pc
	}
	pc.refs++
	var once sync.Once
	release := func() {
		once.Do(func() {
			p.mu.Lock()
			pc.refs--
			last := pc.refs == 0
			if last {
				delete(p.clients, key)
			}
			p.mu.Unlock()
			if last {
				pc.c.Close()
				pc.stopCreds()
			}
		})
	}
	return pc.c, release, nil
}

// len is the number of live shared clients.
func (p *pool) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.clients)
}

// nodeFromEnv is the xDS node of this process: id (when not empty), else
// FAIRWAY_NODE_ID, else POD_NAMESPACE/POD_NAME, else HOSTNAME-PID; cluster
// FAIRWAY_NODE_CLUSTER or "fairway-client"; locality zone; NODE_NAME in the
// metadata.
func nodeFromEnv(id, zone string) *corepb.Node {
	if id == "" {
		id = os.Getenv(EnvNodeID)
	}
	if id == "" && os.Getenv(EnvPodName) != "" {
		id = os.Getenv(EnvPodName)
		if ns := os.Getenv(EnvPodNamespace); ns != "" {
			id = ns + "/" + id
		}
	}
	if id == "" {
		host, _ := os.Hostname()
		id = host + "-" + strconv.Itoa(os.Getpid())
	}
	cluster := os.Getenv(EnvNodeCluster)
	if cluster == "" {
		cluster = "fairway-client"
	}
	n := &corepb.Node{Id: id, Cluster: cluster, UserAgentName: "fairway-go", Locality: &corepb.Locality{Zone: zone},
		ClientFeatures: []string{wire.CallerZonesFeature}}
	if nn := os.Getenv(EnvNodeName); nn != "" {
		n.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{"node_name": structpb.NewStringValue(nn)}}
	}
	return n
}

// zoneFromEnv is FAIRWAY_ZONE, else the zone label of the downward-API labels
// file, else "".
func zoneFromEnv() string {
	if z := os.Getenv(EnvZone); z != "" {
		return z
	}
	f, err := os.Open(podInfoLabels)
	if err != nil {
		return ""
	}
	defer f.Close()
	z, _ := zoneFromLabels(f)
	return z
}

// zoneFromLabels reads the downward-API labels format, one key="value" per
// line (value quoted as Go strings are), and returns the zone label.
func zoneFromLabels(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || k != ZoneLabel {
			continue
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		}
		return v, nil
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errors.New("fairway/client: no zone label")
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// all returns the live shared clients, by node id.
func (p *pool) all() []*xdsclient.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*xdsclient.Client, 0, len(p.clients))
	for _, pc := range p.clients {
		out = append(out, pc.c)
	}
	slices.SortFunc(out, func(a, b *xdsclient.Client) int { return strings.Compare(a.Node().GetId(), b.Node().GetId()) })
	return out
}
