package xdsserver

import (
	"fmt"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/wire"
)

// newTestCallerZones returns a callerZones whose warm-up ends at from,
// without an interval between republishes, and its
// fairway_xds_caller_streams gauge.
func newTestCallerZones(from time.Time) (*callerZones, *prometheus.GaugeVec) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fairway_xds_caller_streams"}, []string{"zone"})
	return newCallerZones(callerZonesConfig{gauge: g, from: from, clock: clocktesting.NewFakeClock(time.Now()), kick: func() {}}), g
}

// zoneAware is the node of a Fairway client in zone, whose id is the zone.
func zoneAware(zone string) *corepb.Node { return zoneNode(zone, zone) }

// zoneNode is the node id of a Fairway client in zone.
func zoneNode(id, zone string) *corepb.Node {
	return &corepb.Node{Id: id, Locality: &corepb.Locality{Zone: zone}, ClientFeatures: []string{wire.CallerZonesFeature}}
}

func sotw(id int64) streamID  { return streamID{protoSotW, id} }
func delta(id int64) streamID { return streamID{protoDelta, id} }

// snapshotOf is a snapshot with one service per name, each with an
// endpoint in zone-a and one in zone-b.
func snapshotOf(names ...string) *topology.Snapshot {
	var svcs []*topology.Service
	for _, n := range names {
		svcs = append(svcs, &topology.Service{Key: topology.ServiceKey{Namespace: "default", Name: n, Port: 8080}, Policy: topology.DefaultPolicy(),
			Endpoints: []topology.Endpoint{{Address: "10.0.0.1", Port: 80, Zone: "zone-a"}, {Address: "10.0.0.2", Port: 80, Zone: "zone-b"}}})
	}
	return topology.NewSnapshot(1, time.Now(), svcs)
}

func TestCallerZones_CountsFollowStreams(t *testing.T) {
	z, gauge := newTestCallerZones(time.Time{})
	z.setZones(snapshotOf("a", "b"))
	const a, b = "a.default:8080", "b.default:8080"
	steps := []struct {
		name    string
		do      func() bool
		changed bool
		want    map[string]map[string]int // counts
	}{
		{"subscribe before the node", func() bool { return z.subscribe(sotw(1), []string{a}, nil) }, false, map[string]map[string]int{}},
		{"the node states zone-a", func() bool { return z.node(sotw(1), zoneAware("zone-a")) }, true,
			map[string]map[string]int{a: {"zone-a": 1}}},
		{"a second node is ignored", func() bool { return z.node(sotw(1), zoneAware("zone-b")) }, false,
			map[string]map[string]int{a: {"zone-a": 1}}},
		{"a SotW ACK with the same names", func() bool { return z.subscribe(sotw(1), []string{a}, nil) }, false,
			map[string]map[string]int{a: {"zone-a": 1}}},
		{"SotW names replace the set", func() bool { return z.subscribe(sotw(1), []string{b, "*"}, nil) }, true,
			map[string]map[string]int{b: {"zone-a": 1}}},
		{"a node without the feature counts for no zone", func() bool {
			return z.node(sotw(2), &corepb.Node{Locality: &corepb.Locality{Zone: "zone-e"}}) || z.subscribe(sotw(2), []string{a}, nil)
		}, false, map[string]map[string]int{b: {"zone-a": 1}}},
		{"a delta stream in zone-b subscribes", func() bool {
			return z.node(delta(1), zoneAware("zone-b")) || z.subscribe(delta(1), []string{a, b}, nil)
		}, true, map[string]map[string]int{a: {"zone-b": 1}, b: {"zone-a": 1, "zone-b": 1}}},
		{"delta adds and removes", func() bool { return z.subscribe(delta(1), []string{"*"}, []string{a}) }, true,
			map[string]map[string]int{b: {"zone-a": 1, "zone-b": 1}}},
		{"the SotW stream closes", func() bool { return z.closed(sotw(1)) }, true,
			map[string]map[string]int{b: {"zone-b": 1}}},
		{"an unknown stream closes", func() bool { return z.closed(sotw(9)) }, false,
			map[string]map[string]int{b: {"zone-b": 1}}},
	}
	for _, st := range steps {
		if got := st.do(); got != st.changed {
			t.Errorf("%s: changed = %v, want %v", st.name, got, st.changed)
		}
		if diff := cmp.Diff(z.counts, st.want); diff != "" {
			t.Errorf("%s: counts (-got +want):\n%s", st.name, diff)
		}
	}
	if got := testutil.ToFloat64(gauge.WithLabelValues("zone-b")); got != 1 {
		t.Errorf("fairway_xds_caller_streams{zone-b} = %v, want 1", got)
	}
	if got := testutil.CollectAndCount(gauge); got != 1 {
		t.Errorf("fairway_xds_caller_streams has %d series, want 1 (zone-a's goes with its last stream)", got)
	}
}

func TestCallerZones_RepublishOnlyWhenMovedEnough(t *testing.T) {
	z, _ := newTestCallerZones(time.Time{})
	snap := snapshotOf("a", "b")
	const a, b = "a.default:8080", "b.default:8080"
	open := func(id int64, zone string, names ...string) {
		z.node(sotw(id), zoneNode(fmt.Sprint(id), zone))
		z.subscribe(sotw(id), names, nil)
	}
	for i := range 25 {
		open(int64(2*i), "zone-a", a)
		open(int64(2*i+1), "zone-b", a)
	}
	zones, added := z.republish(time.Now(), snap, map[string]*topology.Service{})
	if diff := cmp.Diff(zones, map[string]map[string]float64{a: {"zone-a": 0.5, "zone-b": 0.5}}); diff != "" || added != 1 {
		t.Fatalf("first republish = %v, %d; want a at 0.5/0.5, 1 added (-got +want):\n%s", zones, added, diff)
	}
	// 27 of 52 in zone-a (0.519) stays within CallerZonesMinMove of 0.5.
	open(100, "zone-a", a)
	open(101, "zone-a", a)
	if zones, added := z.republish(time.Now(), snap, map[string]*topology.Service{}); len(zones) != 0 || added != 0 {
		t.Errorf("republish at 27/52 = %v, %d; want nothing", zones, added)
	}
	// 28 of 53 (0.528) moves by 0.028 from the published 0.5.
	open(102, "zone-a", a)
	zones, added = z.republish(time.Now(), snap, map[string]*topology.Service{})
	if diff := cmp.Diff(zones, map[string]map[string]float64{a: {"zone-a": 0.528, "zone-b": 0.472}}); diff != "" || added != 1 {
		t.Errorf("republish at 28/53 = %v, %d; want a at 0.528/0.472, 1 added (-got +want):\n%s", zones, added, diff)
	}
	// A Cluster rendered for a topology change carries its current callers
	// (none for b), and is not counted as republished.
	svcA, _ := snap.Service(topology.ServiceKey{Namespace: "default", Name: "a", Port: 8080})
	svcB, _ := snap.Service(topology.ServiceKey{Namespace: "default", Name: "b", Port: 8080})
	zones, added = z.republish(time.Now(), snap, map[string]*topology.Service{a: svcA, b: svcB})
	if diff := cmp.Diff(zones, map[string]map[string]float64{a: {"zone-a": 0.528, "zone-b": 0.472}}); diff != "" || added != 0 {
		t.Errorf("republish with a and b changed = %v, %d; want a at 0.528/0.472, none added (-got +want):\n%s", zones, added, diff)
	}
	// A removed service is forgotten: its callers, once it is back, are
	// published again even when they have not moved.
	z.forget([]string{a})
	z.markAllDirty()
	if _, added := z.republish(time.Now(), snap, map[string]*topology.Service{}); added != 1 {
		t.Errorf("republish after forget: added %d, want 1", added)
	}
}

func TestCallerZones_NothingBeforeWarmup(t *testing.T) {
	start := time.Now()
	z, _ := newTestCallerZones(start.Add(5 * time.Second))
	snap := snapshotOf("a")
	const a = "a.default:8080"
	z.node(sotw(1), zoneAware("zone-a"))
	z.subscribe(sotw(1), []string{a}, nil)
	svc, _ := snap.Service(topology.ServiceKey{Namespace: "default", Name: "a", Port: 8080})
	clusters := map[string]*topology.Service{a: svc}
	if zones, added := z.republish(start.Add(4*time.Second), snap, clusters); len(zones) != 0 || added != 0 {
		t.Errorf("republish during the warm-up = %v, %d; want nothing", zones, added)
	}
	// The first push after the warm-up looks at every Cluster with callers,
	// although none changed since the last push.
	zones, added := z.republish(start.Add(5*time.Second), snap, map[string]*topology.Service{})
	if diff := cmp.Diff(zones, map[string]map[string]float64{a: {"zone-a": 1}}); diff != "" || added != 1 {
		t.Errorf("republish after the warm-up = %v, %d; want a at 1, 1 added (-got +want):\n%s", zones, added, diff)
	}
}

func TestServiceOf_OnlyTheClusterName(t *testing.T) {
	snap := snapshotOf("a")
	for name, want := range map[string]bool{
		"a.default:8080": true, "a.default.svc.cluster.local:8080": false, "b.default:8080": false,
		"not a name": false, "xdstp://x/a.default:8080": false,
	} {
		if _, got := serviceOf(snap, name); got != want {
			t.Errorf("serviceOf(%q) found = %v, want %v", name, got, want)
		}
	}
}

func TestCallerZonesMoved_Threshold(t *testing.T) {
	half := map[string]int{"a": 500, "b": 500}
	tests := []struct {
		name      string
		published map[string]int
		cur       map[string]int
		want      bool
	}{
		{"same", half, map[string]int{"a": 500, "b": 500}, false},
		{"moved 0.019", half, map[string]int{"a": 519, "b": 481}, false},
		{"moved 0.02", half, map[string]int{"a": 520, "b": 480}, true},
		{"moved down 0.02", half, map[string]int{"a": 480, "b": 520}, true},
		{"zone appears", half, map[string]int{"a": 500, "b": 499, "c": 1}, true},
		{"zone replaced", half, map[string]int{"a": 500, "c": 500}, true},
		{"zone disappears", half, map[string]int{"a": 1000}, true},
		{"first callers", nil, map[string]int{"a": 1000}, true},
		{"last caller leaves", map[string]int{"a": 1000}, nil, true},
		{"none before and after", nil, nil, false},
	}
	for _, tt := range tests {
		if got := callerZonesMoved(tt.published, tt.cur); got != tt.want {
			t.Errorf("%s: callerZonesMoved(%v, %v) = %v, want %v", tt.name, tt.published, tt.cur, got, tt.want)
		}
	}
}

func TestPermille_Rounding(t *testing.T) {
	tests := []struct {
		counts map[string]int
		want   map[string]int
	}{
		{map[string]int{"a": 2, "b": 1}, map[string]int{"a": 667, "b": 333}},
		{map[string]int{"a": 1, "b": 1, "c": 1}, map[string]int{"a": 333, "b": 333, "c": 333}},
		{map[string]int{"a": 28, "b": 25}, map[string]int{"a": 528, "b": 472}},
		{map[string]int{"a": 1, "b": 2999}, map[string]int{"a": 0, "b": 1000}},
		{map[string]int{}, nil},
		{nil, nil},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(permille(tt.counts), tt.want); diff != "" {
			t.Errorf("permille(%v) (-got +want):\n%s", tt.counts, diff)
		}
	}
}

// TestCallerZones_OneVotePerNodeOnlyRealZones: a node id votes once
// whatever its streams, in the zone of its first stream; made-up zones count
// for no Cluster and share one gauge series.
func TestCallerZones_OneVotePerNodeOnlyRealZones(t *testing.T) {
	z, gauge := newTestCallerZones(time.Time{})
	snap := snapshotOf("a")
	const a = "a.default:8080"
	open := func(id int64, node, zone string) {
		z.node(sotw(id), zoneNode(node, zone))
		z.subscribe(sotw(id), []string{a}, nil)
	}
	open(1, "honest-a", "zone-a")
	open(2, "honest-b", "zone-b")
	open(3, "pod", "zone-b")
	for i := range 20 { // the same node claiming other zones, made up or not
		open(int64(10+i), "pod", fmt.Sprintf("made-up-%d", i))
		open(int64(100+i), "pod", "zone-a")
	}
	for i := range 5 { // other nodes in made-up zones
		open(int64(200+i), fmt.Sprintf("liar-%d", i), fmt.Sprintf("made-up-%d", i))
	}
	zones, _ := z.republish(time.Now(), snap, map[string]*topology.Service{})
	if diff := cmp.Diff(zones, map[string]map[string]float64{a: {"zone-a": 0.333, "zone-b": 0.667}}); diff != "" {
		t.Errorf("caller_zones (-got +want):\n%s", diff)
	}
	wantGauge := map[string]float64{"zone-a": 1, "zone-b": 42, otherZone: 5}
	for zone, want := range wantGauge {
		if got := testutil.ToFloat64(gauge.WithLabelValues(zone)); got != want {
			t.Errorf("fairway_xds_caller_streams{%s} = %v, want %v", zone, got, want)
		}
	}
	if got := testutil.CollectAndCount(gauge); got != len(wantGauge) {
		t.Errorf("fairway_xds_caller_streams has %d series, want %d", got, len(wantGauge))
	}
	// The pod's vote stays while any of its streams is open.
	z.closed(sotw(3))
	if zones, added := z.republish(time.Now(), snap, map[string]*topology.Service{}); len(zones) != 0 || added != 0 {
		t.Errorf("republish after one of the pod's streams closed = %v, %d; want nothing", zones, added)
	}
	for i := range 20 {
		z.closed(sotw(int64(10 + i)))
		z.closed(sotw(int64(100 + i)))
	}
	zones, _ = z.republish(time.Now(), snap, map[string]*topology.Service{})
	if diff := cmp.Diff(zones, map[string]map[string]float64{a: {"zone-a": 0.5, "zone-b": 0.5}}); diff != "" {
		t.Errorf("caller_zones after the pod's last stream closed (-got +want):\n%s", diff)
	}
	if _, ok := z.nodes["pod"]; ok || len(z.nodes) != 7 {
		t.Errorf("%d nodes kept (pod: %v), want 7: the pod goes with its last stream", len(z.nodes), ok)
	}
}

// TestCallerZones_IntervalHoldsRepublish: a Cluster is republished for its
// callers at most once per interval; a change in between waits for its end,
// when the timer kicks a push.
func TestCallerZones_IntervalHoldsRepublish(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	kicks := make(chan struct{}, 10)
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fairway_xds_caller_streams"}, []string{"zone"})
	z := newCallerZones(callerZonesConfig{gauge: g, interval: 5 * time.Second, clock: clk, kick: func() { kicks <- struct{}{} }})
	snap := snapshotOf("a")
	const a = "a.default:8080"
	open := func(id int64, zone string) {
		z.node(sotw(id), zoneNode(fmt.Sprint(id), zone))
		z.subscribe(sotw(id), []string{a}, nil)
	}
	open(1, "zone-a")
	if _, added := z.republish(clk.Now(), snap, map[string]*topology.Service{}); added != 1 {
		t.Fatalf("first republish added %d, want 1", added)
	}
	open(2, "zone-b")
	clk.Step(time.Second)
	if zones, added := z.republish(clk.Now(), snap, map[string]*topology.Service{}); len(zones) != 0 || added != 0 {
		t.Errorf("republish 1s later = %v, %d; want it held", zones, added)
	}
	z.closed(sotw(2)) // back and forth within the interval: nothing to publish
	open(3, "zone-b")
	clk.Step(4 * time.Second)
	select {
	case <-kicks:
	default:
		t.Fatal("no push kicked when the interval ended")
	}
	zones, added := z.republish(clk.Now(), snap, map[string]*topology.Service{})
	if diff := cmp.Diff(zones, map[string]map[string]float64{a: {"zone-a": 0.5, "zone-b": 0.5}}); diff != "" || added != 1 {
		t.Errorf("republish at the end of the interval = %v, %d; want a at 0.5/0.5, 1 added (-got +want):\n%s", zones, added, diff)
	}
	z.stop()
}
