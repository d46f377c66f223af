package balancer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	grpcbalancer "google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/client/balancer"
	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy"
	"github.com/fairway-lb/fairway/internal/testbackend"
	"github.com/fairway-lb/fairway/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// firstHealthy is a test-only strategy, added as its own registration and
// nothing else: it always picks the first candidate.
type firstHealthy struct{}

func (firstHealthy) Name() string                { return "first_healthy" }
func (firstHealthy) Position() strategy.Position { return strategy.Terminal }
func (firstHealthy) ParseConfig(raw json.RawMessage) (any, error) {
	var cfg struct{}
	return &cfg, strategy.DecodeConfig("first_healthy", raw, &cfg)
}
func (firstHealthy) Build(any, strategy.Strategy, strategy.BuildOptions) strategy.Strategy {
	return firstHealthyStrategy{}
}

type firstHealthyStrategy struct{}

func (firstHealthyStrategy) Tick(strategy.Set) bool { return false }
func (firstHealthyStrategy) Build(s strategy.Set) strategy.Picker {
	return strategy.PickerFunc(func(context.Context) (*strategy.Endpoint, error) {
		if len(s.Cands) == 0 {
			return nil, strategy.ErrNoEndpoint
		}
		return s.Cands[0].E, nil
	})
}

func init() { strategy.Register(firstHealthy{}) }

// startBackends starts n real gRPC backends on loopback addresses
// 127.0.0.1, 127.0.0.2, ...; opt(i) gives backend i's options (nil: none).
func startBackends(t *testing.T, n int, opt func(i int) []testbackend.Option) []*testbackend.Backend {
	t.Helper()
	var out []*testbackend.Backend
	for i := range n {
		var opts []testbackend.Option
		if opt != nil {
			opts = opt(i)
		}
		b, err := testbackend.Start(fmt.Sprintf("127.0.0.%d:0", i+1), opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Stop)
		out = append(out, b)
	}
	return out
}

type ep struct {
	b      *testbackend.Backend
	addr   string // instead of b: an address nothing serves
	zone   string
	health endpointattr.Health
}

// state builds a resolver state as Fairway's resolver does.
func state(t *testing.T, r *manual.Resolver, chain string, eps ...ep) resolver.State {
	t.Helper()
	s := resolver.State{Attributes: endpointattr.SetLocalZone(nil, "a")}
	for _, e := range eps {
		z := e.zone
		if z == "" {
			z = "a"
		}
		addr := e.addr
		if e.b != nil {
			addr = e.b.Addr().String()
		}
		s.Endpoints = append(s.Endpoints, endpointattr.Set(
			resolver.Endpoint{Addresses: []resolver.Address{{Addr: addr}}},
			endpointattr.Info{Zone: z, Weight: 1, Health: e.health}))
	}
	cfg := `{"loadBalancingConfig":[{"fairway":{}}]}`
	if chain != "" {
		cfg = fmt.Sprintf(`{"loadBalancingConfig":[{"fairway":{"strategy":%s}}]}`, chain)
	}
	s.ServiceConfig = r.CC().ParseServiceConfig(cfg)
	if s.ServiceConfig.Err != nil {
		t.Fatalf("service config: %v", s.ServiceConfig.Err)
	}
	return s
}

// dial returns a client for target served by a manual resolver.
func dial(t *testing.T, target string) (*manual.Resolver, testgrpc.TestServiceClient) {
	t.Helper()
	r := manual.NewBuilderWithScheme("fwtest")
	cc, err := grpc.NewClient("fwtest:///"+target, grpc.WithResolvers(r), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	cc.Connect()
	return r, testgrpc.NewTestServiceClient(cc)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func calls(bs []*testbackend.Backend) []int64 {
	out := make([]int64, len(bs))
	for i, b := range bs {
		out[i] = b.Count()
	}
	return out
}

func send(t *testing.T, ctx context.Context, c testgrpc.TestServiceClient, n int) (failed int) {
	t.Helper()
	for range n {
		if _, err := c.EmptyCall(ctx, &testgrpc.Empty{}, grpc.WaitForReady(true)); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("EmptyCall: %v", err)
			}
			failed++
		}
	}
	return failed
}

// waitReady waits until n endpoints of target are candidates.
func waitReady(t *testing.T, ctx context.Context, target string, n int) {
	t.Helper()
	testkit.Eventually(ctx, t, fmt.Sprintf("%d ready endpoints", n), func() bool {
		eps, _ := balancer.Inspect(target)
		ready := 0
		for _, e := range eps {
			if e.Ready {
				ready++
			}
		}
		return ready == n
	})
}

func TestBalancer_TrafficReachesAllAndRemovedGetsNothing(t *testing.T) {
	ctx := ctxT(t)
	bs := startBackends(t, 3, nil)
	r, c := dial(t, "reach.default:8080")
	r.UpdateState(state(t, r, "", ep{b: bs[0]}, ep{b: bs[1]}, ep{b: bs[2]}))
	waitReady(t, ctx, "reach.default:8080", 3)
	send(t, ctx, c, 300)
	for i, n := range calls(bs) {
		if n == 0 {
			t.Errorf("backend %d got no calls", i)
		}
	}
	eps, ok := balancer.Inspect("reach.default:8080")
	if !ok || len(eps) != 3 {
		t.Fatalf("Inspect = %v, %v; want 3 endpoints", eps, ok)
	}
	var picks uint64
	for _, e := range eps {
		picks += e.Picks
		if !e.Ready || e.InFlight != 0 || e.Zone != "a" {
			t.Errorf("Inspect endpoint %+v: want ready, zone a, nothing in flight", e)
		}
	}
	if picks != 300 {
		t.Errorf("Inspect picks = %d, want 300", picks)
	}

	r.UpdateState(state(t, r, "", ep{b: bs[0]}, ep{b: bs[1]}))
	testkit.Eventually(ctx, t, "endpoint removal", func() bool { eps, _ := balancer.Inspect("reach.default:8080"); return len(eps) == 2 })
	before := calls(bs)
	send(t, ctx, c, 200)
	if got := calls(bs)[2] - before[2]; got != 0 {
		t.Errorf("removed backend got %d new calls, want 0", got)
	}
}

func TestBalancer_DrainingEndpointGetsNoNewPicks(t *testing.T) {
	ctx := ctxT(t)
	bs := startBackends(t, 2, nil)
	r, c := dial(t, "drain.default:8080")
	r.UpdateState(state(t, r, "", ep{b: bs[0]}, ep{b: bs[1], health: endpointattr.Draining}))
	send(t, ctx, c, 100)
	if got := calls(bs); got[1] != 0 || got[0] != 100 {
		t.Errorf("calls = %v, want [100 0] (draining endpoint gets nothing)", got)
	}
}

// sendWithin is send with a deadline of d per call.
func sendWithin(t *testing.T, ctx context.Context, c testgrpc.TestServiceClient, n int, d time.Duration) (failed int) {
	t.Helper()
	for range n {
		cctx, cancel := context.WithTimeout(ctx, d)
		_, err := c.EmptyCall(cctx, &testgrpc.Empty{}, grpc.WaitForReady(true))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("EmptyCall: %v", err)
			}
			failed++
		}
	}
	return failed
}

func TestBalancer_OutlierDrainsFailingBackend(t *testing.T) {
	ctx := ctxT(t)
	// Backend 1 fails every call with UNAVAILABLE.
	bs := startBackends(t, 3, func(i int) []testbackend.Option {
		if i == 1 {
			return []testbackend.Option{testbackend.WithError(codes.Unavailable)}
		}
		return nil
	})
	const deadline = time.Second
	r, c := dial(t, "outlier.default:8080")
	chain := `[{"outlier":{"interval":"200ms","min_requests":5,"max_ejection_percent":50}},{"round_robin":{}}]`
	r.UpdateState(state(t, r, chain, ep{b: bs[0]}, ep{b: bs[1]}, ep{b: bs[2]}))
	testkit.Eventually(ctx, t, "ejection", func() bool {
		sendWithin(t, ctx, c, 10, 100*time.Millisecond)
		eps, _ := balancer.Inspect("outlier.default:8080")
		for _, e := range eps {
			if e.Address == bs[1].Addr().String() && !e.EjectedUntil.IsZero() {
				return true
			}
		}
		return false
	})
	before := calls(bs)
	if failed := sendWithin(t, ctx, c, 100, deadline); failed != 0 {
		t.Errorf("%d calls failed after ejection, want 0", failed)
	}
	if got := calls(bs)[1] - before[1]; got != 0 {
		t.Errorf("ejected backend got %d new calls, want 0", got)
	}
	eps, _ := balancer.Inspect("outlier.default:8080")
	for _, e := range eps {
		if e.Address != bs[1].Addr().String() {
			continue
		}
		if e.Failures == 0 || e.Codes["Unavailable"] != e.Failures || e.Ejections != 1 {
			t.Errorf("Inspect of the failing endpoint: failures %d, codes %v, ejections %d; want only UNAVAILABLE failures and one ejection", e.Failures, e.Codes, e.Ejections)
		}
	}
}

func TestBalancer_ZeroEndpointsFailWithClearError(t *testing.T) {
	ctx := ctxT(t)
	bs := startBackends(t, 1, nil)
	r, c := dial(t, "zero.default:8080")
	r.UpdateState(state(t, r, "", ep{b: bs[0]}))
	send(t, ctx, c, 5)
	r.UpdateState(state(t, r, ""))
	var last error
	testkit.Eventually(ctx, t, "a failing RPC", func() bool {
		_, last = c.EmptyCall(ctx, &testgrpc.Empty{})
		return status.Code(last) == codes.Unavailable && strings.Contains(last.Error(), "fairway/balancer: no endpoints")
	})
}

func TestBalancer_TestOnlyStrategyByRegistration(t *testing.T) {
	ctx := ctxT(t)
	bs := startBackends(t, 3, nil)
	r, c := dial(t, "first.default:8080")
	r.UpdateState(state(t, r, `[{"first_healthy":{}}]`, ep{b: bs[0]}, ep{b: bs[1]}, ep{b: bs[2]}))
	waitReady(t, ctx, "first.default:8080", 3)
	send(t, ctx, c, 50)
	if got := calls(bs); got[0] != 50 {
		t.Errorf("calls = %v, want all 50 on the first endpoint", got)
	}
}

func TestBalancer_AllFailedIsTransientFailureWithClearError(t *testing.T) {
	ctx := ctxT(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close() // nothing listens there any more
	r, c := dial(t, "dead.default:8080")
	r.UpdateState(state(t, r, "", ep{addr: dead}))
	var last error
	testkit.Eventually(ctx, t, "a failing RPC", func() bool {
		_, last = c.EmptyCall(ctx, &testgrpc.Empty{})
		return status.Code(last) == codes.Unavailable && strings.Contains(last.Error(), "fairway/balancer: all 1 healthy endpoints failed to connect")
	})
}

func TestBalancer_MetricsAndTargets(t *testing.T) {
	ctx := ctxT(t)
	bs := startBackends(t, 2, nil)
	r, c := dial(t, "metrics.default:8080")
	r.UpdateState(state(t, r, "", ep{b: bs[0]}, ep{b: bs[1], zone: "b"}))
	waitReady(t, ctx, "metrics.default:8080", 2)
	send(t, ctx, c, 20)
	found := false
	for _, tg := range balancer.Targets() {
		found = found || tg == "metrics.default:8080"
	}
	if !found {
		t.Errorf("Targets() = %v, want metrics.default:8080 in it", balancer.Targets())
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(balancer.Collector())
	const target = "metrics.default:8080"
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"fairway_client_picks_total", []string{"zone", "a"}, 20}, // local zone, light load
		{"fairway_client_picks_total", []string{"zone", "b"}, 0},
		{"fairway_client_inflight", nil, 0},
		{"fairway_client_ejections_total", nil, 0},
		{"fairway_client_zone_spill_fraction", nil, 0},
	} {
		if got := testkit.MetricValue(t, reg, tc.name, append([]string{"target", target}, tc.labels...)...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	labelNames(t, reg, map[string][]string{
		"fairway_client_picks_total":         {"target", "zone"},
		"fairway_client_inflight":            {"target"},
		"fairway_client_ejections_total":     {"target"},
		"fairway_client_zone_spill_fraction": {"target"},
		"fairway_client_load_probes_total":   {"result", "target"},
	})

	// Per endpoint only with EndpointCollector.
	epReg := prometheus.NewRegistry()
	epReg.MustRegister(balancer.EndpointCollector())
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"fairway_client_endpoint_picks_total", []string{"endpoint", bs[0].Addr().String(), "zone", "a"}, 20},
		{"fairway_client_endpoint_picks_total", []string{"endpoint", bs[1].Addr().String(), "zone", "b"}, 0},
		{"fairway_client_endpoint_inflight", []string{"endpoint", bs[0].Addr().String()}, 0},
		{"fairway_client_endpoint_inflight", []string{"endpoint", bs[1].Addr().String()}, 0},
	} {
		if got := testkit.MetricValue(t, epReg, tc.name, append([]string{"target", target}, tc.labels...)...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	labelNames(t, epReg, map[string][]string{
		"fairway_client_endpoint_picks_total": {"endpoint", "target", "zone"},
		"fairway_client_endpoint_inflight":    {"endpoint", "target"},
	})

	// The per-target counter keeps the picks of an endpoint that goes.
	r.UpdateState(state(t, r, "", ep{b: bs[1], zone: "b"}))
	testkit.Eventually(ctx, t, "the removed endpoint's series gone", func() bool {
		return testkit.MetricValue(t, epReg, "fairway_client_endpoint_picks_total", "target", target, "endpoint", bs[0].Addr().String()) == 0
	})
	if got := testkit.MetricValue(t, reg, "fairway_client_picks_total", "target", target, "zone", "a"); got != 20 {
		t.Errorf("fairway_client_picks_total{zone=a} after its endpoint went = %v, want 20 (a counter never goes down)", got)
	}
}

// labelNames checks that the metrics of g carry exactly the label names of
// want, and that g has no other metric.
func labelNames(t *testing.T, g prometheus.Gatherer, want map[string][]string) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var names []string
			for _, l := range m.GetLabel() {
				names = append(names, l.GetName())
			}
			got[mf.GetName()] = names
		}
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("metric label names (-got +want):\n%s", diff)
	}
}

func TestParseConfigJSON_RejectsInvalidChain(t *testing.T) {
	if _, err := balancer.ParseConfigJSON([]byte(`{"strategy":[{"p2c":{"decay_alpha":5}}]}`)); err == nil ||
		err.Error() != "fairway/p2c: decay_alpha 5 must be in (0, 1]" {
		t.Errorf("ParseConfigJSON error = %v", err)
	}
	if _, err := balancer.ParseConfigJSON(nil); err != nil {
		t.Errorf("ParseConfigJSON(nil) = %v, want the default chain", err)
	}
}

func TestBalancer_ResolverErrorKeepsLastPicker(t *testing.T) {
	ctx := ctxT(t)
	bs := startBackends(t, 2, nil)
	r, c := dial(t, "rerr.default:8080")
	r.UpdateState(state(t, r, "", ep{b: bs[0]}, ep{b: bs[1]}))
	send(t, ctx, c, 10)
	r.CC().ReportError(fmt.Errorf("control plane away"))
	if failed := send(t, ctx, c, 50); failed != 0 {
		t.Errorf("%d calls failed after a resolver error, want 0 (last picker kept)", failed)
	}
}

func TestBalancer_SlowStartRampsOnInjectedClock(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	grpcbalancer.Register(balancer.NewBuilder(balancer.WithClock(clk)))
	defer grpcbalancer.Register(balancer.NewBuilder())

	ctx := ctxT(t)
	bs := startBackends(t, 3, nil)
	r, c := dial(t, "ramp.default:8080")
	chain := `[{"slow_start":{"window":"10s","min_weight_percent":10}},{"weighted":{}}]`
	r.UpdateState(state(t, r, chain, ep{b: bs[0]}, ep{b: bs[1]}))
	send(t, ctx, c, 10)
	r.UpdateState(state(t, r, chain, ep{b: bs[0]}, ep{b: bs[1]}, ep{b: bs[2]}))

	weightOf := func(addr string) float64 {
		eps, _ := balancer.Inspect("ramp.default:8080")
		for _, e := range eps {
			if e.Address == addr && e.Ready {
				return e.EffectiveWeight
			}
		}
		return -1
	}
	for _, want := range []float64{0.1, 0.5, 1} {
		testkit.Eventually(ctx, t, fmt.Sprintf("effective weight %v", want), func() bool { return weightOf(bs[2].Addr().String()) == want })
		// The clock stands still while we wait: a ramped initial endpoint
		// would keep a weight below 1 and fail this. (Waiting, rather than
		// reading once, because on a busy machine the endpoint may be
		// between two connectivity states for a moment; Inspect then says
		// not Ready.)
		testkit.Eventually(ctx, t, "initial endpoint's effective weight 1 (not ramped)", func() bool { return weightOf(bs[0].Addr().String()) == 1 })
		clk.Step(5 * time.Second) // the tick after it rebuilds the picker
	}
}
