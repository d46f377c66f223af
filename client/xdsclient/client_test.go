package xdsclient

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/fairway-lb/fairway/client/xdsclient/xdstest"
	"github.com/fairway-lb/fairway/internal/testkit"
	"github.com/fairway-lb/fairway/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func makeCluster(name, strategy string) *clusterpb.Cluster { return xdstest.Cluster(name, strategy) }

// makeCLA builds an assignment with one healthy endpoint per address ("IP:PORT") in zone-a.
func makeCLA(name string, addrs ...string) *endpointpb.ClusterLoadAssignment {
	var eps []xdstest.Endpoint
	for _, a := range addrs {
		eps = append(eps, xdstest.Endpoint{Addr: a, Zone: "zone-a", Health: corepb.HealthStatus_HEALTHY})
	}
	return xdstest.CLA(name, eps...)
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

// recvErr waits for an error wrapping target, skipping others.
func recvErr(t *testing.T, ch <-chan error, target error) error {
	t.Helper()
	deadline := time.After(testkit.Timeout)
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
	s := xdstest.Start(t, "127.0.0.1:0")
	for i := range 50 {
		name := fmt.Sprintf("svc%d.default:80", i)
		_ = s.Clusters.UpdateResource(name, makeCluster(name, ""))
		_ = s.Endpoints.UpdateResource(name, makeCLA(name, fmt.Sprintf("10.0.0.%d:8080", i+1)))
	}
	reg := prometheus.NewRegistry()
	c := newTestClient(t, []string{s.Addr}, WithRegisterer(reg))
	r := newRecorder()
	defer c.WatchCluster("svc7.default:80", r)()
	defer c.WatchEndpoints("svc7.default:80", r)()

	if got := testkit.Recv(t, r.clusters, "cluster").Name; got != "svc7.default:80" {
		t.Errorf("cluster name = %q, want svc7.default:80", got)
	}
	if diff := cmp.Diff(addrs(testkit.Recv(t, r.endpoints, "endpoints")), []string{"10.0.0.8:8080"}); diff != "" {
		t.Errorf("endpoints (-got +want):\n%s", diff)
	}
	// The first request names the node and only the watched resource.
	first := s.WaitRequest(t, "with node", func(r *discoverypb.DiscoveryRequest) bool { return r.GetNode() != nil })
	if diff := cmp.Diff(first.GetNode(), testNode(), cmpProto()); diff != "" {
		t.Errorf("node (-got +want):\n%s", diff)
	}
	for _, typ := range []string{wire.ClusterType, wire.EndpointType} {
		for _, req := range s.Requests(typ) {
			if diff := cmp.Diff(names(req), []string{"svc7.default:80"}); diff != "" {
				t.Errorf("%s request names (-got +want):\n%s", typeLabel(typ), diff)
			}
		}
	}

	// An update is delivered.
	_ = s.Endpoints.UpdateResource("svc7.default:80", makeCLA("svc7.default:80", "10.0.0.8:8080", "10.0.1.8:8080"))
	if diff := cmp.Diff(addrs(testkit.Recv(t, r.endpoints, "endpoints update")), []string{"10.0.0.8:8080", "10.0.1.8:8080"}); diff != "" {
		t.Errorf("updated endpoints (-got +want):\n%s", diff)
	}
	// An update to another service is not.
	_ = s.Endpoints.UpdateResource("svc8.default:80", makeCLA("svc8.default:80", "10.9.9.9:1"))
	select {
	case e := <-r.endpoints:
		t.Errorf("unexpected update %v", e)
	case <-time.After(50 * time.Millisecond):
	}
	// It was ACKed.
	s.WaitRequest(t, "ACK", func(req *discoverypb.DiscoveryRequest) bool {
		return req.GetTypeUrl() == wire.EndpointType && req.GetVersionInfo() != "" && req.GetErrorDetail() == nil
	})
	if got := testutil.ToFloat64(c.m.connected); got != 1 {
		t.Errorf("connected gauge = %v, want 1", got)
	}
	if got := testutil.ToFloat64(c.m.updates.WithLabelValues("endpoints")); got != 2 {
		t.Errorf("endpoint updates = %v, want 2", got)
	}

	// A second watcher of a known name gets the last value at once.
	r2 := newRecorder()
	defer c.WatchEndpoints("svc7.default:80", r2)()
	if diff := cmp.Diff(addrs(testkit.Recv(t, r2.endpoints, "endpoints for the second watcher")), []string{"10.0.0.8:8080", "10.0.1.8:8080"}); diff != "" {
		t.Errorf("second watcher (-got +want):\n%s", diff)
	}
}

func TestClient_UnsubscribeSendsRequestWithoutName(t *testing.T) {
	s := xdstest.Start(t, "127.0.0.1:0")
	for _, n := range []string{"a.ns:80", "b.ns:80"} {
		_ = s.Endpoints.UpdateResource(n, makeCLA(n, "10.0.0.1:80"))
	}
	c := newTestClient(t, []string{s.Addr})
	ra, rb := newRecorder(), newRecorder()
	cancelA := c.WatchEndpoints("a.ns:80", ra)
	cancelB := c.WatchEndpoints("b.ns:80", rb)
	testkit.Recv(t, ra.endpoints, "a")
	testkit.Recv(t, rb.endpoints, "b")
	s.WaitRequest(t, "for a and b", func(r *discoverypb.DiscoveryRequest) bool {
		return slices.Equal(names(r), []string{"a.ns:80", "b.ns:80"})
	})
	// A second watcher of b keeps it subscribed when the first cancels.
	rb2 := newRecorder()
	cancelB2 := c.WatchEndpoints("b.ns:80", rb2)
	cancelB()
	cancelB2()
	s.WaitRequest(t, "without b", func(r *discoverypb.DiscoveryRequest) bool {
		return slices.Equal(names(r), []string{"a.ns:80"})
	})
	cancelA()
	s.WaitRequest(t, "without any name", func(r *discoverypb.DiscoveryRequest) bool {
		return r.GetTypeUrl() == wire.EndpointType && len(names(r)) == 0
	})
}

func TestClient_InvalidClusterIsNACKedAndPreviousKept(t *testing.T) {
	s := xdstest.Start(t, "127.0.0.1:0")
	const name = "echo.default:8080"
	_ = s.Clusters.UpdateResource(name, makeCluster(name, `[{"p2c":{}}]`))
	reg := prometheus.NewRegistry()
	validator := func(c Cluster) error {
		if strings.Contains(string(c.Strategy), "bogus") {
			return errors.New(`strategy: unknown strategy "bogus"`)
		}
		return nil
	}
	c := newTestClient(t, []string{s.Addr}, WithClusterValidator(validator), WithRegisterer(reg))
	r := newRecorder()
	defer c.WatchCluster(name, r)()
	good := testkit.Recv(t, r.clusters, "good cluster")
	if got, want := string(good.Strategy), `[{"p2c":{}}]`; got != want {
		t.Errorf("strategy = %s, want %s", got, want)
	}

	_ = s.Clusters.UpdateResource(name, makeCluster(name, `[{"bogus":{}}]`))
	err := recvErr(t, r.errs, ErrInvalidResource)
	if !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("watcher error %q does not name the resource and the problem", err)
	}
	nack := s.WaitRequest(t, "NACK", func(r *discoverypb.DiscoveryRequest) bool { return r.GetErrorDetail() != nil })
	msg := nack.GetErrorDetail().GetMessage()
	if !strings.Contains(msg, `Cluster "echo.default:8080"`) || !strings.Contains(msg, `unknown strategy "bogus"`) {
		t.Errorf("error_detail %q does not name the resource and the problem", msg)
	}
	if nack.GetVersionInfo() != good.Version {
		t.Errorf("NACK version = %q, want the previous good version %q", nack.GetVersionInfo(), good.Version)
	}
	if got := testutil.ToFloat64(c.m.nacks.WithLabelValues("cluster")); got != 1 {
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
	if got := string(testkit.Recv(t, r2.clusters, "kept cluster").Strategy); got != `[{"p2c":{}}]` {
		t.Errorf("kept strategy = %s, want the previous one", got)
	}
	// A later valid version is accepted again.
	_ = s.Clusters.UpdateResource(name, makeCluster(name, `[{"round_robin":{}}]`))
	if got := string(testkit.Recv(t, r.clusters, "fixed cluster").Strategy); got != `[{"round_robin":{}}]` {
		t.Errorf("strategy after fix = %s", got)
	}
}

func TestClient_InvalidEndpointsAreNACKed(t *testing.T) {
	s := xdstest.Start(t, "127.0.0.1:0")
	const name = "echo.default:8080"
	_ = s.Endpoints.UpdateResource(name, makeCLA(name, "10.0.0.1:80"))
	c := newTestClient(t, []string{s.Addr})
	r := newRecorder()
	defer c.WatchEndpoints(name, r)()
	testkit.Recv(t, r.endpoints, "good endpoints")

	_ = s.Endpoints.UpdateResource(name, makeCLA(name, "10.0.0.1:80", "10.0.0.2:0"))
	recvErr(t, r.errs, ErrInvalidResource)
	nack := s.WaitRequest(t, "NACK", func(r *discoverypb.DiscoveryRequest) bool { return r.GetErrorDetail() != nil })
	if msg := nack.GetErrorDetail().GetMessage(); !strings.Contains(msg, name) || !strings.Contains(msg, "port 0") {
		t.Errorf("error_detail %q does not name the resource and the port", msg)
	}
	r2 := newRecorder()
	defer c.WatchEndpoints(name, r2)()
	if diff := cmp.Diff(addrs(testkit.Recv(t, r2.endpoints, "kept endpoints")), []string{"10.0.0.1:80"}); diff != "" {
		t.Errorf("kept endpoints (-got +want):\n%s", diff)
	}
}

func TestClient_ServerRestartKeepsStateAndResubscribes(t *testing.T) {
	s := xdstest.Start(t, "127.0.0.1:0")
	const name = "echo.default:8080"
	_ = s.Clusters.UpdateResource(name, makeCluster(name, ""))
	_ = s.Endpoints.UpdateResource(name, makeCLA(name, "10.0.0.1:80"))
	reg := prometheus.NewRegistry()
	c := newTestClient(t, []string{s.Addr}, WithRegisterer(reg))
	r := newRecorder()
	defer c.WatchCluster(name, r)()
	defer c.WatchEndpoints(name, r)()
	testkit.Recv(t, r.clusters, "cluster")
	testkit.Recv(t, r.endpoints, "endpoints")

	s.Stop()
	recvErr(t, r.errs, ErrDisconnected)
	if got := testutil.ToFloat64(c.m.connected); got != 0 {
		t.Errorf("connected gauge = %v while down, want 0", got)
	}
	// Nothing replaces the last endpoints while the server is away.
	select {
	case e := <-r.endpoints:
		t.Errorf("update while disconnected: %v", e)
	case <-time.After(100 * time.Millisecond):
	}

	s2 := xdstest.Start(t, s.Addr)
	_ = s2.Clusters.UpdateResource(name, makeCluster(name, ""))
	_ = s2.Endpoints.UpdateResource(name, makeCLA(name, "10.0.0.1:80", "10.0.0.2:80"))
	if diff := cmp.Diff(addrs(testkit.Recv(t, r.endpoints, "endpoints from the new server")), []string{"10.0.0.1:80", "10.0.0.2:80"}); diff != "" {
		t.Errorf("endpoints after reconnect (-got +want):\n%s", diff)
	}
	for _, typ := range []string{wire.ClusterType, wire.EndpointType} {
		s2.WaitRequest(t, "re-subscribing "+typeLabel(typ), func(r *discoverypb.DiscoveryRequest) bool {
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
	dead := testkit.FreeAddr(t) // nothing listens there

	s := xdstest.Start(t, "127.0.0.1:0")
	const name = "echo.default:8080"
	_ = s.Endpoints.UpdateResource(name, makeCLA(name, "10.0.0.1:80"))
	c := newTestClient(t, []string{dead, s.Addr})
	r := newRecorder()
	defer c.WatchEndpoints(name, r)()
	if diff := cmp.Diff(addrs(testkit.Recv(t, r.endpoints, "endpoints via the second address")), []string{"10.0.0.1:80"}); diff != "" {
		t.Errorf("endpoints (-got +want):\n%s", diff)
	}
	// Failover succeeded: watchers were not told of the first failure.
	select {
	case err := <-r.errs:
		t.Errorf("error while failover succeeded: %v", err)
	default:
	}
}

func TestClient_AllAddressesDownIsReported(t *testing.T) {
	dead := []string{testkit.FreeAddr(t), testkit.FreeAddr(t)}
	c := newTestClient(t, dead)
	r := newRecorder()
	defer c.WatchEndpoints("echo.default:8080", r)()
	err := recvErr(t, r.errs, ErrDisconnected)
	if !strings.Contains(err.Error(), dead[1]) {
		t.Errorf("error %q does not name the last address tried %s", err, dead[1])
	}
	// Told once, not at every retry.
	select {
	case err := <-r.errs:
		t.Errorf("second error: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	// A new watcher of a name with no data learns it at once.
	r2 := newRecorder()
	defer c.WatchCluster("other.default:8080", r2)()
	recvErr(t, r2.errs, ErrDisconnected)
}

func TestClient_RemovedClusterIsReported(t *testing.T) {
	s := xdstest.Start(t, "127.0.0.1:0")
	_ = s.Clusters.UpdateResource("a.ns:80", makeCluster("a.ns:80", ""))
	_ = s.Clusters.UpdateResource("b.ns:80", makeCluster("b.ns:80", ""))
	c := newTestClient(t, []string{s.Addr})
	ra, rb := newRecorder(), newRecorder()
	defer c.WatchCluster("a.ns:80", ra)()
	defer c.WatchCluster("b.ns:80", rb)()
	testkit.Recv(t, ra.clusters, "a")
	testkit.Recv(t, rb.clusters, "b")
	_ = s.Clusters.DeleteResource("b.ns:80")
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

func TestClient_InvalidCallerZonesAreNACKedAndPreviousKept(t *testing.T) {
	s := xdstest.Start(t, "127.0.0.1:0")
	const name = "echo.default:8080"
	_ = s.Clusters.UpdateResource(name, xdstest.WithCallerZones(makeCluster(name, ""), map[string]float64{"a": 0.5, "b": 0.5}))
	c := newTestClient(t, []string{s.Addr}, WithRegisterer(prometheus.NewRegistry()))
	r := newRecorder()
	defer c.WatchCluster(name, r)()
	good := testkit.Recv(t, r.clusters, "good cluster")
	if diff := cmp.Diff(good.CallerZones, map[string]float64{"a": 0.5, "b": 0.5}); diff != "" {
		t.Errorf("caller zones (-got +want):\n%s", diff)
	}

	_ = s.Clusters.UpdateResource(name, xdstest.WithCallerZones(makeCluster(name, ""), map[string]float64{"a": 2}))
	recvErr(t, r.errs, ErrInvalidResource)
	nack := s.WaitRequest(t, "NACK", func(r *discoverypb.DiscoveryRequest) bool { return r.GetErrorDetail() != nil })
	if msg := nack.GetErrorDetail().GetMessage(); !strings.Contains(msg, "caller_zones") {
		t.Errorf("error_detail %q does not name caller_zones", msg)
	}
	r2 := newRecorder()
	defer c.WatchCluster(name, r2)()
	if diff := cmp.Diff(testkit.Recv(t, r2.clusters, "kept cluster").CallerZones, map[string]float64{"a": 0.5, "b": 0.5}); diff != "" {
		t.Errorf("kept caller zones (-got +want):\n%s", diff)
	}
}
