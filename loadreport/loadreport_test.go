package loadreport_test

import (
	"context"
	"math"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/balancer/weightedroundrobin" // registers weighted_round_robin
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	orcaservicegrpc "github.com/cncf/xds/go/xds/service/orca/v3"
	orcaservicepb "github.com/cncf/xds/go/xds/service/orca/v3"

	"github.com/fairway-lb/fairway/internal/testkit"
	"github.com/fairway-lb/fairway/loadreport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is a TestService backend: EmptyCall waits for hold (when set) and
// then delay; UnaryCall fails with Internal.
type server struct {
	testgrpc.UnimplementedTestServiceServer
	hold  chan struct{}
	delay time.Duration
}

func (s *server) EmptyCall(ctx context.Context, _ *testpb.Empty) (*testpb.Empty, error) {
	if s.hold != nil {
		select {
		case <-s.hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if s.delay > 0 {
		time.Sleep(s.delay)
	}
	return &testpb.Empty{}, nil
}

// FullDuplexCall echoes nothing: it waits for the client to close its side.
func (s *server) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	for {
		if _, err := stream.Recv(); err != nil {
			return nil
		}
	}
}

func (s *server) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return nil, status.Error(codes.Internal, "failing on purpose")
}

// start serves s with r's reporting, a health service and r's ORCA service
// on a loopback port until the test ends.
func start(t *testing.T, r *loadreport.Reporter, s *server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(loadreport.ServerOptions(r)...)
	loadreport.Register(srv, r)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	testgrpc.RegisterTestServiceServer(srv, s)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(lis) })
	t.Cleanup(func() { srv.Stop(); wg.Wait() })
	return lis.Addr().String()
}

func dial(t *testing.T, target string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(target, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestReporter_TrailersCarryLoadAndHealthChecksProbeIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := loadreport.New(loadreport.WithCapacity(4))
	s := &server{hold: make(chan struct{})}
	cc := dial(t, start(t, r, s))
	tc := testgrpc.NewTestServiceClient(cc)

	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { _, _ = tc.EmptyCall(ctx, &testpb.Empty{}) })
	}
	testkit.Eventually(ctx, t, "3 requests in flight", func() bool { return r.Load().RIF == 3 })

	// A health check is a probe: its trailer reports the 3 in flight, and it
	// is not counted itself.
	var tr metadata.MD
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Trailer(&tr)); err != nil {
		t.Fatalf("health check: %v", err)
	}
	lr, err := loadreport.FromTrailer(tr)
	if err != nil || lr == nil {
		t.Fatalf("health check trailer: report %v, error %v", lr, err)
	}
	if got := lr.NamedMetrics[loadreport.RIFMetric]; got != 3 {
		t.Errorf("health check reported rif %v, want 3", got)
	}
	if lr.RpsFractional != 0 || lr.ApplicationUtilization <= 0 {
		t.Errorf("health check report %v: want no completed requests yet and some utilization", lr)
	}
	close(s.hold)
	wg.Wait()

	tr = nil
	if _, err := tc.EmptyCall(ctx, &testpb.Empty{}, grpc.Trailer(&tr)); err != nil {
		t.Fatal(err)
	}
	lr, _ = loadreport.FromTrailer(tr)
	if lr == nil || lr.NamedMetrics[loadreport.RIFMetric] != 0 || lr.RpsFractional <= 0 || lr.Eps != 0 {
		t.Errorf("report after the held calls = %v, want rif 0, rps > 0, eps 0", lr)
	}
	tr = nil
	if _, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Trailer(&tr)); status.Code(err) != codes.Internal {
		t.Fatalf("UnaryCall: %v, want Internal", err)
	}
	lr, _ = loadreport.FromTrailer(tr)
	if lr == nil || lr.Eps <= 0 {
		t.Errorf("failed call's report = %v, want eps > 0", lr)
	}
	if l := r.Load(); l.RIF != 0 || l.QPS*l.Latency.Seconds() <= 0 {
		t.Errorf("Load() = %+v after 5 application calls", l)
	}
}

// TestReporter_StreamCountsWhileOpen: a streaming call is in flight from
// its start to its end, and its trailer carries a report.
func TestReporter_StreamCountsWhileOpen(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := loadreport.New()
	cc := dial(t, start(t, r, &server{}))
	stream, err := testgrpc.NewTestServiceClient(cc).FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(ctx, t, "the stream in flight", func() bool { return r.Load().RIF == 1 })
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err == nil {
		t.Fatal("Recv: a message, want the end of the stream")
	}
	lr, err := loadreport.FromTrailer(stream.Trailer())
	if err != nil || lr == nil || lr.NamedMetrics[loadreport.RIFMetric] != 0 || lr.RpsFractional <= 0 {
		t.Errorf("stream trailer report %v (%v), want rif 0 and rps > 0", lr, err)
	}
}

// TestReporter_Figures checks the arithmetic on a fake clock: capacity 2,
// a 1 s window.
func TestReporter_Figures(t *testing.T) {
	clk := newFakeClock()
	r := loadreport.New(loadreport.WithCapacity(2), loadreport.WithClock(clk))
	unary := serverUnary(r)
	// Two calls of 500 ms each, one after the other, the second failing,
	// then 500 ms idle: over 1.5 s, 2 calls, 1 error, RIF 1 for 1 s.
	unary(func() error { clk.Step(500 * time.Millisecond); return nil })
	unary(func() error { clk.Step(500 * time.Millisecond); return status.Error(codes.Unavailable, "x") })
	clk.Step(500 * time.Millisecond)
	l := r.Load()
	want := loadreport.Load{RIF: 0, QPS: 2 / 1.5, EPS: 1 / 1.5, Utilization: 1 / 1.5 / 2, Latency: 500 * time.Millisecond}
	if !near(l, want) {
		t.Errorf("Load() = %+v, want %+v", l, want)
	}
	// Three windows later nothing is left of them.
	clk.Step(3 * time.Second)
	if l := r.Load(); !near(l, loadreport.Load{}) {
		t.Errorf("Load() after 3 idle seconds = %+v, want zero", l)
	}
}

func near(a, b loadreport.Load) bool {
	close := func(x, y float64) bool { return math.Abs(x-y) < 1e-9 }
	return a.RIF == b.RIF && close(a.QPS, b.QPS) && close(a.EPS, b.EPS) && close(a.Utilization, b.Utilization) && a.Latency == b.Latency
}

func TestRegister_OutOfBandStreamReportsRIF(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := loadreport.New(loadreport.WithMinReportingInterval(20 * time.Millisecond))
	s := &server{hold: make(chan struct{})}
	cc := dial(t, start(t, r, s))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(s.hold)
	for range 2 {
		wg.Go(func() { _, _ = testgrpc.NewTestServiceClient(cc).EmptyCall(ctx, &testpb.Empty{}) })
	}
	stream, err := orcaservicegrpc.NewOpenRcaServiceClient(cc).StreamCoreMetrics(ctx,
		&orcaservicepb.OrcaLoadReportRequest{ReportInterval: durationpb.New(time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	// Reports come every 20 ms (the minimum, not the 1 ms asked for); the
	// stream itself is not counted.
	var last float64
	for i := range 200 {
		lr, err := stream.Recv()
		if err != nil {
			t.Fatalf("report %d: %v", i, err)
		}
		if last = lr.NamedMetrics[loadreport.RIFMetric]; last == 2 {
			return
		}
	}
	t.Fatalf("out-of-band reports never showed the 2 requests in flight (last rif %v)", last)
}

// TestReporter_WeightedRoundRobinSteersAwayFromSlowBackend: grpc-go's own
// weighted_round_robin, with out-of-band reports (so the stream is what it
// reads), sends less traffic to a backend 20× slower than its peer.
func TestReporter_WeightedRoundRobinSteersAwayFromSlowBackend(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	opt := loadreport.WithMinReportingInterval(50 * time.Millisecond)
	fast := start(t, loadreport.New(opt), &server{delay: time.Millisecond})
	slow := start(t, loadreport.New(opt), &server{delay: 20 * time.Millisecond})
	res := manual.NewBuilderWithScheme("wrr")
	res.InitialState(resolver.State{Addresses: []resolver.Address{{Addr: fast}, {Addr: slow}}})
	cc := dial(t, "wrr:///backends", grpc.WithResolvers(res), grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"weighted_round_robin":{
		"enableOobLoadReport":true,"oobReportingPeriod":"0.05s","blackoutPeriod":"0s","weightUpdatePeriod":"0.1s"}}]}`))
	tc := testgrpc.NewTestServiceClient(cc)
	count := map[string]int{}
	began := time.Now()
	for i := 0; i < 3000 && time.Since(began) < 2*time.Second; i++ {
		var p peer.Peer
		if _, err := tc.EmptyCall(ctx, &testpb.Empty{}, grpc.Peer(&p)); err != nil {
			t.Fatal(err)
		}
		if time.Since(began) > time.Second { // weights in place
			count[p.Addr.String()]++
		}
	}
	t.Logf("after the first second: fast %d, slow %d", count[fast], count[slow])
	if count[fast] < 3*count[slow] || count[fast] == 0 {
		t.Errorf("fast backend got %d requests, slow %d: want fast ≥ 3× slow", count[fast], count[slow])
	}
}
