package xdsserver_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/controlplane/xdsserver"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// startLimitsServer is startServer with opts, once it has pushed services a
// and b.
func startLimitsServer(ctx context.Context, t *testing.T, opts ...xdsserver.Option) *testServer {
	t.Helper()
	s := startServer(t, opts...)
	s.Update(topology.NewSnapshot(1, time.Now(), []*topology.Service{service("a", "10.0.0.1"), service("b", "10.0.0.2")}))
	testkit.Eventually(ctx, t, "first push", s.Ready)
	return s
}

// wantRefused waits for stream's end and checks it is RESOURCE_EXHAUSTED
// with a message holding msg.
func wantRefused[R any](t *testing.T, recv func() (R, error), msg string) {
	t.Helper()
	for {
		_, err := recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), msg) {
			t.Errorf("stream ended with %v, want RESOURCE_EXHAUSTED holding %q", err, msg)
		}
		return
	}
}

func TestServer_MaxStreamsPerNodeRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startLimitsServer(ctx, t, xdsserver.WithMaxStreamsPerNode(2))
	cc := dial(t, s.addr)
	const name = "a.default:8080"
	first := newSotWStream(ctx, t, cc, zoneNode("n", "zone-a"), name)
	first.recv()
	newSotWStream(ctx, t, cc, zoneNode("n", "zone-a"), name).recv()
	newSotWStream(ctx, t, cc, zoneNode("other", "zone-a"), name).recv() // another node id is not limited by n's streams

	third := newSotWStream(ctx, t, cc, zoneNode("n", "zone-a"), name)
	wantRefused(t, third.stream.Recv, `fairway/xdsserver: node "n" has 2 streams open (limit 2)`)
	if got := testkit.MetricValue(t, s.reg, "fairway_xds_refused_streams_total", "reason", "streams_per_node"); got != 1 {
		t.Errorf("fairway_xds_refused_streams_total{streams_per_node} = %v, want 1", got)
	}
	// A refused stream does not count; a closed one frees its place.
	first.cancel()
	testkit.Eventually(ctx, t, "the first stream closed", func() bool {
		return testkit.MetricValue(t, s.reg, "fairway_xds_streams", "type", "cluster", "protocol", "sotw") == 2
	})
	newSotWStream(ctx, t, cc, zoneNode("n", "zone-a"), name).recv()
}

func TestServer_MaxNamesPerStreamRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startLimitsServer(ctx, t, xdsserver.WithMaxNamesPerStream(3))
	refused := func() float64 {
		return testkit.MetricValue(t, s.reg, "fairway_xds_refused_streams_total", "reason", "names_per_stream")
	}

	// SotW: names count over all types of the stream; an ACK repeating
	// them does not add up.
	sotw := newSotWADS(ctx, t, s.addr)
	sotw.send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: "s"}, TypeUrl: resourcev3.ClusterType, ResourceNames: []string{"a.default:8080", "b.default:8080"}})
	resp := sotw.recv()
	sotw.send(&discoverypb.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNames: []string{"a.default:8080", "b.default:8080"},
		VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
	sotw.send(&discoverypb.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"a.default:8080"}})
	sotw.recv()
	sotw.send(&discoverypb.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"a.default:8080", "b.default:8080"}})
	wantRefused(t, sotw.stream.Recv, "fairway/xdsserver: the request would subscribe the stream to 4 resource names (limit 3)")
	if got := refused(); got != 1 {
		t.Errorf("fairway_xds_refused_streams_total{names_per_stream} = %v, want 1", got)
	}

	// Delta: the names subscribed to, after unsubscribing.
	d := newDeltaStream(ctx, t, s.addr)
	d.subscribe(resourcev3.ClusterType, "a.default:8080", "b.default:8080", "x.default:8080")
	d.next()
	d.send(&discoverypb.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNamesSubscribe: []string{"a.default:8080"},
		ResourceNamesUnsubscribe: []string{"x.default:8080"}})
	d.send(&discoverypb.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNamesSubscribe: []string{"y.default:8080", "z.default:8080"}})
	wantRefused(t, d.stream.Recv, "fairway/xdsserver: the request would subscribe the stream to 4 resource names (limit 3)")
	if got := refused(); got != 2 {
		t.Errorf("fairway_xds_refused_streams_total{names_per_stream} = %v, want 2", got)
	}
}

// TestServer_MaxStreamsPerConnectionQueuesStreams: past the limit, a
// grpc-go client's next stream waits for a free slot on the connection.
func TestServer_MaxStreamsPerConnectionQueuesStreams(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startLimitsServer(ctx, t, xdsserver.WithMaxStreamsPerConnection(2))
	cc := dial(t, s.addr)
	const name = "a.default:8080"
	first := newSotWStream(ctx, t, cc, zoneNode("n1", ""), name)
	first.recv()
	newSotWStream(ctx, t, cc, zoneNode("n2", ""), name).recv()

	answered := make(chan error, 1)
	go func() {
		stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
		if err == nil {
			err = stream.Send(&discoverypb.DiscoveryRequest{Node: zoneNode("n3", ""), TypeUrl: resourcev3.ClusterType, ResourceNames: []string{name}})
		}
		if err == nil {
			_, err = stream.Recv()
		}
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("a third stream on the connection was answered (%v), want it waiting", err)
	case <-time.After(300 * time.Millisecond):
	}
	first.cancel()
	if err := testkit.Recv(t, answered, "the third stream's answer"); err != nil {
		t.Errorf("third stream after the first closed: %v, want an answer", err)
	}
}

// TestServer_UnknownNamesMeasureWithoutNamesLimit measures finding 4's
// case, 1,000,000 unknown names in 20 requests, without the names limit
// (which refuses its first request), when FAIRWAY_MEASURE is set.
func TestServer_UnknownNamesMeasureWithoutNamesLimit(t *testing.T) {
	if os.Getenv("FAIRWAY_MEASURE") == "" {
		t.Skip("set FAIRWAY_MEASURE=1 to measure 1,000,000 unknown names")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*testTimeout)
	defer cancel()
	heap, lines, _ := unknownNames(ctx, t, 20, 50000, xdsserver.WithMaxNamesPerStream(0))
	t.Logf("1,000,000 unknown names in 20 requests, no names limit: heap +%.1f MB, %d log lines", float64(heap)/1e6, lines)
}
