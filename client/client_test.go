package client

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcresolver "google.golang.org/grpc/resolver"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/fairway-lb/fairway/client/xdsclient/xdstest"
	"github.com/fairway-lb/fairway/internal/testkit"
	"github.com/fairway-lb/fairway/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startBackend serves the gRPC health service on loopback.
func startBackend(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(lis) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return lis.Addr().String()
}

// serve publishes name → backend with strategy on srv.
func serve(srv *xdstest.Server, name, backend, strategy string) {
	_ = srv.Clusters.UpdateResource(name, xdstest.Cluster(name, strategy))
	_ = srv.Endpoints.UpdateResource(name, xdstest.CLA(name,
		xdstest.Endpoint{Addr: backend, Zone: "zone-a", Health: corepb.HealthStatus_HEALTHY}))
}

func check(t *testing.T, cc *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), xdstest.Timeout)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("RPC through %s: %v", cc.Target(), err)
	}
}

func dial(t *testing.T, target string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(target, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

func TestWithFairway_RPCReachesBackend(t *testing.T) {
	srv := xdstest.Start(t, "127.0.0.1:0")
	serve(srv, "echo.default:8080", startBackend(t), `[{"p2c":{}}]`)
	reg := prometheus.NewRegistry()
	cc := dial(t, "fairway:///echo.default:8080", WithFairway(WithXDSServers(srv.Addr), WithZone("zone-z"), WithRegisterer(reg)))
	check(t, cc)
	first := srv.WaitRequest(t, "with node", func(r *xdstest.Request) bool { return r.GetNode() != nil })
	if got := first.GetNode().GetLocality().GetZone(); got != "zone-z" {
		t.Errorf("node zone = %q, want zone-z", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
	}
	for _, want := range []string{"fairway_client_xds_connected", "fairway_client_xds_last_update_timestamp_seconds", "fairway_client_xds_updates_total", "fairway_client_picks_total"} {
		if !got[want] {
			t.Errorf("metric %s missing from the registerer given to WithRegisterer", want)
		}
	}
	cc.Close()
	if n := shared.len(); n != 0 {
		t.Errorf("%d shared xDS clients left after the channel closed, want 0", n)
	}
}

func TestWithFairway_BadTargetFailsRPCsClearly(t *testing.T) {
	cc := dial(t, "fairway:///echo:8080", WithFairway(WithXDSServers("127.0.0.1:1")))
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), xdstest.Timeout)
	defer cancel()
	_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err == nil || !strings.Contains(err.Error(), "NAME.NAMESPACE:PORT") {
		t.Errorf("RPC error = %v, want one naming the expected target form", err)
	}
}

func TestGlobalScheme_ReadsEnvironmentAtFirstResolve(t *testing.T) {
	srv := xdstest.Start(t, "127.0.0.1:0")
	serve(srv, "echo.default:8080", startBackend(t), "") // default composition
	t.Setenv(EnvXDSAddr, "127.0.0.1:1, "+srv.Addr)       // the first address fails over
	t.Setenv(EnvZone, "zone-env")
	t.Setenv(EnvNodeID, "node-env")
	cc := dial(t, "fairway:///echo.default.svc.cluster.local:8080")
	defer cc.Close()
	check(t, cc)
	first := srv.WaitRequest(t, "with node", func(r *xdstest.Request) bool { return r.GetNode() != nil })
	if got := first.GetNode().GetId(); got != "node-env" {
		t.Errorf("node id = %q, want node-env", got)
	}
	if got := first.GetNode().GetLocality().GetZone(); got != "zone-env" {
		t.Errorf("node zone = %q, want zone-env", got)
	}
}

func TestPool_ChannelsShareOneStreamAndCloseIt(t *testing.T) {
	srv := xdstest.Start(t, "127.0.0.1:0")
	backend := startBackend(t)
	serve(srv, "a.default:80", backend, "")
	serve(srv, "b.default:80", backend, "")
	opt := WithFairway(WithXDSServers(srv.Addr))
	ca := dial(t, "fairway:///a.default:80", opt)
	cb := dial(t, "fairway:///b.default:80", WithFairway(WithXDSServers(srv.Addr)))
	check(t, ca)
	check(t, cb)
	if n := srv.Streams(); n != 1 {
		t.Errorf("%d ADS streams for two channels, want 1", n)
	}
	if n := shared.len(); n != 1 {
		t.Errorf("%d shared clients, want 1", n)
	}
	ca.Close()
	srv.WaitRequest(t, "unsubscribing a", func(r *xdstest.Request) bool {
		return r.GetTypeUrl() == wire.EndpointType && strings.Join(r.GetResourceNames(), ",") == "b.default:80"
	})
	if n := shared.len(); n != 1 {
		t.Errorf("%d shared clients while b is open, want 1", n)
	}
	cb.Close()
	if n := shared.len(); n != 0 {
		t.Errorf("%d shared clients after both closed, want 0", n)
	}
}

func TestPool_NodeIDAndZoneSeparateStreams(t *testing.T) {
	srv := xdstest.Start(t, "127.0.0.1:0")
	backend := startBackend(t)
	serve(srv, "a.default:80", backend, "")
	type channel struct{ id, zone string }
	chans := []channel{{"n1", "zone-a"}, {"n1", "zone-a"}, {"n2", "zone-a"}, {"n1", "zone-b"}}
	var ccs []*grpc.ClientConn
	for _, c := range chans {
		cc := dial(t, "fairway:///a.default:80", WithFairway(WithXDSServers(srv.Addr), WithNodeID(c.id), WithZone(c.zone)))
		check(t, cc)
		ccs = append(ccs, cc)
	}
	if n := srv.Streams(); n != 3 {
		t.Errorf("%d ADS streams for channels %v, want 3 (one per node id and zone)", n, chans)
	}
	if n := shared.len(); n != 3 {
		t.Errorf("%d shared clients, want 3", n)
	}
	got := map[channel]bool{}
	for _, r := range srv.Requests(wire.ClusterType) {
		if n := r.GetNode(); n != nil {
			got[channel{n.GetId(), n.GetLocality().GetZone()}] = true
		}
	}
	if diff := cmp.Diff(got, map[channel]bool{{"n1", "zone-a"}: true, {"n2", "zone-a"}: true, {"n1", "zone-b"}: true}); diff != "" {
		t.Errorf("nodes seen by the control plane (-got +want):\n%s", diff)
	}
	for _, cc := range ccs {
		cc.Close()
	}
	if n := shared.len(); n != 0 {
		t.Errorf("%d shared clients after all closed, want 0", n)
	}
}

func TestValidator_InvalidStrategyIsNACKedAndPreviousKept(t *testing.T) {
	srv := xdstest.Start(t, "127.0.0.1:0")
	const name = "echo.default:8080"
	serve(srv, name, startBackend(t), `[{"p2c":{}}]`)
	cc := dial(t, "fairway:///"+name, WithFairway(WithXDSServers(srv.Addr)))
	defer cc.Close()
	check(t, cc)
	_ = srv.Clusters.UpdateResource(name, xdstest.Cluster(name, `[{"no_such_strategy":{}}]`))
	nack := srv.WaitRequest(t, "NACK", func(r *xdstest.Request) bool { return r.GetErrorDetail() != nil })
	if msg := nack.GetErrorDetail().GetMessage(); !strings.Contains(msg, name) || !strings.Contains(msg, "no_such_strategy") {
		t.Errorf("error_detail %q does not name the Cluster and the strategy", msg)
	}
	if strings.Contains(nack.GetErrorDetail().GetMessage(), "strategy: fairway/") {
		t.Errorf("error_detail %q stacks a context over the strategy error's own prefix", nack.GetErrorDetail().GetMessage())
	}
	check(t, cc)
}

func TestBuild_Errors(t *testing.T) {
	t.Setenv(EnvXDSAddr, "")
	for _, tc := range []struct {
		name    string
		b       *builder
		target  string
		wantErr string
	}{
		{name: "no address", b: &builder{}, target: "fairway:///echo.default:80", wantErr: EnvXDSAddr},
		{name: "bad target", b: &builder{cfg: config{servers: []string{"127.0.0.1:1"}}}, target: "fairway:///echo:80", wantErr: "NAME.NAMESPACE:PORT"},
		{name: "bad override", b: &builder{cfg: config{servers: []string{"127.0.0.1:1"}, strategy: []byte(`[{"nope":{}}]`)}}, target: "fairway:///echo.default:80", wantErr: "strategy override"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target, err := parseTarget(tc.target)
			if err != nil {
				t.Fatal(err)
			}
			_, err = tc.b.Build(target, nil, grpcresolver.BuildOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Build error = %v, want one containing %q", err, tc.wantErr)
			}
			if n := strings.Count(err.Error(), "fairway/"); n != 1 {
				t.Errorf("Build error %q carries %d package prefixes, want 1", err, n)
			}
		})
	}
	if n := shared.len(); n != 0 {
		t.Errorf("%d shared clients after failed builds, want 0", n)
	}
}

func TestZoneFromEnv_Precedence(t *testing.T) {
	dir := t.TempDir()
	labels := filepath.Join(dir, "labels")
	if err := os.WriteFile(labels, []byte("app=\"echo\"\ntopology.kubernetes.io/zone=\"eu-west-1b\"\npod-template-hash=\"abc\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := podInfoLabels
	t.Cleanup(func() { podInfoLabels = old })
	for _, tc := range []struct {
		name, env, file, want string
	}{
		{name: "env wins", env: "zone-env", file: labels, want: "zone-env"},
		{name: "downward API file", file: labels, want: "eu-west-1b"},
		{name: "nothing", file: filepath.Join(dir, "missing"), want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvZone, tc.env)
			podInfoLabels = tc.file
			if got := zoneFromEnv(); got != tc.want {
				t.Errorf("zone = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNodeFromEnv(t *testing.T) {
	host, _ := os.Hostname()
	for _, tc := range []struct {
		name string
		id   string // WithNodeID
		env  map[string]string
		want *corepb.Node
	}{
		{name: "WithNodeID wins", id: "opt", env: map[string]string{EnvNodeID: "n1", EnvPodName: "p", EnvPodNamespace: "ns"},
			want: &corepb.Node{Id: "opt", Cluster: "fairway-client"}},
		{name: "explicit id", env: map[string]string{EnvNodeID: "n1", EnvNodeCluster: "payments", EnvPodName: "p", EnvPodNamespace: "ns"},
			want: &corepb.Node{Id: "n1", Cluster: "payments"}},
		{name: "downward API", env: map[string]string{EnvPodName: "echo-7d9", EnvPodNamespace: "default", EnvNodeName: "node-3"},
			want: &corepb.Node{Id: "default/echo-7d9", Cluster: "fairway-client",
				Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{"node_name": structpb.NewStringValue("node-3")}}}},
		{name: "hostname-pid", want: &corepb.Node{Id: host + "-" + itoa(os.Getpid()), Cluster: "fairway-client"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{EnvNodeID, EnvNodeCluster, EnvPodName, EnvPodNamespace, EnvNodeName} {
				t.Setenv(k, tc.env[k])
			}
			tc.want.UserAgentName = "fairway-go"
			tc.want.Locality = &corepb.Locality{Zone: "zone-a"}
			tc.want.ClientFeatures = []string{"io.fairway.caller_zones"}
			if diff := cmp.Diff(nodeFromEnv(tc.id, "zone-a"), tc.want, protocmp.Transform()); diff != "" {
				t.Errorf("node (-got +want):\n%s", diff)
			}
		})
	}
}

func TestSplitList(t *testing.T) {
	if diff := cmp.Diff(splitList(" a:1, ,b:2,"), []string{"a:1", "b:2"}); diff != "" {
		t.Errorf("splitList (-got +want):\n%s", diff)
	}
}

// gatheredNames returns the names of g's metric families with prefix.
func gatheredNames(t *testing.T, g prometheus.Gatherer, prefix string) map[string]bool {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), prefix) {
			got[mf.GetName()] = true
		}
	}
	return got
}

// Every client metric goes to the WithRegisterer registerer, and nowhere
// else; per-endpoint series only with WithEndpointMetrics.
func TestWithRegisterer_EveryMetricThereOnly(t *testing.T) {
	srv := xdstest.Start(t, "127.0.0.1:0")
	backend := startBackend(t)
	serve(srv, "echo.default:8080", backend, `[{"p2c":{}}]`)
	perTarget := []string{
		"fairway_client_picks_total", "fairway_client_inflight", "fairway_client_ejections_total",
		"fairway_client_zone_spill_fraction", "fairway_client_load_probes_total", "fairway_client_xds_connected",
		"fairway_client_xds_last_update_timestamp_seconds", "fairway_client_xds_updates_total",
	}
	perEndpoint := []string{"fairway_client_endpoint_picks_total", "fairway_client_endpoint_inflight"}
	for _, tc := range []struct {
		name string
		opts []Option
		want []string
	}{
		{"Default", nil, perTarget},
		{"WithEndpointMetrics", []Option{WithEndpointMetrics()}, append(perEndpoint, perTarget...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			opts := append([]Option{WithXDSServers(srv.Addr), WithRegisterer(reg)}, tc.opts...)
			cc := dial(t, "fairway:///echo.default:8080", WithFairway(opts...))
			defer cc.Close()
			check(t, cc)
			want := map[string]bool{}
			for _, n := range tc.want {
				want[n] = true
			}
			if diff := cmp.Diff(gatheredNames(t, reg, "fairway_"), want); diff != "" {
				t.Errorf("metrics in the registerer (-got +want):\n%s", diff)
			}
			if got := gatheredNames(t, prometheus.DefaultGatherer, "fairway_"); len(got) != 0 {
				t.Errorf("metrics in the default registry: %v, want none", got)
			}
			if tc.opts != nil {
				if got := testkit.MetricValue(t, reg, "fairway_client_endpoint_picks_total", "target", "echo.default:8080", "endpoint", backend); got < 1 {
					t.Errorf("fairway_client_endpoint_picks_total for %s = %v, want ≥ 1", backend, got)
				}
			}
		})
	}
}
