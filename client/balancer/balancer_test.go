package balancer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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

// backend is a real gRPC server on a loopback address.
type backend struct {
	testgrpc.UnimplementedTestServiceServer
	addr  string
	calls atomic.Int64
	fail  atomic.Bool // answer UNAVAILABLE
	srv   *grpc.Server
}

func (b *backend) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	b.calls.Add(1)
	if b.fail.Load() {
		return nil, status.Error(codes.Unavailable, "backend says no")
	}
	return &testgrpc.Empty{}, nil
}

func startBackends(t *testing.T, n int) []*backend {
	t.Helper()
	var out []*backend
	for i := range n {
		lis, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", i+1))
		if err != nil {
			t.Fatal(err)
		}
		b := &backend{addr: lis.Addr().String(), srv: grpc.NewServer()}
		testgrpc.RegisterTestServiceServer(b.srv, b)
		go b.srv.Serve(lis)
		t.Cleanup(b.srv.Stop)
		out = append(out, b)
	}
	return out
}

type ep struct {
	b      *backend
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
		s.Endpoints = append(s.Endpoints, endpointattr.Set(
			resolver.Endpoint{Addresses: []resolver.Address{{Addr: e.b.addr}}},
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

func calls(bs []*backend) []int64 {
	out := make([]int64, len(bs))
	for i, b := range bs {
		out[i] = b.calls.Load()
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

// waitFor polls cond (real time: a real gRPC channel) until ctx expires.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// waitReady waits until n endpoints of target are candidates.
func waitReady(t *testing.T, ctx context.Context, target string, n int) {
	t.Helper()
	waitFor(t, ctx, fmt.Sprintf("%d ready endpoints", n), func() bool {
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
	bs := startBackends(t, 3)
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
	waitFor(t, ctx, "endpoint removal", func() bool { eps, _ := balancer.Inspect("reach.default:8080"); return len(eps) == 2 })
	before := calls(bs)
	send(t, ctx, c, 200)
	if got := calls(bs)[2] - before[2]; got != 0 {
		t.Errorf("removed backend got %d new calls, want 0", got)
	}
}

func TestBalancer_DrainingEndpointGetsNoNewPicks(t *testing.T) {
	ctx := ctxT(t)
	bs := startBackends(t, 2)
	r, c := dial(t, "drain.default:8080")
	r.UpdateState(state(t, r, "", ep{b: bs[0]}, ep{b: bs[1], health: endpointattr.Draining}))
	send(t, ctx, c, 100)
	if got := calls(bs); got[1] != 0 || got[0] != 100 {
		t.Errorf("calls = %v, want [100 0] (draining endpoint gets nothing)", got)
	}
}

func TestBalancer_OutlierDrainsFailingBackend(t *testing.T) {
	ctx := ctxT(t)
	bs := startBackends(t, 3)
	bs[1].fail.Store(true)
	r, c := dial(t, "outlier.default:8080")
	chain := `[{"outlier":{"interval":"200ms","min_requests":5,"max_ejection_percent":50}},{"round_robin":{}}]`
	r.UpdateState(state(t, r, chain, ep{b: bs[0]}, ep{b: bs[1]}, ep{b: bs[2]}))
	waitFor(t, ctx, "ejection", func() bool {
		send(t, ctx, c, 10)
		eps, _ := balancer.Inspect("outlier.default:8080")
		for _, e := range eps {
			if e.Address == bs[1].addr && !e.EjectedUntil.IsZero() {
				return true
			}
		}
		return false
	})
	before := calls(bs)
	if failed := send(t, ctx, c, 100); failed != 0 {
		t.Errorf("%d calls failed after ejection, want 0", failed)
	}
	if got := calls(bs)[1] - before[1]; got != 0 {
		t.Errorf("ejected backend got %d new calls, want 0", got)
	}
	eps, _ := balancer.Inspect("outlier.default:8080")
	for _, e := range eps {
		if e.Address != bs[1].addr {
			continue
		}
		if e.Failures == 0 || e.Codes["Unavailable"] != e.Failures || e.Ejections != 1 {
			t.Errorf("Inspect of the failing endpoint: failures %d, codes %v, ejections %d; want only UNAVAILABLE failures and one ejection", e.Failures, e.Codes, e.Ejections)
		}
	}
}

func TestBalancer_ZeroEndpointsFailWithClearError(t *testing.T) {
	ctx := ctxT(t)
	bs := startBackends(t, 1)
	r, c := dial(t, "zero.default:8080")
	r.UpdateState(state(t, r, "", ep{b: bs[0]}))
	send(t, ctx, c, 5)
	r.UpdateState(state(t, r, ""))
	var last error
	waitFor(t, ctx, "a failing RPC", func() bool {
		_, last = c.EmptyCall(ctx, &testgrpc.Empty{})
		return status.Code(last) == codes.Unavailable && strings.Contains(last.Error(), "fairway/balancer: no endpoints")
	})
}

func TestBalancer_TestOnlyStrategyByRegistration(t *testing.T) {
	ctx := ctxT(t)
	bs := startBackends(t, 3)
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
	dead := &backend{addr: lis.Addr().String()}
	lis.Close() // nothing listens there any more
	r, c := dial(t, "dead.default:8080")
	r.UpdateState(state(t, r, "", ep{b: dead}))
	var last error
	waitFor(t, ctx, "a failing RPC", func() bool {
		_, last = c.EmptyCall(ctx, &testgrpc.Empty{})
		return status.Code(last) == codes.Unavailable && strings.Contains(last.Error(), "fairway/balancer: all 1 healthy endpoints failed to connect")
	})
}

func TestBalancer_MetricsAndTargets(t *testing.T) {
	ctx := ctxT(t)
	bs := startBackends(t, 2)
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
	mfs, err := balancer.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			target := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "target" {
					target = l.GetValue()
					continue
				}
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			if target != "metrics.default:8080" {
				continue
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			got[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	want := map[string]float64{
		"fairway_client_picks_total{endpoint=" + bs[0].addr + ",zone=a}": 20, // local zone, light load
		"fairway_client_picks_total{endpoint=" + bs[1].addr + ",zone=b}": 0,
		"fairway_client_inflight{endpoint=" + bs[0].addr + "}":           0,
		"fairway_client_inflight{endpoint=" + bs[1].addr + "}":           0,
		"fairway_client_ejections_total{}":                               0,
		"fairway_client_zone_spill_fraction{}":                           0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("metric %s = %v (present %v), want %v; all: %v", k, g, ok, v, got)
		}
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
	bs := startBackends(t, 2)
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
	bs := startBackends(t, 3)
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
		waitFor(t, ctx, fmt.Sprintf("effective weight %v", want), func() bool { return weightOf(bs[2].addr) == want })
		if got := weightOf(bs[0].addr); got != 1 {
			t.Errorf("initial endpoint's effective weight = %v, want 1 (not ramped)", got)
		}
		clk.Step(5 * time.Second) // the tick after it rebuilds the picker
	}
}
