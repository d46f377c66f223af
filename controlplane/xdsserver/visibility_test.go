package xdsserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/fairway-lb/fairway/controlplane/auth"
	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/controlplane/xdsserver"
	"github.com/fairway-lb/fairway/internal/testkit"
	"github.com/fairway-lb/fairway/internal/testkit/xdstest"
)

// namespaceHeader is the metadata key the tests' interceptor turns into
// the stream's identity: a stand-in for the authentication in front of the
// server (package auth's seam).
const namespaceHeader = "x-test-namespace"

// identityStream is a grpc.ServerStream whose context carries an identity.
type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s identityStream) Context() context.Context { return s.ctx }

// identityInterceptor gives a stream whose metadata names a namespace an
// auth.Identity in that namespace.
func identityInterceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	md, _ := metadata.FromIncomingContext(ss.Context())
	if ns := md.Get(namespaceHeader); len(ns) == 1 {
		id := auth.Identity{Namespace: ns[0], ServiceAccount: "client", Method: "test"}
		ss = identityStream{ServerStream: ss, ctx: auth.NewContext(ss.Context(), id)}
	}
	return handler(srv, ss)
}

// startScopedServer serves a new xdsserver behind identityInterceptor on
// 127.0.0.1 until the test ends, logging into logs (nil: the test's output).
func startScopedServer(t *testing.T, logs io.Writer, opts ...xdsserver.Option) *testServer {
	t.Helper()
	if logs == nil {
		logs = t.Output()
	}
	reg := prometheus.NewRegistry()
	s := xdsserver.New(append([]xdsserver.Option{
		xdsserver.WithRegisterer(reg), xdsserver.WithDebounce(0),
		xdsserver.WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
	}, opts...)...)
	gs := grpc.NewServer(append(s.GRPCServerOptions(), grpc.StreamInterceptor(identityInterceptor))...)
	s.RegisterGRPC(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	t.Cleanup(func() {
		gs.Stop()
		s.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve() = %v", err)
		}
	})
	return &testServer{Server: s, addr: lis.Addr().String(), reg: reg}
}

// startShopWorld is startScopedServer once it has pushed visibilityWorld
// with ledger exported to shop.
func startShopWorld(ctx context.Context, t *testing.T, logs io.Writer, opts ...xdsserver.Option) *testServer {
	t.Helper()
	s := startScopedServer(t, logs, opts...)
	s.Update(topology.NewSnapshot(1, time.Time{}, visibilityWorld(exportTo("shop"))))
	testkit.Eventually(ctx, t, "the first push", s.Ready)
	return s
}

// openSotW opens a SotW ADS stream on cc with ctx and sends its first
// request, of type typ from node id node.
func openSotW(ctx context.Context, t *testing.T, cc grpc.ClientConnInterface, node, typ string) discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: node}, TypeUrl: typ}); err != nil {
		t.Fatal(err)
	}
	return st
}

// asNamespace returns ctx whose streams carry an identity in ns ("": none).
func asNamespace(ctx context.Context, ns string) context.Context {
	if ns == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, namespaceHeader, ns)
}

func nsService(ns, name string, export topology.Export) *topology.Service {
	return &topology.Service{
		Key: topology.ServiceKey{Namespace: ns, Name: name, Port: 8080}, Policy: topology.DefaultPolicy(), Export: export,
		Endpoints: []topology.Endpoint{{Address: "10.0.0.1", Port: 9000, Ready: true, Serving: true, Weight: 1, Hostname: name + "-pod"}},
	}
}

func exportTo(ns ...string) topology.Export { return topology.Export{Limited: true, Namespaces: ns} }

// The world of the visibility tests: shop sees its own Services, finance's
// ledger (exported to shop) and infra's public one (exported everywhere),
// never finance's pay nor finance's vault (exported to billing only).
func visibilityWorld(ledgerExport topology.Export) []*topology.Service {
	return []*topology.Service{
		nsService("shop", "web", topology.ExportOwn()),
		nsService("shop", "cart", topology.ExportOwn()),
		nsService("finance", "ledger", ledgerExport),
		nsService("finance", "pay", topology.ExportOwn()),
		nsService("finance", "vault", exportTo("billing")),
		nsService("infra", "public", topology.ExportAll()),
	}
}

var (
	shopSees   = []string{"web.shop:8080", "cart.shop:8080", "ledger.finance:8080", "public.infra:8080"}
	shopHidden = []string{"pay.finance:8080", "vault.finance:8080"}
)

// sotwRecv reads one response of st.
func sotwRecv(t *testing.T, st discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient) *discoverypb.DiscoveryResponse {
	t.Helper()
	resp, err := st.Recv()
	if err != nil {
		t.Fatalf("receiving: %v", err)
	}
	return resp
}

// leakCheck fails when b, anything a client received or the server
// logged, names a Service hidden from shop.
func leakCheck(t *testing.T, what string, b []byte) {
	t.Helper()
	for _, hidden := range []string{"pay.finance", "vault.finance", "pay-pod", "vault-pod"} {
		if strings.Contains(string(b), hidden) {
			t.Errorf("%s names %s, hidden from shop", what, hidden)
		}
	}
}

// A shop client sees, by wildcard and by name, over SotW and delta and for
// every type, what is exported to shop and nothing else; the hidden names
// it asks for count as unknown, as if they did not exist.
func TestServer_NamespaceSeesOnlyWhatIsExportedToIt(t *testing.T) {
	for _, p := range xdstest.Protocols {
		t.Run(string(p), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			s := startShopWorld(ctx, t, nil)
			cc := dial(t, s.addr)
			all := append(slices.Clone(shopSees), shopHidden...)
			for _, typ := range xdstest.Types {
				for _, names := range [][]string{nil, xdstest.ResourceNames(typ, all)} {
					resp := xdstest.FirstResponse(asNamespace(ctx, "shop"), t, cc, p, "shop-client", typ, names)
					if diff := cmp.Diff(resp.Names, xdstest.ResourceNames(typ, shopSees)); diff != "" {
						t.Errorf("shop, %s, by name %v: names (-got +want):\n%s", typeLabel(typ), names != nil, diff)
					}
					if len(resp.Removed) > 0 {
						t.Errorf("shop, %s: removed %v in the first response", typeLabel(typ), resp.Removed)
					}
					leakCheck(t, "a response to shop", resp.Raw)
				}
			}
			if p != xdstest.SotW {
				return
			}
			if got := testkit.MetricValue(t, s.reg, "fairway_xds_unknown_resource_requests_total", "type", "cluster"); got != 2 {
				t.Errorf("unknown Cluster names counted %v, want 2 (the hidden ones, as if they did not exist)", got)
			}
		})
	}
}

// typeLabel is the short name of a type URL, for messages.
func typeLabel(typ string) string { return typ[strings.LastIndex(typ, ".")+1:] }

func TestServer_NoIdentitySeesEverything(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startShopWorld(ctx, t, nil)
	resp := xdstest.FirstResponse(ctx, t, dial(t, s.addr), xdstest.SotW, "anyone", resourcev3.ClusterType, nil)
	want := xdstest.ResourceNames(resourcev3.ClusterType, append(slices.Clone(shopSees), shopHidden...))
	if diff := cmp.Diff(resp.Names, want); diff != "" {
		t.Errorf("without identity: Clusters (-got +want):\n%s", diff)
	}
	if n := s.Clients().Streams; len(n) != 1 || n[0].Namespace != "" {
		t.Errorf("/debug/clients: %+v, want one stream without namespace", n)
	}
}

// A client cannot pick a view with its node: the stream's identity decides.
func TestServer_NodeCannotChooseAView(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startShopWorld(ctx, t, nil)
	cc := dial(t, s.addr)
	for _, id := range []string{"fairway.io/view:*", "fairway.io/view:finance"} {
		resp := xdstest.FirstResponse(asNamespace(ctx, "shop"), t, cc, xdstest.SotW, id, resourcev3.ClusterType, nil)
		if diff := cmp.Diff(resp.Names, xdstest.ResourceNames(resourcev3.ClusterType, shopSees)); diff != "" {
			t.Errorf("node %q: Clusters (-got +want):\n%s", id, diff)
		}
	}
}

// A change of export moves a Service in and out of a namespace's view: a
// SotW wildcard stream gets the Clusters without it, a delta one its
// removal, then both get it back.
func TestServer_ExportChangeMovesAServiceInAndOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startShopWorld(ctx, t, nil)
	ads := discoverygrpc.NewAggregatedDiscoveryServiceClient(dial(t, s.addr))
	sotw, err := ads.StreamAggregatedResources(asNamespace(ctx, "shop"))
	if err != nil {
		t.Fatal(err)
	}
	delta, err := ads.DeltaAggregatedResources(asNamespace(ctx, "shop"))
	if err != nil {
		t.Fatal(err)
	}
	sotwACK := func(resp *discoverypb.DiscoveryResponse) {
		t.Helper()
		req := &discoverypb.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}
		if resp == nil {
			req.Node = &corepb.Node{Id: "shop-sotw"}
		}
		if err := sotw.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	deltaRecv := func() *discoverypb.DeltaDiscoveryResponse {
		t.Helper()
		resp, err := delta.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if err := delta.Send(&discoverypb.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	sotwACK(nil)
	if err := delta.Send(&discoverypb.DeltaDiscoveryRequest{Node: &corepb.Node{Id: "shop-delta"}, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	resp := sotwRecv(t, sotw)
	sotwACK(resp)
	deltaRecv()
	withoutLedger := slices.DeleteFunc(slices.Clone(shopSees), func(n string) bool { return n == "ledger.finance:8080" })

	s.Update(topology.NewSnapshot(2, time.Time{}, visibilityWorld(topology.ExportOwn())))
	resp = sotwRecv(t, sotw)
	if diff := cmp.Diff(xdstest.Names(t, resp.GetResources()), xdstest.ResourceNames(resourcev3.ClusterType, withoutLedger)); diff != "" {
		t.Errorf("SotW after ledger stopped being exported to shop: Clusters (-got +want):\n%s", diff)
	}
	sotwACK(resp)
	if d := deltaRecv(); !slices.Equal(d.GetRemovedResources(), []string{"ledger.finance:8080"}) || len(d.GetResources()) > 0 {
		t.Errorf("delta after ledger stopped being exported to shop: removed %v, resources %v; want only ledger removed", d.GetRemovedResources(), xdstest.Names(t, deltaAnys(d)))
	}

	s.Update(topology.NewSnapshot(3, time.Time{}, visibilityWorld(exportTo("billing", "shop"))))
	resp = sotwRecv(t, sotw)
	if diff := cmp.Diff(xdstest.Names(t, resp.GetResources()), xdstest.ResourceNames(resourcev3.ClusterType, shopSees)); diff != "" {
		t.Errorf("SotW after ledger is exported to shop again: Clusters (-got +want):\n%s", diff)
	}
	if d := deltaRecv(); !slices.Equal(xdstest.Names(t, deltaAnys(d)), []string{"ledger.finance:8080"}) {
		t.Errorf("delta after ledger is exported to shop again: resources %v, want ledger", xdstest.Names(t, deltaAnys(d)))
	}
}

// What a shop client can make the server say (responses, NACK handling,
// logs, /debug) never names a Service hidden from it, unless it asked for
// it by name.
func TestServer_NACKAndLogsDoNotLeakHiddenNames(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var logs lockedBuffer
	s := startShopWorld(ctx, t, &logs)
	cc := dial(t, s.addr)
	var streams []discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	for _, typ := range xdstest.Types {
		st := openSotW(asNamespace(ctx, "shop"), t, cc, "shop-client", typ)
		resp := sotwRecv(t, st)
		b, _ := proto.Marshal(resp)
		leakCheck(t, "a response", b)
		if err := st.Send(&discoverypb.DiscoveryRequest{TypeUrl: typ, ResponseNonce: resp.GetNonce(),
			ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "rejected"}}); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	testkit.Eventually(ctx, t, "the last NACK counted", func() bool { return testkit.MetricValue(t, s.reg, "fairway_xds_nacks_total", "type", "route") == 1 })
	// The streams keep serving: a change of every resource reaches each.
	changed := visibilityWorld(exportTo("shop"))
	for _, svc := range changed {
		svc.Policy.LB = topology.RingHash
		svc.Endpoints[0].Address = "10.0.0.2"
	}
	s.Update(topology.NewSnapshot(2, time.Time{}, changed))
	for i, st := range streams {
		b, _ := proto.Marshal(sotwRecv(t, st))
		leakCheck(t, fmt.Sprintf("response %d after the NACK", i), b)
	}
	for _, path := range []string{"/debug/clients", "/debug/config_dump?namespace=shop", "/debug/config_dump?namespace=shop&name=pay.finance:8080"} {
		rec := httptest.NewRecorder()
		s.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		leakCheck(t, path, rec.Body.Bytes())
	}
	testkit.Eventually(ctx, t, "a NACK warn line per type", func() bool { return logs.count("NACK") >= 4 })
	if n := logs.count("NACK"); n != 4 {
		t.Errorf("%d NACK log lines, want 4 (one per type)", n)
	}
	for _, hidden := range []string{"pay.finance", "vault.finance", "pay-pod", "vault-pod"} {
		if n := logs.count(hidden); n > 0 {
			t.Errorf("the server's log names %s, hidden from shop, in %d lines", hidden, n)
		}
	}
}

// /debug/clients shows a stream's identity; /debug/config_dump?namespace=
// shows what that namespace sees.
func TestServer_DebugShowsIdentityAndNamespaceView(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startShopWorld(ctx, t, nil)
	sotwRecv(t, openSotW(asNamespace(ctx, "shop"), t, dial(t, s.addr), "shop-client", resourcev3.ClusterType))
	streams := s.Clients().Streams
	if len(streams) != 1 || streams[0].Namespace != "shop" || streams[0].ServiceAccount != "client" || streams[0].Auth != "test" {
		t.Errorf("Clients: %+v, want one stream of shop/client (test)", streams)
	}
	rec := httptest.NewRecorder()
	s.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/debug/config_dump?namespace=shop&type=listener", nil))
	var dump xdsserver.ConfigDump
	if err := json.Unmarshal(rec.Body.Bytes(), &dump); err != nil {
		t.Fatalf("config_dump: %v\n%s", err, rec.Body)
	}
	var got []string
	for _, td := range dump.Types {
		for _, r := range td.Resources {
			got = append(got, r.Name)
		}
	}
	if diff := cmp.Diff(got, xdstest.ResourceNames(resourcev3.ListenerType, shopSees)); diff != "" {
		t.Errorf("config_dump?namespace=shop&type=listener (-got +want):\n%s", diff)
	}
	all, err := s.ConfigDump("cluster", "")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(all.Types[0].Resources); n != 6 {
		t.Errorf("config_dump without namespace: %d Clusters, want all 6", n)
	}
	shop, err := s.ConfigDumpFor("finance", "cluster", "")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range shop.Types[0].Resources {
		names = append(names, r.Name)
	}
	if want := []string{"ledger.finance:8080", "pay.finance:8080", "public.infra:8080", "vault.finance:8080"}; !slices.Equal(names, want) {
		t.Errorf("ConfigDumpFor(finance): %v, want %v", names, want)
	}
}

// WithRequireIdentity refuses a stream without identity and serves one
// with.
func TestServer_RequireIdentityRefusesStreamsWithout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startShopWorld(ctx, t, nil, xdsserver.WithRequireIdentity(true))
	ads := discoverygrpc.NewAggregatedDiscoveryServiceClient(dial(t, s.addr))
	for _, ns := range []string{"", "shop"} {
		st, err := ads.StreamAggregatedResources(asNamespace(ctx, ns))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: "c"}, TypeUrl: resourcev3.ClusterType}); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		switch {
		case ns == "" && status.Code(err) != codes.Unauthenticated:
			t.Errorf("without identity: Recv = %v, %v; want Unauthenticated", resp, err)
		case ns != "" && err != nil:
			t.Errorf("with identity: Recv: %v", err)
		}
	}
	if got := testkit.MetricValue(t, s.reg, "fairway_xds_refused_streams_total", "reason", "no_identity"); got != 1 {
		t.Errorf("refused no_identity = %v, want 1", got)
	}
}

// A stream counts toward caller_zones only for the Clusters its namespace
// sees: shop cannot steer the zone spill of finance's clients.
func TestServer_CallerZonesCountOnlyVisibleSubscriptions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s := startScopedServer(t, nil, xdsserver.WithCallerZonesInterval(0))
	pay := inZones(nsService("finance", "pay", topology.ExportOwn()), "zone-a", "zone-b", "zone-c")
	s.Update(topology.NewSnapshot(1, time.Now(), []*topology.Service{pay}))
	testkit.Eventually(ctx, t, "the first push", s.Ready)
	cc := dial(t, s.addr)
	const name = "pay.finance:8080"
	f1 := newSotWStream(asNamespace(ctx, "finance"), t, cc, zoneNode("f1", "zone-a"), name)
	f1.waitCallerZones(name, map[string]float64{"zone-a": 1})
	shop := newSotWStream(asNamespace(ctx, "shop"), t, cc, zoneNode("shop1", "zone-b"), name)
	if got := shop.recv(); len(got) != 0 {
		t.Errorf("shop got Clusters %v, want none", sortedKeys(got))
	}
	newSotWStream(asNamespace(ctx, "finance"), t, cc, zoneNode("f2", "zone-c"), name)
	f1.waitCallerZones(name, map[string]float64{"zone-a": 0.5, "zone-c": 0.5})
}
