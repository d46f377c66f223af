package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const timeout = 10 * time.Second

// xdsServer is go-control-plane's real ADS server over loopback, with one
// LinearCache per type behind a MuxCache, recording every request it gets.
type xdsServer struct {
	addr      string
	clusters  *cachev3.LinearCache
	endpoints *cachev3.LinearCache
	grpc      *grpc.Server
	cancel    context.CancelFunc
	done      chan struct{}

	mu       sync.Mutex
	requests []*discoverypb.DiscoveryRequest
	changed  chan struct{}
}

// startServer serves on addr ("127.0.0.1:0" for any port).
func startServer(t *testing.T, addr string) *xdsServer {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &xdsServer{
		addr:      lis.Addr().String(),
		clusters:  cachev3.NewLinearCache(ClusterType),
		endpoints: cachev3.NewLinearCache(EndpointsType),
		grpc:      grpc.NewServer(),
		done:      make(chan struct{}),
		changed:   make(chan struct{}, 1),
	}
	mux := &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        map[string]cachev3.Cache{ClusterType: s.clusters, EndpointsType: s.endpoints},
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	cb := serverv3.CallbackFuncs{StreamRequestFunc: func(_ int64, r *discoverypb.DiscoveryRequest) error {
		s.mu.Lock()
		s.requests = append(s.requests, proto.Clone(r).(*discoverypb.DiscoveryRequest))
		s.mu.Unlock()
		select {
		case s.changed <- struct{}{}:
		default:
		}
		return nil
	}}
	discoverypb.RegisterAggregatedDiscoveryServiceServer(s.grpc, serverv3.NewServer(ctx, mux, cb))
	go func() { defer close(s.done); _ = s.grpc.Serve(lis) }()
	t.Cleanup(s.stop)
	return s
}

func (s *xdsServer) stop() {
	s.cancel()
	s.grpc.Stop()
	<-s.done
}

// waitRequest waits for a request matching ok and returns it.
func (s *xdsServer) waitRequest(t *testing.T, what string, ok func(*discoverypb.DiscoveryRequest) bool) *discoverypb.DiscoveryRequest {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		for _, r := range s.requests {
			if ok(r) {
				s.mu.Unlock()
				return r
			}
		}
		s.mu.Unlock()
		select {
		case <-s.changed:
		case <-deadline:
			t.Fatalf("no request %s", what)
		}
	}
}

func (s *xdsServer) requestsOf(typeURL string) []*discoverypb.DiscoveryRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*discoverypb.DiscoveryRequest
	for _, r := range s.requests {
		if r.GetTypeUrl() == typeURL {
			out = append(out, r)
		}
	}
	return out
}

func makeCluster(name, strategy string) *clusterpb.Cluster {
	c := &clusterpb.Cluster{Name: name}
	if strategy != "" {
		c.Metadata = &corepb.Metadata{FilterMetadata: map[string]*structpb.Struct{
			MetadataKey: {Fields: map[string]*structpb.Value{"strategy": structpb.NewStringValue(strategy)}},
		}}
	}
	return c
}

// makeCLA builds an assignment with one endpoint per address ("IP:PORT") in zone-a.
func makeCLA(name string, addrs ...string) *endpointpb.ClusterLoadAssignment {
	loc := &endpointpb.LocalityLbEndpoints{Locality: &corepb.Locality{Zone: "zone-a"}, LoadBalancingWeight: wrapperspb.UInt32(1)}
	for _, a := range addrs {
		host, port, _ := net.SplitHostPort(a)
		var p uint32
		fmt.Sscan(port, &p)
		loc.LbEndpoints = append(loc.LbEndpoints, &endpointpb.LbEndpoint{
			HealthStatus: corepb.HealthStatus_HEALTHY,
			HostIdentifier: &endpointpb.LbEndpoint_Endpoint{Endpoint: &endpointpb.Endpoint{
				Address: &corepb.Address{Address: &corepb.Address_SocketAddress{SocketAddress: &corepb.SocketAddress{
					Address: host, PortSpecifier: &corepb.SocketAddress_PortValue{PortValue: p},
				}}},
			}},
		})
	}
	return &endpointpb.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointpb.LocalityLbEndpoints{loc}}
}

// recorder is a ClusterWatcher and EndpointsWatcher recording what it gets.
type recorder struct {
	clusters  chan Cluster
	endpoints chan Endpoints
	errs      chan error
}

func newRecorder() *recorder {
	return &recorder{clusters: make(chan Cluster, 100), endpoints: make(chan Endpoints, 100), errs: make(chan error, 100)}
}

func (r *recorder) OnCluster(c Cluster)     { r.clusters <- c }
func (r *recorder) OnEndpoints(e Endpoints) { r.endpoints <- e }
func (r *recorder) OnError(err error)       { r.errs <- err }

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(timeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// recvErr waits for an error wrapping target, skipping others.
func recvErr(t *testing.T, ch <-chan error, target error) error {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case err := <-ch:
			if errors.Is(err, target) {
				return err
			}
		case <-deadline:
			t.Fatalf("timed out waiting for an error wrapping %v", target)
		}
	}
}

func addrs(e Endpoints) []string {
	var out []string
	for _, ep := range e.Endpoints {
		out = append(out, ep.Address)
	}
	return out
}

func testNode() *corepb.Node {
	return &corepb.Node{Id: "test-node", Cluster: "test", Locality: &corepb.Locality{Zone: "zone-a"}}
}

func newTestClient(t *testing.T, servers []string, opts ...Option) *Client {
	t.Helper()
	opts = append([]Option{WithBackoff(func(int) time.Duration { return 10 * time.Millisecond })}, opts...)
	c, err := New(servers, testNode(), opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func names(r *discoverypb.DiscoveryRequest) []string { return r.GetResourceNames() }

func TestClient_SubscribesByNameAmongMany(t *testing.T) {
	s := startServer(t, "127.0.0.1:0")
	for i := range 50 {
		name := fmt.Sprintf("svc%d.default:80", i)
		_ = s.clusters.UpdateResource(name, makeCluster(name, ""))
		_ = s.endpoints.UpdateResource(name, makeCLA(name, fmt.Sprintf("10.0.0.%d:8080", i+1)))
	}
	reg := prometheus.NewRegistry()
	c := newTestClient(t, []string{s.addr}, WithRegisterer(reg))
	r := newRecorder()
	defer c.WatchCluster("svc7.default:80", r)()
	defer c.WatchEndpoints("svc7.default:80", r)()

	if got := recv(t, r.clusters, "cluster").Name; got != "svc7.default:80" {
		t.Errorf("cluster name = %q, want svc7.default:80", got)
	}
	if diff := cmp.Diff(addrs(recv(t, r.endpoints, "endpoints")), []string{"10.0.0.8:8080"}); diff != "" {
		t.Errorf("endpoints (-got +want):\n%s", diff)
	}
	// The first request names the node and only the watched resource.
	first := s.waitRequest(t, "with node", func(r *discoverypb.DiscoveryRequest) bool { return r.GetNode() != nil })
	if diff := cmp.Diff(first.GetNode(), testNode(), cmpProto()); diff != "" {
		t.Errorf("node (-got +want):\n%s", diff)
	}
	for _, typ := range []string{ClusterType, EndpointsType} {
		for _, req := range s.requestsOf(typ) {
			if diff := cmp.Diff(names(req), []string{"svc7.default:80"}); diff != "" {
				t.Errorf("%s request names (-got +want):\n%s", typeLabel(typ), diff)
			}
		}
	}

	// An update is delivered.
	_ = s.endpoints.UpdateResource("svc7.default:80", makeCLA("svc7.default:80", "10.0.0.8:8080", "10.0.1.8:8080"))
	if diff := cmp.Diff(addrs(recv(t, r.endpoints, "endpoints update")), []string{"10.0.0.8:8080", "10.0.1.8:8080"}); diff != "" {
		t.Errorf("updated endpoints (-got +want):\n%s", diff)
	}
	// An update to another service is not.
	_ = s.endpoints.UpdateResource("svc8.default:80", makeCLA("svc8.default:80", "10.9.9.9:1"))
	select {
	case e := <-r.endpoints:
		t.Errorf("unexpected update %v", e)
	case <-time.After(50 * time.Millisecond):
	}
	// It was ACKed.
	s.waitRequest(t, "ACK", func(req *discoverypb.DiscoveryRequest) bool {
		return req.GetTypeUrl() == EndpointsType && req.GetVersionInfo() != "" && req.GetErrorDetail() == nil
	})
	if got := metricValue(t, c.m.connected); got != 1 {
		t.Errorf("connected gauge = %v, want 1", got)
	}
	if got := metricValue(t, c.m.updates.WithLabelValues("endpoints")); got != 2 {
		t.Errorf("endpoint updates = %v, want 2", got)
	}

	// A second watcher of a known name gets the last value at once.
	r2 := newRecorder()
	defer c.WatchEndpoints("svc7.default:80", r2)()
	if diff := cmp.Diff(addrs(recv(t, r2.endpoints, "endpoints for the second watcher")), []string{"10.0.0.8:8080", "10.0.1.8:8080"}); diff != "" {
		t.Errorf("second watcher (-got +want):\n%s", diff)
	}
}

func TestClient_UnsubscribeSendsRequestWithoutName(t *testing.T) {
	s := startServer(t, "127.0.0.1:0")
	for _, n := range []string{"a.ns:80", "b.ns:80"} {
		_ = s.endpoints.UpdateResource(n, makeCLA(n, "10.0.0.1:80"))
	}
	c := newTestClient(t, []string{s.addr})
	ra, rb := newRecorder(), newRecorder()
	cancelA := c.WatchEndpoints("a.ns:80", ra)
	cancelB := c.WatchEndpoints("b.ns:80", rb)
	recv(t, ra.endpoints, "a")
	recv(t, rb.endpoints, "b")
	s.waitRequest(t, "for a and b", func(r *discoverypb.DiscoveryRequest) bool {
		return slices.Equal(names(r), []string{"a.ns:80", "b.ns:80"})
	})
	// A second watcher of b keeps it subscribed when the first cancels.
	rb2 := newRecorder()
	cancelB2 := c.WatchEndpoints("b.ns:80", rb2)
	cancelB()
	cancelB2()
	s.waitRequest(t, "without b", func(r *discoverypb.DiscoveryRequest) bool {
		return slices.Equal(names(r), []string{"a.ns:80"})
	})
	cancelA()
	s.waitRequest(t, "without any name", func(r *discoverypb.DiscoveryRequest) bool {
		return r.GetTypeUrl() == EndpointsType && len(names(r)) == 0
	})
}

func TestClient_InvalidClusterIsNACKedAndPreviousKept(t *testing.T) {
	s := startServer(t, "127.0.0.1:0")
	const name = "echo.default:8080"
	_ = s.clusters.UpdateResource(name, makeCluster(name, `[{"p2c":{}}]`))
	reg := prometheus.NewRegistry()
	validator := func(c Cluster) error {
		if strings.Contains(string(c.Strategy), "bogus") {
			return errors.New(`strategy: unknown strategy "bogus"`)
		}
		return nil
	}
	c := newTestClient(t, []string{s.addr}, WithClusterValidator(validator), WithRegisterer(reg))
	r := newRecorder()
	defer c.WatchCluster(name, r)()
	good := recv(t, r.clusters, "good cluster")
	if got, want := string(good.Strategy), `[{"p2c":{}}]`; got != want {
		t.Errorf("strategy = %s, want %s", got, want)
	}

	_ = s.clusters.UpdateResource(name, makeCluster(name, `[{"bogus":{}}]`))
	err := recvErr(t, r.errs, ErrInvalidResource)
	if !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("watcher error %q does not name the resource and the problem", err)
	}
	nack := s.waitRequest(t, "NACK", func(r *discoverypb.DiscoveryRequest) bool { return r.GetErrorDetail() != nil })
	msg := nack.GetErrorDetail().GetMessage()
	if !strings.Contains(msg, `Cluster "echo.default:8080"`) || !strings.Contains(msg, `unknown strategy "bogus"`) {
		t.Errorf("error_detail %q does not name the resource and the problem", msg)
	}
	if nack.GetVersionInfo() != good.Version {
		t.Errorf("NACK version = %q, want the previous good version %q", nack.GetVersionInfo(), good.Version)
	}
	if got := metricValue(t, c.m.nacks.WithLabelValues("cluster")); got != 1 {
		t.Errorf("cluster NACKs = %v, want 1", got)
	}
	select {
	case cl := <-r.clusters:
		t.Errorf("invalid cluster delivered: %v", cl)
	default:
	}
	// The previous good Cluster is what a new watcher gets.
	r2 := newRecorder()
	defer c.WatchCluster(name, r2)()
	if got := string(recv(t, r2.clusters, "kept cluster").Strategy); got != `[{"p2c":{}}]` {
		t.Errorf("kept strategy = %s, want the previous one", got)
	}
	// A later valid version is accepted again.
	_ = s.clusters.UpdateResource(name, makeCluster(name, `[{"round_robin":{}}]`))
	if got := string(recv(t, r.clusters, "fixed cluster").Strategy); got != `[{"round_robin":{}}]` {
		t.Errorf("strategy after fix = %s", got)
	}
}

func TestClient_InvalidEndpointsAreNACKed(t *testing.T) {
	s := startServer(t, "127.0.0.1:0")
	const name = "echo.default:8080"
	_ = s.endpoints.UpdateResource(name, makeCLA(name, "10.0.0.1:80"))
	c := newTestClient(t, []string{s.addr})
	r := newRecorder()
	defer c.WatchEndpoints(name, r)()
	recv(t, r.endpoints, "good endpoints")

	_ = s.endpoints.UpdateResource(name, makeCLA(name, "10.0.0.1:80", "10.0.0.2:0"))
	recvErr(t, r.errs, ErrInvalidResource)
	nack := s.waitRequest(t, "NACK", func(r *discoverypb.DiscoveryRequest) bool { return r.GetErrorDetail() != nil })
	if msg := nack.GetErrorDetail().GetMessage(); !strings.Contains(msg, name) || !strings.Contains(msg, "port 0") {
		t.Errorf("error_detail %q does not name the resource and the port", msg)
	}
	r2 := newRecorder()
	defer c.WatchEndpoints(name, r2)()
	if diff := cmp.Diff(addrs(recv(t, r2.endpoints, "kept endpoints")), []string{"10.0.0.1:80"}); diff != "" {
		t.Errorf("kept endpoints (-got +want):\n%s", diff)
	}
}

func TestClient_ServerRestartKeepsStateAndResubscribes(t *testing.T) {
	s := startServer(t, "127.0.0.1:0")
	const name = "echo.default:8080"
	_ = s.clusters.UpdateResource(name, makeCluster(name, ""))
	_ = s.endpoints.UpdateResource(name, makeCLA(name, "10.0.0.1:80"))
	reg := prometheus.NewRegistry()
	c := newTestClient(t, []string{s.addr}, WithRegisterer(reg))
	r := newRecorder()
	defer c.WatchCluster(name, r)()
	defer c.WatchEndpoints(name, r)()
	recv(t, r.clusters, "cluster")
	recv(t, r.endpoints, "endpoints")

	s.stop()
	recvErr(t, r.errs, ErrDisconnected)
	if got := metricValue(t, c.m.connected); got != 0 {
		t.Errorf("connected gauge = %v while down, want 0", got)
	}
	// Nothing replaces the last endpoints while the server is away.
	select {
	case e := <-r.endpoints:
		t.Errorf("update while disconnected: %v", e)
	case <-time.After(100 * time.Millisecond):
	}

	s2 := startServer(t, s.addr)
	_ = s2.clusters.UpdateResource(name, makeCluster(name, ""))
	_ = s2.endpoints.UpdateResource(name, makeCLA(name, "10.0.0.1:80", "10.0.0.2:80"))
	if diff := cmp.Diff(addrs(recv(t, r.endpoints, "endpoints from the new server")), []string{"10.0.0.1:80", "10.0.0.2:80"}); diff != "" {
		t.Errorf("endpoints after reconnect (-got +want):\n%s", diff)
	}
	for _, typ := range []string{ClusterType, EndpointsType} {
		s2.waitRequest(t, "re-subscribing "+typeLabel(typ), func(r *discoverypb.DiscoveryRequest) bool {
			return r.GetTypeUrl() == typ && slices.Equal(names(r), []string{name})
		})
	}
	// The unchanged Cluster is not delivered again.
	select {
	case cl := <-r.clusters:
		t.Errorf("unchanged cluster delivered again: %v", cl)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestClient_FailsOverToSecondAddress(t *testing.T) {
	// An address with nothing listening.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()

	s := startServer(t, "127.0.0.1:0")
	const name = "echo.default:8080"
	_ = s.endpoints.UpdateResource(name, makeCLA(name, "10.0.0.1:80"))
	c := newTestClient(t, []string{dead, s.addr})
	r := newRecorder()
	defer c.WatchEndpoints(name, r)()
	if diff := cmp.Diff(addrs(recv(t, r.endpoints, "endpoints via the second address")), []string{"10.0.0.1:80"}); diff != "" {
		t.Errorf("endpoints (-got +want):\n%s", diff)
	}
	err = recvErr(t, r.errs, ErrDisconnected)
	if !strings.Contains(err.Error(), dead) {
		t.Errorf("disconnection error %q does not name the failed address %s", err, dead)
	}
}

func TestClient_RemovedClusterIsReported(t *testing.T) {
	s := startServer(t, "127.0.0.1:0")
	_ = s.clusters.UpdateResource("a.ns:80", makeCluster("a.ns:80", ""))
	_ = s.clusters.UpdateResource("b.ns:80", makeCluster("b.ns:80", ""))
	c := newTestClient(t, []string{s.addr})
	ra, rb := newRecorder(), newRecorder()
	defer c.WatchCluster("a.ns:80", ra)()
	defer c.WatchCluster("b.ns:80", rb)()
	recv(t, ra.clusters, "a")
	recv(t, rb.clusters, "b")
	_ = s.clusters.DeleteResource("b.ns:80")
	recvErr(t, rb.errs, ErrResourceRemoved)
	select {
	case err := <-ra.errs:
		t.Errorf("a got %v", err)
	default:
	}
}

func TestExponentialBackoff_GrowsCapsAndJitters(t *testing.T) {
	f := ExponentialBackoff(DefaultBackoff)
	for _, tc := range []struct {
		retries int
		base    time.Duration
	}{{0, 200 * time.Millisecond}, {1, 320 * time.Millisecond}, {3, 819200 * time.Microsecond}, {100, 30 * time.Second}} {
		for range 20 {
			d := f(tc.retries)
			lo, hi := time.Duration(float64(tc.base)*0.8), time.Duration(float64(tc.base)*1.2)
			if d < lo || d > hi {
				t.Errorf("backoff(%d) = %v, want in [%v, %v]", tc.retries, d, lo, hi)
			}
		}
	}
}

func TestNew_RejectsBadArguments(t *testing.T) {
	if _, err := New(nil, testNode()); err == nil {
		t.Error("New without servers: no error")
	}
	if _, err := New([]string{"127.0.0.1:1"}, &corepb.Node{}); err == nil {
		t.Error("New without node id: no error")
	}
}



// metricValue reads a gauge or counter.
func metricValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Gauge != nil {
		return m.GetGauge().GetValue()
	}
	return m.GetCounter().GetValue()
}
