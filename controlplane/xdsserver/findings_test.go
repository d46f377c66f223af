package xdsserver_test

// Tests of issue 10's findings 3 (caller zones spoofed through many streams,
// churn-driven pushes) and 4 (unknown resource names kept and logged without
// bound). They use only what the server had before its limits, so that they
// run, and fail, against it.

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/controlplane/xdsserver"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// inZones puts svc's endpoints in zones, the i-th endpoint in zones[i %
// len(zones)], and adds an endpoint when there are more zones than
// endpoints, so that each zone counts.
func inZones(svc *topology.Service, zones ...string) *topology.Service {
	for i := len(svc.Endpoints); i < len(zones); i++ {
		svc.Endpoints = append(svc.Endpoints, topology.Endpoint{Address: fmt.Sprintf("10.9.0.%d", i), Port: 9000, Ready: true, Serving: true, Weight: 1})
	}
	for i := range svc.Endpoints {
		svc.Endpoints[i].Zone = zones[i%len(zones)]
	}
	topology.SortEndpoints(svc.Endpoints)
	return svc
}

// TestServer_SpoofedZonesNeitherSkewNorChurnCallerZones (finding 3): one
// pod opens 50 streams on one connection under one node id, the first in
// zone-1, the others claiming zone-1 or made-up zones, then opens and
// closes 100 streams under fresh node ids in zone-0 or made-up zones. An
// honest subscriber of the Cluster sees the pod as one caller in zone-1,
// never a made-up zone, and the Cluster is re-rendered for its callers at
// most twice over the whole attack. Before the limits: 27 votes for zone-1,
// 24 made-up zones, a re-render per stream.
func TestServer_SpoofedZonesNeitherSkewNorChurnCallerZones(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
	defer cancel()
	clk := clocktesting.NewFakeClock(time.Now())
	s := startServer(t, xdsserver.WithClock(clk), xdsserver.WithDebounce(0))
	callerStreams := func() float64 { return testkit.MetricValue(t, s.reg, "fairway_xds_caller_streams") }
	const a, marker = "a.default:8080", "m.default:8080"

	// Two honest callers, in zone-0 and zone-1, before the first push.
	honest := dial(t, s.addr)
	newSotWStream(ctx, t, honest, zoneNode("honest-0", "zone-0"), a)
	newSotWStream(ctx, t, honest, zoneNode("honest-1", "zone-1"), a)
	testkit.Eventually(ctx, t, "2 caller streams", func() bool { return callerStreams() == 2 })
	snap := topology.NewSnapshot(1, time.Now(), []*topology.Service{
		inZones(service("a", "10.0.0.1", "10.0.0.2"), "zone-0", "zone-1"), service("m", "10.0.0.3")})
	s.Update(snap)
	testkit.Eventually(ctx, t, "first push", s.Ready)
	observer := newDeltaStream(ctx, t, s.addr)
	observer.subscribe(resourcev3.ClusterType, a, marker)
	first := observer.clusters()
	if got := callerZones(first[a]); !cmp.Equal(got, map[string]float64{"zone-0": 0.5, "zone-1": 0.5}) {
		t.Fatalf("honest caller_zones of %s = %v, want zone-0: 0.5, zone-1: 0.5", a, got)
	}
	// Each re-render of a for its callers is sent to every subscriber that
	// keeps up (this one reads only at the end, and gets the last state).
	republished := func() float64 { return testkit.MetricValue(t, s.reg, "fairway_xds_caller_zones_updates_total") }
	before := republished()

	// The pod: 50 streams on one connection, one node id.
	pod := dial(t, s.addr)
	newSotWStream(ctx, t, pod, zoneNode("pod", "zone-1"), a)
	testkit.Eventually(ctx, t, "the pod's first stream counted", func() bool { return callerStreams() == 3 })
	for i := 1; i < 50; i++ {
		zone := "zone-1"
		if i%2 == 0 {
			zone = fmt.Sprintf("made-up-%d", i)
		}
		newSotWStream(ctx, t, pod, zoneNode("pod", zone), a)
	}
	testkit.Eventually(ctx, t, "the pod's 50 streams counted", func() bool { return callerStreams() == 52 })
	// Churn: fresh node ids, each stream counted, then closed.
	for i := range 100 {
		zone := "zone-0"
		if i%2 == 0 {
			zone = fmt.Sprintf("made-up-churn-%d", i)
		}
		st := newSotWStream(ctx, t, pod, zoneNode(fmt.Sprintf("churn-%d", i), zone), a)
		testkit.Eventually(ctx, t, "a churn stream counted", func() bool { return callerStreams() == 53 })
		st.cancel()
		testkit.Eventually(ctx, t, "a churn stream gone", func() bool { return callerStreams() == 52 })
	}
	clk.Step(time.Minute) // past any interval between caller-zone updates

	// A change to m marks the end: every update of a sent before it is in.
	s.Update(snap.With(2, time.Now(), []*topology.Service{roundRobin(service("m", "10.0.0.3"))}, nil))
	var updates []map[string]float64
	for done := false; !done; {
		for name, c := range observer.clusters() {
			if name == marker {
				done = true
				continue
			}
			updates = append(updates, callerZones(c))
		}
	}
	t.Logf("%v re-renders of %s for its callers during the attack; the subscriber received %v", republished()-before, a, updates)
	if n := republished() - before; n > 2 {
		t.Errorf("%s re-rendered %v times for its callers during the attack, want at most 2", a, n)
	}
	for _, u := range updates {
		if zones := slices.Sorted(maps.Keys(u)); !slices.Equal(zones, []string{"zone-0", "zone-1"}) {
			t.Errorf("caller_zones of %s over zones %v, want zone-0 and zone-1 only", a, zones)
			break
		}
	}
	if want := map[string]float64{"zone-0": 0.333, "zone-1": 0.667}; len(updates) == 0 || !cmp.Equal(updates[len(updates)-1], want) {
		t.Errorf("last caller_zones of %s = %v, want %v (the pod counts once, in zone-1)", a, updates, want)
	}
}

// lineCounter counts the lines written to it that hold substr.
type lineCounter struct {
	substr string
	n      atomic.Int64
}

func (c *lineCounter) Write(p []byte) (int, error) {
	c.n.Add(int64(strings.Count(string(p), c.substr)))
	return len(p), nil
}

// unknownNames sends requests requests of perRequest distinct unknown
// Cluster names (each also naming the known a) on one SotW stream, then one
// that adds m, and waits for m: every request has been handled. It
// returns the stream, the heap growth (after a GC) the stream holds and
// the log lines about unknown names.
func unknownNames(ctx context.Context, t *testing.T, requests, perRequest int, opts ...xdsserver.Option) (heap int64, lines int64, s *testServer) {
	t.Helper()
	logs := &lineCounter{substr: "does not serve"}
	s = startServer(t, append(opts, xdsserver.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))...)
	s.Update(topology.NewSnapshot(1, time.Now(), []*topology.Service{service("a", "10.0.0.1"), service("m", "10.0.0.2")}))
	testkit.Eventually(ctx, t, "first push", s.Ready)
	before := heapInUse()

	stream := newSotWADS(ctx, t, s.addr)
	names := func(r int, extra ...string) []string {
		out := append([]string{"a.default:8080"}, extra...)
		for i := range perRequest {
			out = append(out, fmt.Sprintf("unknown-%d-%d.default:8080", r, i))
		}
		return out
	}
	stream.send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: "names"}, TypeUrl: resourcev3.ClusterType, ResourceNames: names(0)})
	resp := stream.recv()
	for r := 1; r < requests; r++ {
		stream.send(&discoverypb.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNames: names(r),
			VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
	}
	stream.send(&discoverypb.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNames: names(requests-1, "m.default:8080"),
		VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
	for {
		resp = stream.recv()
		if _, ok := decode[*clusterpb.Cluster](t, resp.GetResources())["m.default:8080"]; ok {
			break
		}
	}
	return heapInUse() - before, logs.n.Load(), s
}

// heapInUse is the live heap after a garbage collection.
func heapInUse() int64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// TestServer_UnknownNamesBoundedInMemoryAndLogs (finding 4): 180,000
// unknown names over 20 requests of one stream, under the default names
// limit per request, leave one log line and at most 100 names counted (and
// remembered) by the stream, and the heap the stream holds under 6 MB.
// Before the limits: 180,000 log lines, 180,000 names remembered (+~25 MB).
func TestServer_UnknownNamesBoundedInMemoryAndLogs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*testTimeout)
	defer cancel()
	heap, lines, s := unknownNames(ctx, t, 20, 9000)
	t.Logf("180,000 unknown names: heap +%.1f MB, %d log lines", float64(heap)/1e6, lines)
	if lines != 1 {
		t.Errorf("%d log lines about unknown names, want 1 for the stream", lines)
	}
	if got := testkit.MetricValue(t, s.reg, "fairway_xds_unknown_resource_requests_total", "type", "cluster"); got > 100 {
		t.Errorf("fairway_xds_unknown_resource_requests_total{cluster} = %v, want at most 100 (the names a stream remembers)", got)
	}
	if heap > 6e6 {
		t.Errorf("the stream holds %.1f MB of heap, want under 6 MB", float64(heap)/1e6)
	}
}
