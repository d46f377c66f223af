package xdsserver_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/client/xdsclient"
	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/controlplane/xdsserver"
	"github.com/fairway-lb/fairway/internal/testkit"
	"github.com/fairway-lb/fairway/wire"
)

// bigService is a service of n endpoints shaped as a Deployment's pods are
// (pod name as hostname, three zones).
func bigService(name string, n int) *topology.Service {
	svc := &topology.Service{Key: key(name), Policy: topology.DefaultPolicy()}
	svc.Endpoints = make([]topology.Endpoint, 0, n)
	for i := range n {
		svc.Endpoints = append(svc.Endpoints, topology.Endpoint{
			Address: fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255), Port: 8080,
			Zone: fmt.Sprintf("zone-%c", 'a'+i%3), Hostname: fmt.Sprintf("%s-7d9f8c6b5-%05d", name, i),
			Ready: true, Serving: true, Weight: 1,
		})
	}
	topology.SortEndpoints(svc.Endpoints)
	return svc
}

// endpointsWatcher hands the assignments it receives over on a channel,
// dropping those that do not fit (it never blocks the client's callbacks).
type endpointsWatcher chan xdsclient.Endpoints

func (w endpointsWatcher) OnEndpoints(e xdsclient.Endpoints) {
	select {
	case w <- e:
	default:
	}
}

func (w endpointsWatcher) OnError(error) {}

// One service of 100,000 endpoints (5.1 MB in one response, over gRPC's
// stock 4 MiB) reaches a Fairway client with its default options (SotW) and
// a delta client with the same receive limit; the server counts and logs
// the responses over its warning threshold. Before the limits were raised,
// the Fairway client's stream failed on this response for ever.
func TestServer_HundredThousandEndpointsReachClients(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var logs testkit.LogBuffer
	s := startServer(t, xdsserver.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	const n = 100_000
	big := bigService("big", n)
	start := time.Now()
	s.Update(topology.NewSnapshot(1, time.Now(), []*topology.Service{big, service("small", "10.9.9.9:80")}))
	testkit.Eventually(ctx, t, "the first push", s.Ready)
	t.Logf("push of %d endpoints: %v", n, time.Since(start).Round(time.Millisecond))
	name := big.Key.ResourceName()

	// SotW: the Fairway client, default options.
	c, err := xdsclient.New([]string{s.addr}, &corepb.Node{Id: "big-sotw"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(endpointsWatcher, 1)
	start = time.Now()
	cancelWatch := c.WatchEndpoints(name, got)
	defer cancelWatch()
	e := testkit.RecvWithin(t, got, 30*time.Second, "the 100,000 endpoints")
	sotwTook := time.Since(start)
	if len(e.Endpoints) != n {
		t.Fatalf("the Fairway client got %d endpoints, want %d", len(e.Endpoints), n)
	}

	// Delta: a raw stream with the Fairway client's receive limit.
	cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(xdsclient.DefaultMaxRecvMsgSize)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	delta, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := delta.Send(&discoverypb.DeltaDiscoveryRequest{Node: &corepb.Node{Id: "big-delta"}, TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{name}}); err != nil {
		t.Fatal(err)
	}
	resp, err := delta.Recv()
	if err != nil {
		t.Fatalf("delta: %v", err)
	}
	deltaTook := time.Since(start)
	if len(resp.GetResources()) != 1 {
		t.Fatalf("delta response has %d resources, want 1", len(resp.GetResources()))
	}
	sotwBytes := 0.0
	for _, m := range series(t, s.reg, "fairway_xds_response_bytes", "protocol", "sotw") {
		sotwBytes = max(sotwBytes, m.GetHistogram().GetSampleSum()) // the endpoint series: Clusters are small
	}
	t.Logf("%d endpoints: SotW response %.0f bytes, received and decoded by the Fairway client in %v; delta response %d bytes, received in %v",
		n, sotwBytes, sotwTook.Round(time.Millisecond), proto.Size(resp), deltaTook.Round(time.Millisecond))
	if sotwBytes <= 4<<20 {
		t.Errorf("the SotW response is %.0f bytes, want over 4 MiB (the old default limit) for this test to mean anything", sotwBytes)
	}

	for _, protocol := range []string{"sotw", "delta"} {
		if got := testkit.MetricValue(t, s.reg, "fairway_xds_large_responses_total", "type", "endpoint", "protocol", protocol, "limit", "warning"); got != 1 {
			t.Errorf("fairway_xds_large_responses_total{type=endpoint,protocol=%s,limit=warning} = %v, want 1", protocol, got)
		}
	}
	if strings.Count(logs.String(), "level=WARN msg=\"large xDS response") != 1 {
		t.Errorf("want one warning line for the two large responses (one a minute), got:\n%s", logs.String())
	}
}

// A response over the send limit is not sent: the stream fails with
// ResourceExhausted, and the server says so at error level and counts it.
func TestServer_ResponseOverTheSendLimitIsLoggedAndCounted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var logs testkit.LogBuffer
	s := startServer(t, xdsserver.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))),
		xdsserver.WithMaxSendMsgSize(20_000), xdsserver.WithResponseSizeWarning(10_000))
	big := bigService("big", 1000) // about 50 KB
	s.Update(topology.NewSnapshot(1, time.Now(), []*topology.Service{big}))
	testkit.Eventually(ctx, t, "the first push", s.Ready)

	ads := newSotWADS(ctx, t, s.addr)
	ads.send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: "n"}, TypeUrl: resourcev3.EndpointType, ResourceNames: []string{big.Key.ResourceName()}})
	_, err := ads.stream.Recv()
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("Recv() = %v, want a ResourceExhausted error", err)
	}
	if got := testkit.MetricValue(t, s.reg, "fairway_xds_large_responses_total", "type", "endpoint", "protocol", "sotw", "limit", "max"); got != 1 {
		t.Errorf("fairway_xds_large_responses_total{limit=max} = %v, want 1", got)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "limit_bytes=20000") {
		t.Errorf("no error line with the limit in the log:\n%s", logs.String())
	}
}

// /healthz fails while the push goroutine is stuck, and recovers with it.
func TestServer_HealthzFailsWhileThePushLoopIsStuck(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	entered, release := make(chan struct{}, 10), make(chan struct{})
	hook := func() {
		entered <- struct{}{}
		<-release
	}
	s := xdsserver.New(xdsserver.WithClock(clk), xdsserver.WithDebounce(0), xdsserver.WithPushTimeout(time.Minute),
		xdsserver.WithRegisterer(nil), xdsserver.WithPushHook(hook))
	defer s.Close()
	healthz := func() (int, string) {
		rec := httptest.NewRecorder()
		s.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		return rec.Code, rec.Body.String()
	}

	s.Update(topology.NewSnapshot(1, clk.Now(), []*topology.Service{service("a", "10.0.0.1:80")}))
	testkit.Recv(t, entered, "the push")
	if code, body := healthz(); code != http.StatusOK {
		t.Errorf("/healthz with a push running for 0s = %d %q, want 200", code, body)
	}
	clk.Step(time.Minute + time.Second)
	if code, body := healthz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "push loop stuck") {
		t.Errorf("/healthz with a push running for 61s = %d %q, want 503 saying the push loop is stuck", code, body)
	}
	s.Update(topology.NewSnapshot(2, clk.Now(), []*topology.Service{service("a", "10.0.0.2:80")}))

	close(release) // the stuck push ends, the next one runs
	testkit.Recv(t, entered, "the second push")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	testkit.Eventually(ctx, t, "/healthz 200 again", func() bool { code, _ := healthz(); return code == http.StatusOK })
}

// A connection older than its maximum age is closed after its grace: the
// Fairway client moves to the next address, as clients spread over the
// replicas after a rollout.
func TestServer_MaxConnectionAgeMovesClientsOn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	snap := topology.NewSnapshot(1, time.Now(), []*topology.Service{service("a", "10.0.0.1:80")})
	first := startServer(t, xdsserver.WithMaxConnectionAge(200*time.Millisecond, 100*time.Millisecond))
	second := startServer(t)
	first.Update(snap)
	second.Update(snap)

	reg := prometheus.NewRegistry()
	c, err := xdsclient.New([]string{first.addr, second.addr}, &corepb.Node{Id: "aged"}, xdsclient.WithRegisterer(reg),
		xdsclient.WithBackoff(func(int) time.Duration { return 10 * time.Millisecond }))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(endpointsWatcher, 10)
	defer c.WatchEndpoints(key("a").ResourceName(), got)()
	testkit.Recv(t, got, "the endpoints")
	testkit.Eventually(ctx, t, "a stream on the second server", func() bool {
		return testkit.MetricValue(t, second.reg, "fairway_xds_streams", "type", "endpoint", "protocol", "sotw") == 1
	})
}

// The server's send limit is what the Fairway client accepts by default.
func TestLimits_ClientTakesWhatTheServerSends(t *testing.T) {
	if xdsserver.DefaultMaxSendMsgSize > xdsclient.DefaultMaxRecvMsgSize || xdsclient.DefaultMaxRecvMsgSize != wire.MaxMessageSize {
		t.Errorf("server send limit %d, client receive limit %d: the client must take what the server may send",
			xdsserver.DefaultMaxSendMsgSize, xdsclient.DefaultMaxRecvMsgSize)
	}
}
