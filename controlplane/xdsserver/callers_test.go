package xdsserver_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/controlplane/xdsserver"
	"github.com/fairway-lb/fairway/internal/testkit"
	"github.com/fairway-lb/fairway/wire"
)

// zoneNode is a Fairway client's node in zone (no locality when zone is
// empty): it declares the caller-zones feature.
func zoneNode(id, zone string) *corepb.Node {
	n := &corepb.Node{Id: id, ClientFeatures: []string{wire.CallerZonesFeature}}
	if zone != "" {
		n.Locality = &corepb.Locality{Zone: zone}
	}
	return n
}

// callerZones returns the caller_zones of c's Fairway metadata, nil when
// absent.
func callerZones(c *clusterpb.Cluster) map[string]float64 {
	s := c.GetMetadata().GetFilterMetadata()[wire.MetadataNamespace].GetFields()[wire.MetadataCallerZones].GetStructValue()
	if s == nil {
		return nil
	}
	out := map[string]float64{}
	for zone, v := range s.GetFields() {
		out[zone] = v.GetNumberValue()
	}
	return out
}

// sotwStream is a raw SotW ADS stream subscribing to Clusters that ACKs
// every response it reads.
type sotwStream struct {
	t      *testing.T
	stream discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	cancel context.CancelFunc
	names  []string
}

// newSotWStream opens a stream on cc as node and requests the Clusters
// names (none: a wildcard request).
func newSotWStream(ctx context.Context, t *testing.T, cc *grpc.ClientConn, node *corepb.Node, names ...string) *sotwStream {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoverypb.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType, ResourceNames: names}); err != nil {
		t.Fatal(err)
	}
	return &sotwStream{t: t, stream: stream, cancel: cancel, names: names}
}

// recv reads one response, ACKs it and returns its Clusters by name.
func (s *sotwStream) recv() map[string]*clusterpb.Cluster {
	s.t.Helper()
	resp, err := s.stream.Recv()
	if err != nil {
		s.t.Fatalf("receiving Clusters: %v", err)
	}
	out := decode[*clusterpb.Cluster](s.t, resp.GetResources())
	if err := s.stream.Send(&discoverypb.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNames: s.names,
		VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// waitCallerZones reads responses until Cluster name carries want.
func (s *sotwStream) waitCallerZones(name string, want map[string]float64) {
	s.t.Helper()
	for {
		c, ok := s.recv()[name]
		if ok && cmp.Diff(callerZones(c), want) == "" {
			return
		}
		s.t.Logf("Cluster %s: caller_zones %v, waiting for %v", name, callerZones(c), want)
	}
}

// clusters reads one delta response of d, ACKs it, and returns its
// Clusters by name.
func (d *deltaStream) clusters() map[string]*clusterpb.Cluster {
	d.t.Helper()
	return decode[*clusterpb.Cluster](d.t, deltaAnys(d.next()))
}

// waitCallerZones reads responses until Cluster name carries want, failing
// on any other Cluster.
func (d *deltaStream) waitCallerZones(name string, want map[string]float64) {
	d.t.Helper()
	for {
		for n, c := range d.clusters() {
			if n != name {
				d.t.Fatalf("received Cluster %s while waiting for %s's caller_zones", n, name)
			}
			if cmp.Diff(callerZones(c), want) == "" {
				return
			}
		}
	}
}

func TestServer_CallerZonesFollowSubscribedStreams(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startServer(t, xdsserver.WithCallerZonesInterval(0))
	a, b := inZones(service("a", "10.0.0.1"), "zone-a", "zone-b", "zone-c", "zone-d", "zone-e"), service("b", "10.0.0.2")
	s.Update(topology.NewSnapshot(1, time.Now(), []*topology.Service{a, b}))
	testkit.Eventually(ctx, t, "first push", s.Ready)
	cc := dial(t, s.addr)
	const name = "a.default:8080"
	callerStreams := func(zone string) float64 {
		return testkit.MetricValue(t, s.reg, "fairway_xds_caller_streams", "zone", zone)
	}

	// An observer without a zone subscribed to a and b over delta: it must
	// see only a's Cluster change, never b's.
	observer := newDeltaStream(ctx, t, s.addr)
	observer.subscribe(resourcev3.ClusterType, name, "b.default:8080")
	if got := sortedKeys(observer.clusters()); !slices.Equal(got, []string{name, "b.default:8080"}) {
		t.Fatalf("observer's first response has %v, want a and b", got)
	}

	// (a) Three SotW streams in zones a, a, b.
	s1 := newSotWStream(ctx, t, cc, zoneNode("s1", "zone-a"), name)
	newSotWStream(ctx, t, cc, zoneNode("s2", "zone-a"), name)
	s3 := newSotWStream(ctx, t, cc, zoneNode("s3", "zone-b"), name)
	s1.waitCallerZones(name, map[string]float64{"zone-a": 0.667, "zone-b": 0.333})
	if got, want := []float64{callerStreams("zone-a"), callerStreams("zone-b")}, []float64{2, 1}; !slices.Equal(got, want) {
		t.Errorf("fairway_xds_caller_streams{zone-a, zone-b} = %v, want %v", got, want)
	}

	// (b) The zone-b stream closes.
	s3.cancel()
	s1.waitCallerZones(name, map[string]float64{"zone-a": 1})
	testkit.Eventually(ctx, t, "fairway_xds_caller_streams{zone-b} = 0", func() bool { return callerStreams("zone-b") == 0 })
	if n := len(series(t, s.reg, "fairway_xds_caller_streams", "zone", "zone-b")); n != 0 {
		t.Errorf("fairway_xds_caller_streams keeps %d zone-b series after its last stream closed, want none", n)
	}

	// (c) A delta stream in zone c subscribes, and sees the same fractions.
	ds := newDeltaStream(ctx, t, s.addr)
	ds.send(&discoverypb.DeltaDiscoveryRequest{Node: zoneNode("d1", "zone-c"), TypeUrl: resourcev3.ClusterType, ResourceNamesSubscribe: []string{name}})
	want := map[string]float64{"zone-a": 0.667, "zone-c": 0.333}
	s1.waitCallerZones(name, want)
	ds.waitCallerZones(name, want)

	// (d) A stream without a zone, one in zone e whose client does not
	// route by caller zones (proxyless gRPC: no client feature) and two
	// wildcard streams in zone d are not counted: once they have been
	// answered, the next counted stream gives a: 3/4, c: 1/4.
	newSotWStream(ctx, t, cc, zoneNode("nozone", ""), name).recv()
	newSotWStream(ctx, t, cc, &corepb.Node{Id: "grpc-go", Locality: &corepb.Locality{Zone: "zone-e"}}, name).recv()
	if got := len(series(t, s.reg, "fairway_xds_caller_streams", "zone", "zone-e")); got != 0 {
		t.Errorf("fairway_xds_caller_streams has %d zone-e series for a client without the caller-zones feature, want none", got)
	}
	newSotWStream(ctx, t, cc, zoneNode("wild1", "zone-d")).recv()
	newSotWStream(ctx, t, cc, zoneNode("wild2", "zone-d"), "*").recv()
	if got := callerStreams("zone-d"); got != 2 {
		t.Errorf("fairway_xds_caller_streams{zone-d} = %v, want 2 (streams stating a zone)", got)
	}
	newSotWStream(ctx, t, cc, zoneNode("s4", "zone-a"), name)
	s1.waitCallerZones(name, map[string]float64{"zone-a": 0.75, "zone-c": 0.25})

	// The delta stream unsubscribes: it no longer counts.
	ds.send(&discoverypb.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNamesUnsubscribe: []string{name}})
	s1.waitCallerZones(name, map[string]float64{"zone-a": 1})

	// The observer saw a's Cluster reach the last state, and only a's.
	observer.waitCallerZones(name, map[string]float64{"zone-a": 1})
	// Callers alone never count as a topology push.
	if got := testkit.MetricValue(t, s.reg, "fairway_xds_pushes_total"); got != 1 {
		t.Errorf("fairway_xds_pushes_total = %v, want 1", got)
	}
	if got := testkit.MetricValue(t, s.reg, "fairway_xds_caller_zones_updates_total"); got < 5 {
		t.Errorf("fairway_xds_caller_zones_updates_total = %v, want at least 5", got)
	}
}

func TestServer_CallerZonesRepublishedOnlyWhenMovedEnough(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startServer(t, xdsserver.WithCallerZonesInterval(0))
	cc := dial(t, s.addr)
	const name = "a.default:8080"
	updates := func() float64 { return testkit.MetricValue(t, s.reg, "fairway_xds_caller_zones_updates_total") }
	callerStreams := func(zone string) float64 {
		return testkit.MetricValue(t, s.reg, "fairway_xds_caller_streams", "zone", zone)
	}

	// 25 streams in each of zones a and b subscribe before the first
	// snapshot: its push renders a's Cluster with a: 0.5, b: 0.5.
	for i := range 25 {
		newSotWStream(ctx, t, cc, zoneNode(fmt.Sprintf("a%d", i), "zone-a"), name)
		newSotWStream(ctx, t, cc, zoneNode(fmt.Sprintf("b%d", i), "zone-b"), name)
	}
	// Before the first push no zone is known to exist: all count as (other).
	testkit.Eventually(ctx, t, "50 streams counted", func() bool { return callerStreams("(other)") == 50 })
	snap := topology.NewSnapshot(1, time.Now(), []*topology.Service{inZones(service("a", "10.0.0.1"), "zone-a", "zone-b"), service("other", "10.0.0.2")})
	s.Update(snap)
	testkit.Eventually(ctx, t, "first push", s.Ready)
	testkit.Eventually(ctx, t, "the streams counted by zone", func() bool { return callerStreams("zone-a") == 25 && callerStreams("zone-b") == 25 })
	observer := newSotWStream(ctx, t, cc, zoneNode("observer", ""), name)
	if got := callerZones(observer.recv()[name]); cmp.Diff(got, map[string]float64{"zone-a": 0.5, "zone-b": 0.5}) != "" {
		t.Fatalf("first Cluster a: caller_zones %v, want zone-a: 0.5, zone-b: 0.5", got)
	}
	before := updates()

	// 26/51 and 27/52 in zone a move zone a by less than 0.02 from the
	// published 0.5: a push (forced by a change to another service)
	// leaves a's Cluster alone.
	for i, version := range []uint64{2, 3} {
		newSotWStream(ctx, t, cc, zoneNode(fmt.Sprintf("extra%d", i), "zone-a"), name)
		testkit.Eventually(ctx, t, "the extra stream counted", func() bool {
			return callerStreams("zone-a") == float64(26+i)
		})
		snap = snap.With(version, time.Now(), []*topology.Service{service("other", fmt.Sprintf("10.0.1.%d", version))}, nil)
		s.Update(snap)
		testkit.Eventually(ctx, t, fmt.Sprintf("push of version %d", version), func() bool {
			return testkit.MetricValue(t, s.reg, "fairway_xds_snapshot_version") == float64(version)
		})
		if got := updates(); got != before {
			t.Fatalf("with %d streams in zone a: fairway_xds_caller_zones_updates_total = %v, want %v (no republish)", 26+i, got, before)
		}
	}

	// 28/53 moves it by 0.028: republished, relative to the published 0.5.
	newSotWStream(ctx, t, cc, zoneNode("extra2", "zone-a"), name)
	observer.waitCallerZones(name, map[string]float64{"zone-a": 0.528, "zone-b": 0.472})
	if got := updates(); got != before+1 {
		t.Errorf("fairway_xds_caller_zones_updates_total = %v, want %v", got, before+1)
	}
}

// TestServer_CallerZonesWaitForWarmup: during the warm-up the Cluster
// carries no caller_zones, whoever subscribes; once it ends, the Clusters
// with callers are republished with them, without any other change.
func TestServer_CallerZonesWaitForWarmup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	clk := clocktesting.NewFakeClock(time.Now())
	s := startServer(t, xdsserver.WithClock(clk), xdsserver.WithDebounce(0), xdsserver.WithCallerZonesWarmup(5*time.Second))
	s.Update(topology.NewSnapshot(1, time.Now(), []*topology.Service{inZones(service("a", "10.0.0.1"), "zone-a")}))
	testkit.Eventually(ctx, t, "first push", s.Ready)
	cc := dial(t, s.addr)
	const name = "a.default:8080"
	st := newSotWStream(ctx, t, cc, zoneNode("n1", "zone-a"), name)
	if c := st.recv()[name]; c == nil || callerZones(c) != nil {
		t.Fatalf("Cluster during the warm-up = %v, want %s without caller_zones", c, name)
	}
	testkit.Eventually(ctx, t, "the stream counted", func() bool {
		return testkit.MetricValue(t, s.reg, "fairway_xds_caller_streams", "zone", "zone-a") == 1
	})
	clk.Step(4 * time.Second)
	s.Update(topology.NewSnapshot(2, time.Now(), []*topology.Service{inZones(service("a", "10.0.0.1", "10.0.0.3"), "zone-a")}))
	if got := testkit.MetricValue(t, s.reg, "fairway_xds_caller_zones_updates_total"); got != 0 {
		t.Errorf("caller_zones updates during the warm-up = %v, want 0", got)
	}
	clk.Step(time.Second)
	st.waitCallerZones(name, map[string]float64{"zone-a": 1})
	if got := testkit.MetricValue(t, s.reg, "fairway_xds_caller_zones_updates_total"); got != 1 {
		t.Errorf("caller_zones updates after the warm-up = %v, want 1", got)
	}
}
