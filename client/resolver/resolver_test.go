package resolver

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/xdsclient"
	"github.com/fairway-lb/fairway/client/xdsclient/xdstest"
	"github.com/fairway-lb/fairway/internal/testkit"
	"github.com/fairway-lb/fairway/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// captureBalancer stands in for client/balancer (not imported here): it is
// registered under the same name and records what the resolver delivers.
type captureBuilder struct{}

type captureConfig struct {
	serviceconfig.LoadBalancingConfig
	Strategy json.RawMessage `json:"strategy"`
}

type sink struct {
	states chan balancer.ClientConnState
	errs   chan error
}

var sinks sync.Map // target endpoint → *sink

func newSink(target string) *sink {
	s := &sink{states: make(chan balancer.ClientConnState, 100), errs: make(chan error, 100)}
	sinks.Store(target, s)
	return s
}

func (captureBuilder) Name() string { return BalancerName }

func (captureBuilder) ParseConfig(raw json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	c := &captureConfig{}
	if err := json.Unmarshal(raw, c); err != nil {
		return nil, err
	}
	return c, nil
}

func (captureBuilder) Build(_ balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	name, _ := ResourceName(opts.Target)
	s, _ := sinks.Load(name)
	return &captureBalancer{sink: s.(*sink)}
}

type captureBalancer struct{ sink *sink }

func (b *captureBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	b.sink.states <- s
	return nil
}
func (b *captureBalancer) ResolverError(err error)                                    { b.sink.errs <- err }
func (b *captureBalancer) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {}
func (b *captureBalancer) Close()                                                     {}
func (b *captureBalancer) ExitIdle()                                                  {}

func init() { balancer.Register(captureBuilder{}) }

// none fails the test if ch delivers something within 100 ms.
func none[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("unexpected %s: %v", what, v)
	case <-time.After(100 * time.Millisecond):
	}
}

// env is an ADS server, an xdsclient of it and a resolver builder.
type env struct {
	srv      *xdstest.Server
	xc       *xdsclient.Client
	clock    *clocktesting.FakePassiveClock
	released atomic.Int32
	builder  resolver.Builder
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newEnv(t *testing.T, opts ...Option) *env {
	t.Helper()
	e := &env{srv: xdstest.Start(t, "127.0.0.1:0"), clock: clocktesting.NewFakePassiveClock(t0)}
	xc, err := xdsclient.New([]string{e.srv.Addr}, &corepb.Node{Id: "test"},
		xdsclient.WithBackoff(func(int) time.Duration { return 10 * time.Millisecond }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(xc.Close)
	e.xc = xc
	src := func() (XDSClient, func(), error) { return xc, func() { e.released.Add(1) }, nil }
	e.builder = NewBuilder(src, append([]Option{WithClock(e.clock), WithZone("zone-a")}, opts...)...)
	return e
}

// dial opens a channel to target and makes it leave idle.
func (e *env) dial(t *testing.T, target string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(target, grpc.WithResolvers(e.builder), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	cc.Connect()
	return cc
}

type gotEndpoint struct {
	Addr string
	Info endpointattr.Info
}

func endpoints(t *testing.T, s balancer.ClientConnState) []gotEndpoint {
	t.Helper()
	var out []gotEndpoint
	for _, ep := range s.ResolverState.Endpoints {
		info, ok := endpointattr.FromEndpoint(ep)
		if !ok {
			t.Errorf("endpoint %v carries no endpointattr.Info", ep)
		}
		if len(ep.Addresses) != 1 {
			t.Errorf("endpoint has %d addresses, want 1", len(ep.Addresses))
			continue
		}
		out = append(out, gotEndpoint{Addr: ep.Addresses[0].Addr, Info: info})
	}
	return out
}

func strategyOf(s balancer.ClientConnState) string {
	c, _ := s.BalancerConfig.(*captureConfig)
	if c == nil {
		return "<no config>"
	}
	return string(c.Strategy)
}

func TestResolver_PushesEndpointsWithAttributes(t *testing.T) {
	e := newEnv(t)
	const name = "attrs.default:8080"
	sink := newSink(name)
	_ = e.srv.Clusters.UpdateResource(name, xdstest.Cluster(name, `[{"zone_affinity":{}},{"p2c":{}}]`))
	_ = e.srv.Endpoints.UpdateResource(name, xdstest.CLA(name,
		xdstest.Endpoint{Addr: "10.0.0.1:80", Zone: "zone-a", Hostname: "attrs-1", Weight: 3, Health: corepb.HealthStatus_HEALTHY, Labels: map[string]string{"shard": "1"}},
		xdstest.Endpoint{Addr: "10.0.0.2:80", Zone: "zone-a", Health: corepb.HealthStatus_UNKNOWN},
		xdstest.Endpoint{Addr: "10.0.1.1:80", Zone: "zone-b", Health: corepb.HealthStatus_DRAINING},
		xdstest.Endpoint{Addr: "10.0.1.2:80", Zone: "zone-b", Health: corepb.HealthStatus_UNHEALTHY},
	))
	cc := e.dial(t, "fairway:///attrs.default.svc.cluster.local:8080")
	defer cc.Close()

	s := testkit.Recv(t, sink.states, "state")
	want := []gotEndpoint{
		{"10.0.0.1:80", endpointattr.Info{Zone: "zone-a", Hostname: "attrs-1", Weight: 3, Labels: map[string]string{"shard": "1"}, Health: endpointattr.Healthy, FirstSeen: t0}},
		{"10.0.0.2:80", endpointattr.Info{Zone: "zone-a", Weight: 1, Health: endpointattr.Healthy, FirstSeen: t0}},
		{"10.0.1.1:80", endpointattr.Info{Zone: "zone-b", Weight: 1, Health: endpointattr.Draining, FirstSeen: t0}},
		{"10.0.1.2:80", endpointattr.Info{Zone: "zone-b", Weight: 1, Health: endpointattr.Unhealthy, FirstSeen: t0}},
	}
	if diff := cmp.Diff(endpoints(t, s), want); diff != "" {
		t.Errorf("endpoints (-got +want):\n%s", diff)
	}
	if got := strategyOf(s); got != `[{"zone_affinity":{}},{"p2c":{}}]` {
		t.Errorf("strategy = %s, want the Cluster's chain", got)
	}
	if got := endpointattr.LocalZone(s.ResolverState.Attributes); got != "zone-a" {
		t.Errorf("local zone = %q, want zone-a", got)
	}
	cc.Close()
	if got := e.released.Load(); got != 1 {
		t.Errorf("xDS client released %d times after Close, want 1", got)
	}
}

func TestResolver_WaitsForClusterAndEndpoints(t *testing.T) {
	e := newEnv(t)
	const name = "wait.default:8080"
	sink := newSink(name)
	_ = e.srv.Endpoints.UpdateResource(name, xdstest.CLA(name, xdstest.Endpoint{Addr: "10.0.0.1:80"}))
	cc := e.dial(t, "fairway:///"+name)
	defer cc.Close()
	e.srv.WaitRequest(t, "for the assignment", func(r *xdstest.Request) bool {
		return r.GetTypeUrl() == wire.EndpointType && r.GetVersionInfo() != ""
	})
	none(t, sink.states, "state before the Cluster")
	_ = e.srv.Clusters.UpdateResource(name, xdstest.Cluster(name, ""))
	s := testkit.Recv(t, sink.states, "state")
	if got := strategyOf(s); got != "" {
		t.Errorf("strategy = %s, want none (the balancer's default)", got)
	}
}

func TestResolver_FirstSeenIsStampedOnFirstSight(t *testing.T) {
	e := newEnv(t)
	const name = "seen.default:8080"
	sink := newSink(name)
	a, b := xdstest.Endpoint{Addr: "10.0.0.1:80"}, xdstest.Endpoint{Addr: "10.0.0.2:80"}
	_ = e.srv.Clusters.UpdateResource(name, xdstest.Cluster(name, ""))
	_ = e.srv.Endpoints.UpdateResource(name, xdstest.CLA(name, a))
	cc := e.dial(t, "fairway:///"+name)
	defer cc.Close()
	testkit.Recv(t, sink.states, "first state")

	firstSeen := func(s balancer.ClientConnState) map[string]time.Time {
		m := map[string]time.Time{}
		for _, ep := range endpoints(t, s) {
			m[ep.Addr] = ep.Info.FirstSeen
		}
		return m
	}
	t1, t2 := t0.Add(time.Minute), t0.Add(2*time.Minute)
	e.clock.SetTime(t1)
	_ = e.srv.Endpoints.UpdateResource(name, xdstest.CLA(name, a, b))
	if diff := cmp.Diff(firstSeen(testkit.Recv(t, sink.states, "b added")), map[string]time.Time{"10.0.0.1:80": t0, "10.0.0.2:80": t1}); diff != "" {
		t.Errorf("first seen (-got +want):\n%s", diff)
	}
	_ = e.srv.Endpoints.UpdateResource(name, xdstest.CLA(name, b))
	testkit.Recv(t, sink.states, "a removed")
	e.clock.SetTime(t2)
	_ = e.srv.Endpoints.UpdateResource(name, xdstest.CLA(name, a, b))
	if diff := cmp.Diff(firstSeen(testkit.Recv(t, sink.states, "a back")), map[string]time.Time{"10.0.0.1:80": t2, "10.0.0.2:80": t1}); diff != "" {
		t.Errorf("first seen after a returned (-got +want):\n%s", diff)
	}
}

func TestResolver_StrategyOverrideAndClusterUpdates(t *testing.T) {
	const name = "override.default:8080"
	for _, tc := range []struct {
		name     string
		override string
		cluster  []string // successive Cluster strategies
		want     []string // successive strategies delivered
	}{
		{name: "cluster chain followed", cluster: []string{`[{"p2c":{}}]`, `[{"round_robin":{}}]`}, want: []string{`[{"p2c":{}}]`, `[{"round_robin":{}}]`}},
		{name: "override wins", override: `[{"weighted":{}}]`, cluster: []string{`[{"p2c":{}}]`, `[{"round_robin":{}}]`}, want: []string{`[{"weighted":{}}]`, `[{"weighted":{}}]`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, WithStrategy(json.RawMessage(tc.override)))
			sink := newSink(name)
			_ = e.srv.Endpoints.UpdateResource(name, xdstest.CLA(name, xdstest.Endpoint{Addr: "10.0.0.1:80"}))
			cc := e.dial(t, "fairway:///"+name)
			defer cc.Close()
			var got []string
			for _, chain := range tc.cluster {
				_ = e.srv.Clusters.UpdateResource(name, xdstest.Cluster(name, chain))
				got = append(got, strategyOf(testkit.Recv(t, sink.states, "state")))
			}
			if diff := cmp.Diff(got, tc.want); diff != "" {
				t.Errorf("strategies (-got +want):\n%s", diff)
			}
		})
	}
}

func TestResolver_KeepsStateWhileControlPlaneIsAway(t *testing.T) {
	e := newEnv(t)
	const name = "away.default:8080"
	sink := newSink(name)
	_ = e.srv.Clusters.UpdateResource(name, xdstest.Cluster(name, ""))
	_ = e.srv.Endpoints.UpdateResource(name, xdstest.CLA(name, xdstest.Endpoint{Addr: "10.0.0.1:80"}))
	cc := e.dial(t, "fairway:///"+name)
	defer cc.Close()
	testkit.Recv(t, sink.states, "state")
	e.srv.Stop()
	none(t, sink.states, "state while the control plane is away")
	none(t, sink.errs, "resolver error while the control plane is away")
}

func TestResolver_ReportsErrorBeforeFirstState(t *testing.T) {
	dead := testkit.FreeAddr(t) // nothing listens there
	xc, err := xdsclient.New([]string{dead}, &corepb.Node{Id: "test"},
		xdsclient.WithBackoff(func(int) time.Duration { return 10 * time.Millisecond }))
	if err != nil {
		t.Fatal(err)
	}
	defer xc.Close()
	b := NewBuilder(func() (XDSClient, func(), error) { return xc, func() {}, nil })
	cc, err := grpc.NewClient("fairway:///down.default:8080", grpc.WithResolvers(b), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
	defer cancel()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "disconnected from the control plane") {
		t.Errorf("RPC error = %v, want UNAVAILABLE naming the control plane", err)
	}
	if n := strings.Count(err.Error(), "fairway/"); n != 1 {
		t.Errorf("RPC error %q carries %d package prefixes, want 1", err, n)
	}
}

func TestResourceName_Targets(t *testing.T) {
	for _, tc := range []struct {
		target  string
		want    string
		wantErr bool
	}{
		{target: "fairway:///echo.default:8080", want: "echo.default:8080"},
		{target: "fairway:///echo.default.svc.cluster.local:8080", want: "echo.default:8080"},
		{target: "fairway:///echo.default.svc.cluster.local.:8080", want: "echo.default:8080"},
		{target: "fairway:///echo:8080", wantErr: true},
		{target: "fairway:///echo.default", wantErr: true},
		{target: "fairway:///echo.default:0", wantErr: true},
		{target: "fairway:///", wantErr: true},
	} {
		t.Run(tc.target, func(t *testing.T) {
			u, err := url.Parse(tc.target)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ResourceName(resolver.Target{URL: *u})
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("ResourceName = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestBuilder_BadTargetOrOverrideFailsBuild(t *testing.T) {
	src := func() (XDSClient, func(), error) { return nil, nil, errors.New("must not be called") }
	u, _ := url.Parse("fairway:///no-namespace:80")
	if _, err := NewBuilder(src).Build(resolver.Target{URL: *u}, nil, resolver.BuildOptions{}); err == nil || !strings.Contains(err.Error(), "NAME.NAMESPACE:PORT") {
		t.Errorf("Build(bad target) error = %v, want one naming the expected form", err)
	}
	u, _ = url.Parse("fairway:///echo.default:80")
	if _, err := NewBuilder(src, WithStrategy(json.RawMessage(`{"p2c":{}}`))).Build(resolver.Target{URL: *u}, nil, resolver.BuildOptions{}); err == nil || !strings.Contains(err.Error(), "strategy override") {
		t.Errorf("Build(bad override) error = %v, want one naming the override", err)
	}
}

func TestServiceConfigJSON(t *testing.T) {
	for _, tc := range []struct {
		chain string
		want  string
	}{
		{"", `{"loadBalancingConfig":[{"fairway":{}}]}`},
		{`[{"p2c":{}}]`, `{"loadBalancingConfig":[{"fairway":{"strategy":[{"p2c":{}}]}}]}`},
	} {
		if diff := cmp.Diff(ServiceConfigJSON(json.RawMessage(tc.chain)), tc.want); diff != "" {
			t.Errorf("ServiceConfigJSON(%s) (-got +want):\n%s", tc.chain, diff)
		}
	}
}

func TestResolver_CarriesCallerZonesAndKeepsEndpoints(t *testing.T) {
	e := newEnv(t)
	const name = "callers.default:8080"
	sink := newSink(name)
	_ = e.srv.Clusters.UpdateResource(name, xdstest.Cluster(name, ""))
	_ = e.srv.Endpoints.UpdateResource(name, xdstest.CLA(name, xdstest.Endpoint{Addr: "10.0.0.1:80", Zone: "zone-a"}, xdstest.Endpoint{Addr: "10.0.1.1:80", Zone: "zone-b"}))
	cc := e.dial(t, "fairway:///"+name)
	defer cc.Close()
	first := testkit.Recv(t, sink.states, "first state")
	if got := endpointattr.CallerZones(first.ResolverState.Attributes); got != nil {
		t.Errorf("caller zones without caller_zones = %v, want nil", got)
	}

	e.clock.SetTime(t0.Add(time.Minute)) // a recreated endpoint would be stamped anew
	zones := map[string]float64{"zone-a": 0.6, "zone-b": 0.4}
	_ = e.srv.Clusters.UpdateResource(name, xdstest.WithCallerZones(xdstest.Cluster(name, ""), zones))
	second := testkit.Recv(t, sink.states, "state with caller zones")
	if diff := cmp.Diff(endpointattr.CallerZones(second.ResolverState.Attributes), zones); diff != "" {
		t.Errorf("caller zones (-got +want):\n%s", diff)
	}
	if got := endpointattr.LocalZone(second.ResolverState.Attributes); got != "zone-a" {
		t.Errorf("local zone = %q, want zone-a", got)
	}
	if diff := cmp.Diff(endpoints(t, second), endpoints(t, first)); diff != "" {
		t.Errorf("endpoints changed with caller zones (-got +want):\n%s", diff)
	}
	if second.ResolverState.Attributes.Equal(first.ResolverState.Attributes) {
		t.Errorf("state attributes compare equal although caller zones changed")
	}

	// A Cluster without caller_zones (a restarted control plane in its
	// warm-up) keeps the last known ones.
	_ = e.srv.Clusters.UpdateResource(name, xdstest.Cluster(name, `[{"p2c":{}}]`))
	third := testkit.Recv(t, sink.states, "state after a Cluster without caller_zones")
	if diff := cmp.Diff(endpointattr.CallerZones(third.ResolverState.Attributes), zones); diff != "" {
		t.Errorf("caller zones after a Cluster without them (-got +want):\n%s", diff)
	}
}

// TestBuilder_ErrorsCarryOnePackagePrefix: an error from another Fairway
// package reaches the caller with its own prefix only, under the resolver's
// context.
func TestBuilder_ErrorsCarryOnePackagePrefix(t *testing.T) {
	u, _ := url.Parse("fairway:///no-namespace:80")
	_, err := NewBuilder(nil).Build(resolver.Target{URL: *u}, nil, resolver.BuildOptions{})
	if err == nil || strings.Count(err.Error(), "fairway/") != 1 {
		t.Errorf("Build(bad target) error = %v, want one with one package prefix", err)
	}
	src := func() (XDSClient, func(), error) {
		_, err := xdsclient.New(nil, &corepb.Node{Id: "test"})
		return nil, nil, err
	}
	u, _ = url.Parse("fairway:///echo.default:80")
	_, err = NewBuilder(src).Build(resolver.Target{URL: *u}, nil, resolver.BuildOptions{})
	if err == nil || !strings.Contains(err.Error(), "echo.default:80") || strings.Count(err.Error(), "fairway/") != 1 {
		t.Errorf("Build(failing xDS client) error = %v, want one naming the target with one package prefix", err)
	}
}
