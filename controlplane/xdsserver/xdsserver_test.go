package xdsserver_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/controlplane/translate"
	"github.com/fairway-lb/fairway/controlplane/xdsserver"
	"github.com/fairway-lb/fairway/internal/testkit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testTimeout = 15 * time.Second

func key(name string) topology.ServiceKey {
	return topology.ServiceKey{Namespace: "default", Name: name, Port: 8080}
}

func service(name string, addrs ...string) *topology.Service {
	svc := &topology.Service{Key: key(name), Policy: topology.DefaultPolicy()}
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			host, port = a, "9000"
		}
		var p int32
		fmt.Sscan(port, &p)
		svc.Endpoints = append(svc.Endpoints, topology.Endpoint{Address: host, Port: p, Ready: true, Serving: true, Weight: 1})
	}
	topology.SortEndpoints(svc.Endpoints)
	return svc
}

type testServer struct {
	*xdsserver.Server
	addr string
	reg  *prometheus.Registry
}

// startServer serves a new xdsserver on 127.0.0.1 until the test ends.
func startServer(t *testing.T, opts ...xdsserver.Option) *testServer {
	t.Helper()
	reg := prometheus.NewRegistry()
	s := xdsserver.New(append([]xdsserver.Option{
		xdsserver.WithRegisterer(reg), xdsserver.WithDebounce(time.Millisecond),
		xdsserver.WithLogger(slog.New(slog.NewTextHandler(t.Output(), nil))),
	}, opts...)...)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve() = %v, want nil after Close", err)
		}
	})
	return &testServer{Server: s, addr: lis.Addr().String(), reg: reg}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// series returns the series of metric name whose label has value (all of
// them when label is "").
func series(t *testing.T, reg *prometheus.Registry, name, label, value string) []*dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []*dto.Metric
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || slices.ContainsFunc(m.GetLabel(), func(lp *dto.LabelPair) bool {
				return lp.GetName() == label && lp.GetValue() == value
			}) {
				out = append(out, m)
			}
		}
	}
	return out
}

// decode unmarshals resources, all of type M, by resource name.
func decode[M proto.Message](t *testing.T, resources []*anypb.Any) map[string]M {
	t.Helper()
	out := map[string]M{}
	for _, a := range resources {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		r, ok := m.(M)
		if !ok {
			t.Fatalf("resource of type %s, want %T", a.GetTypeUrl(), r)
		}
		out[cachev3.GetResourceName(r)] = r
	}
	return out
}

// deltaAnys are the resources of a delta response.
func deltaAnys(resp *discoverypb.DeltaDiscoveryResponse) []*anypb.Any {
	out := make([]*anypb.Any, 0, len(resp.GetResources()))
	for _, r := range resp.GetResources() {
		out = append(out, r.GetResource())
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestServer_SotWSubscribesToOneServiceAmongMany(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startServer(t)
	var svcs []*topology.Service
	for i := range 50 {
		svcs = append(svcs, service(fmt.Sprintf("svc%02d", i), fmt.Sprintf("10.0.0.%d", i+1)))
	}
	s.Update(topology.NewSnapshot(1, time.Now(), svcs))
	testkit.Eventually(ctx, t, "first push", s.Ready)

	stream := newSotWADS(ctx, t, s.addr)
	want := key("svc17").ResourceName()
	stream.send(&discoverypb.DiscoveryRequest{
		Node: &corepb.Node{Id: "client-1"}, TypeUrl: resourcev3.EndpointType, ResourceNames: []string{want},
	})
	resp := stream.recv()
	got := decode[*endpointpb.ClusterLoadAssignment](t, resp.GetResources())
	if diff := cmp.Diff(got, map[string]*endpointpb.ClusterLoadAssignment{want: translate.LoadAssignment(svcs[17])}, protocmp.Transform()); diff != "" {
		t.Errorf("response mismatch (-got +want):\n%s", diff)
	}
	if g := testkit.MetricValue(t, s.reg, "fairway_xds_streams", "type", "endpoint", "protocol", "sotw"); g != 1 {
		t.Errorf("fairway_xds_streams{endpoint,sotw} = %v, want 1", g)
	}
	if g := testkit.MetricValue(t, s.reg, "fairway_xds_resources", "type", "listener"); g != 100 {
		t.Errorf("fairway_xds_resources{listener} = %v, want 100", g)
	}
}

func TestServer_OneStreamServesTwoServices(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startServer(t)
	a, b := service("a", "10.0.0.1"), service("b", "10.0.0.2", "10.0.0.3")
	s.Update(topology.NewSnapshot(1, time.Now(), []*topology.Service{a, b, service("c", "10.0.0.4")}))
	testkit.Eventually(ctx, t, "first push", s.Ready)

	stream := newSotWADS(ctx, t, s.addr)
	names := []string{a.Key.ResourceName(), b.Key.ResourceName()}
	for _, typ := range []string{resourcev3.ClusterType, resourcev3.EndpointType} {
		stream.send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: "c"}, TypeUrl: typ, ResourceNames: names})
	}
	gotNames := map[string][]string{}
	for range 2 {
		resp := stream.recv()
		for _, r := range resp.GetResources() {
			m, err := r.UnmarshalNew()
			if err != nil {
				t.Fatal(err)
			}
			n := cachev3.GetResourceName(m)
			gotNames[resp.GetTypeUrl()] = append(gotNames[resp.GetTypeUrl()], n)
		}
	}
	for typ := range gotNames {
		slices.Sort(gotNames[typ])
	}
	want := map[string][]string{resourcev3.ClusterType: names, resourcev3.EndpointType: names}
	if diff := cmp.Diff(gotNames, want); diff != "" {
		t.Errorf("resources on the stream (-got +want):\n%s", diff)
	}
}

func TestServer_DeltaSendsOnlyTheChangedService(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startServer(t)
	a, b, c := service("a", "10.0.0.1"), service("b", "10.0.0.2"), service("c", "10.0.0.3")
	snap := topology.NewSnapshot(1, time.Now(), []*topology.Service{a, b, c})
	s.Update(snap)
	testkit.Eventually(ctx, t, "first push", s.Ready)

	d := newDeltaStream(ctx, t, s.addr)
	d.send(&discoverypb.DeltaDiscoveryRequest{
		Node: &corepb.Node{Id: "envoy-1"}, TypeUrl: resourcev3.EndpointType,
		ResourceNamesSubscribe: []string{a.Key.ResourceName(), b.Key.ResourceName()},
	})
	recv := func() map[string]*endpointpb.ClusterLoadAssignment {
		t.Helper()
		resp := d.next()
		if len(resp.GetRemovedResources()) > 0 {
			t.Errorf("removed resources %v, want none", resp.GetRemovedResources())
		}
		return decode[*endpointpb.ClusterLoadAssignment](t, deltaAnys(resp))
	}
	if got := sortedKeys(recv()); !slices.Equal(got, []string{"a.default:8080", "b.default:8080"}) {
		t.Fatalf("initial delta response has %v, want a and b", got)
	}

	// Change a, then c (not subscribed), then b: the stream must carry
	// exactly a's new assignment, then exactly b's.
	a2 := service("a", "10.0.0.1", "10.0.0.11")
	snap = snap.With(2, time.Now(), []*topology.Service{a2}, nil)
	s.Update(snap)
	if diff := cmp.Diff(recv(), map[string]*endpointpb.ClusterLoadAssignment{"a.default:8080": translate.LoadAssignment(a2)}, protocmp.Transform()); diff != "" {
		t.Errorf("delta after changing a (-got +want):\n%s", diff)
	}
	testkit.Eventually(ctx, t, "push of version 2", func() bool { return testkit.MetricValue(t, s.reg, "fairway_xds_snapshot_version") == 2 })
	snap = snap.With(3, time.Now(), []*topology.Service{service("c", "10.0.0.33")}, nil)
	s.Update(snap)
	testkit.Eventually(ctx, t, "push of version 3", func() bool { return testkit.MetricValue(t, s.reg, "fairway_xds_snapshot_version") == 3 })
	// An equal but newly built a must not be re-sent either.
	b2 := service("b", "10.0.0.22")
	snap = snap.With(4, time.Now(), []*topology.Service{service("a", "10.0.0.1", "10.0.0.11"), b2}, nil)
	s.Update(snap)
	if diff := cmp.Diff(recv(), map[string]*endpointpb.ClusterLoadAssignment{"b.default:8080": translate.LoadAssignment(b2)}, protocmp.Transform()); diff != "" {
		t.Errorf("delta after changing c and b (-got +want):\n%s", diff)
	}
	if g := testkit.MetricValue(t, s.reg, "fairway_xds_streams", "type", "endpoint", "protocol", "delta"); g != 1 {
		t.Errorf("fairway_xds_streams{endpoint,delta} = %v, want 1", g)
	}
}

func TestServer_UnknownNameKeepsStreamServing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startServer(t)
	a := service("a", "10.0.0.1")
	snap := topology.NewSnapshot(1, time.Now(), []*topology.Service{a})
	s.Update(snap)
	testkit.Eventually(ctx, t, "first push", s.Ready)

	stream := newSotWADS(ctx, t, s.addr)
	names := []string{"a.default:8080", "nope.default:8080", "not a name"}
	req := &discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: "client-1"}, TypeUrl: resourcev3.EndpointType, ResourceNames: names}
	stream.send(req)
	resp := stream.recv()
	if got := sortedKeys(decode[*endpointpb.ClusterLoadAssignment](t, resp.GetResources())); !slices.Equal(got, []string{"a.default:8080"}) {
		t.Fatalf("response has %v, want only a.default:8080", got)
	}
	// ACK, then change a: the stream keeps serving the known name.
	stream.send(&discoverypb.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: names,
		VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
	a2 := service("a", "10.0.0.1", "10.0.0.2")
	s.Update(snap.With(2, time.Now(), []*topology.Service{a2}, nil))
	resp = stream.recv()
	if diff := cmp.Diff(decode[*endpointpb.ClusterLoadAssignment](t, resp.GetResources()), map[string]*endpointpb.ClusterLoadAssignment{"a.default:8080": translate.LoadAssignment(a2)}, protocmp.Transform()); diff != "" {
		t.Errorf("response after change (-got +want):\n%s", diff)
	}
	// Two unknown names, each counted once although requested twice.
	if got := testkit.MetricValue(t, s.reg, "fairway_xds_unknown_resource_requests_total", "type", "endpoint"); got != 2 {
		t.Errorf("fairway_xds_unknown_resource_requests_total{endpoint} = %v, want 2", got)
	}
}

func TestServer_DebounceCoalescesBurstAndBoundsLoneChange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	const window = 20 * time.Millisecond
	clk := clocktesting.NewFakeClock(time.Now())
	reg := prometheus.NewRegistry()
	s := xdsserver.New(xdsserver.WithRegisterer(reg), xdsserver.WithDebounce(window), xdsserver.WithClock(clk))
	defer s.Close()
	pushes := func() float64 { return testkit.MetricValue(t, reg, "fairway_xds_pushes_total") }
	version := func() float64 { return testkit.MetricValue(t, reg, "fairway_xds_snapshot_version") }

	// A burst of 10 updates spread over less than one window: one push,
	// carrying the last snapshot, once the window after the first has passed.
	var snap *topology.Snapshot
	for i := range 10 {
		snap = snap.With(uint64(i+1), time.Now(), []*topology.Service{service("a", fmt.Sprintf("10.0.0.%d", i+1))}, nil)
		s.Update(snap)
		if i == 4 {
			clk.Step(window / 2) // later updates do not restart the timer
		}
	}
	if got := pushes(); got != 0 {
		t.Fatalf("pushes before the window passed = %v, want 0", got)
	}
	clk.Step(window / 2)
	testkit.Eventually(ctx, t, "the burst's push", func() bool { return pushes() == 1 })
	if got := version(); got != 10 {
		t.Errorf("pushed version = %v, want 10 (the burst's last)", got)
	}

	// A lone update is pushed exactly when its window has passed.
	s.Update(snap.With(11, time.Now(), []*topology.Service{service("a", "10.0.0.99")}, nil))
	clk.Step(window - time.Nanosecond)
	if got := pushes(); got != 1 {
		t.Fatalf("pushes before the lone update's window passed = %v, want 1", got)
	}
	clk.Step(time.Nanosecond)
	testkit.Eventually(ctx, t, "the lone update's push", func() bool { return pushes() == 2 })
	if got := version(); got != 11 {
		t.Errorf("pushed version = %v, want 11", got)
	}
	var observed uint64
	for _, m := range series(t, reg, "fairway_xds_change_to_push_seconds", "", "") {
		observed += m.GetHistogram().GetSampleCount()
	}
	if observed != 2 {
		t.Errorf("fairway_xds_change_to_push_seconds count = %v, want 2", observed)
	}
}

func TestServer_AdminEndpoints(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startServer(t)
	hs := httptest.NewServer(s.AdminHandler())
	defer hs.Close()
	get := func(path string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, hs.URL+path, nil)
		resp, err := hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get("/healthz"); got != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", got)
	}
	if got := get("/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz before the first snapshot = %d, want 503", got)
	}
	s.Update(topology.NewSnapshot(7, time.Now(), nil)) // an empty world is a world
	testkit.Eventually(ctx, t, "/readyz 200", func() bool { return get("/readyz") == http.StatusOK })
	if got := get("/metrics"); got != http.StatusOK {
		t.Errorf("/metrics = %d, want 200", got)
	}
	if got := testkit.MetricValue(t, s.reg, "fairway_xds_snapshot_version"); got != 7 {
		t.Errorf("fairway_xds_snapshot_version = %v, want 7", got)
	}
}

// sotwADS is a raw SotW ADS stream.
type sotwADS struct {
	t      *testing.T
	stream discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient
}

func newSotWADS(ctx context.Context, t *testing.T, addr string) *sotwADS {
	t.Helper()
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(dial(t, addr)).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &sotwADS{t: t, stream: stream}
}

func (a *sotwADS) send(req *discoverypb.DiscoveryRequest) {
	a.t.Helper()
	if err := a.stream.Send(req); err != nil {
		a.t.Fatal(err)
	}
}

func (a *sotwADS) recv() *discoverypb.DiscoveryResponse {
	a.t.Helper()
	resp, err := a.stream.Recv()
	if err != nil {
		a.t.Fatalf("receiving a response: %v", err)
	}
	return resp
}

// deltaStream is a raw delta ADS stream that ACKs every response it reads.
type deltaStream struct {
	t      *testing.T
	stream discoverygrpc.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
}

func newDeltaStream(ctx context.Context, t *testing.T, addr string) *deltaStream {
	t.Helper()
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(dial(t, addr)).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &deltaStream{t: t, stream: stream}
}

func (d *deltaStream) send(req *discoverypb.DeltaDiscoveryRequest) {
	d.t.Helper()
	if err := d.stream.Send(req); err != nil {
		d.t.Fatal(err)
	}
}

func (d *deltaStream) subscribe(typeURL string, names ...string) {
	d.t.Helper()
	d.send(&discoverypb.DeltaDiscoveryRequest{Node: &corepb.Node{Id: "delta-client"}, TypeUrl: typeURL, ResourceNamesSubscribe: names})
}

// next reads one response and ACKs it.
func (d *deltaStream) next() *discoverypb.DeltaDiscoveryResponse {
	d.t.Helper()
	resp, err := d.stream.Recv()
	if err != nil {
		d.t.Fatalf("receiving a delta response: %v", err)
	}
	if err := d.stream.Send(&discoverypb.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
		d.t.Fatal(err)
	}
	return resp
}

// recv reads one response, ACKs it and returns its type, the names of its
// resources and the names it removes.
func (d *deltaStream) recv() (typeURL string, names, removed []string) {
	d.t.Helper()
	resp := d.next()
	for _, r := range resp.GetResources() {
		names = append(names, r.GetName())
	}
	slices.Sort(names)
	removed = slices.Sorted(slices.Values(resp.GetRemovedResources()))
	return resp.GetTypeUrl(), names, removed
}

type deltaResp struct {
	Type           string
	Names, Removed []string
}

func TestServer_DeltaPolicyChangeAndRemoval(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startServer(t)
	a, b := service("a", "10.0.0.1"), service("b", "10.0.0.2")
	snap := topology.NewSnapshot(1, time.Now(), []*topology.Service{a, b})
	s.Update(snap)
	testkit.Eventually(ctx, t, "first push", s.Ready)

	d := newDeltaStream(ctx, t, s.addr)
	d.subscribe(resourcev3.ClusterType, "a.default:8080", "b.default:8080")
	d.subscribe(resourcev3.EndpointType, "a.default:8080", "b.default:8080", "gone.default:8080")
	var got []deltaResp
	for range 2 {
		typ, names, removed := d.recv()
		got = append(got, deltaResp{typ, names, removed})
	}
	slices.SortFunc(got, func(x, y deltaResp) int { return strings.Compare(x.Type, y.Type) })
	want := []deltaResp{
		{resourcev3.ClusterType, []string{"a.default:8080", "b.default:8080"}, nil},
		{resourcev3.EndpointType, []string{"a.default:8080", "b.default:8080"}, nil},
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Fatalf("initial responses (-got +want):\n%s", diff)
	}

	// A policy change re-sends a's Cluster only; then removing b removes
	// its Cluster and its ClusterLoadAssignment.
	a2 := &topology.Service{Key: a.Key, Policy: topology.Policy{LB: topology.RoundRobin}, Endpoints: a.Endpoints}
	snap = snap.With(2, time.Now(), []*topology.Service{a2}, nil)
	s.Update(snap)
	typ, names, removed := d.recv()
	if diff := cmp.Diff(deltaResp{typ, names, removed}, deltaResp{resourcev3.ClusterType, []string{"a.default:8080"}, nil}); diff != "" {
		t.Errorf("response to a policy change (-got +want):\n%s", diff)
	}
	s.Update(snap.With(3, time.Now(), nil, []topology.ServiceKey{b.Key}))
	got = nil
	for range 2 {
		typ, names, removed := d.recv()
		got = append(got, deltaResp{typ, names, removed})
	}
	slices.SortFunc(got, func(x, y deltaResp) int { return strings.Compare(x.Type, y.Type) })
	want = []deltaResp{
		{resourcev3.ClusterType, nil, []string{"b.default:8080"}},
		{resourcev3.EndpointType, nil, []string{"b.default:8080"}},
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("responses to removing b (-got +want):\n%s", diff)
	}
	if got := testkit.MetricValue(t, s.reg, "fairway_xds_unknown_resource_requests_total", "type", "endpoint"); got != 1 {
		t.Errorf("fairway_xds_unknown_resource_requests_total{endpoint} = %v, want 1", got)
	}
	if got := testkit.MetricValue(t, s.reg, "fairway_xds_resources", "type", "listener"); got != 2 {
		t.Errorf("fairway_xds_resources{listener} = %v, want 2", got)
	}
}

// TestServer_NilRegistererRegistersNothing: WithRegisterer(nil) serves xDS
// and health as usual, with no /metrics.
func TestServer_NilRegistererRegistersNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := xdsserver.New(xdsserver.WithRegisterer(nil), xdsserver.WithDebounce(0))
	defer s.Close()
	s.Update(topology.NewSnapshot(1, time.Now(), []*topology.Service{service("a", "10.0.0.1")}))
	testkit.Eventually(ctx, t, "first push", s.Ready)
	for path, want := range map[string]int{"/readyz": http.StatusOK, "/metrics": http.StatusNotFound} {
		rec := httptest.NewRecorder()
		s.AdminHandler().ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, path, nil))
		if rec.Code != want {
			t.Errorf("%s = %d, want %d", path, rec.Code, want)
		}
	}
}
