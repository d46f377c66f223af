package balancer_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/orca"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/fairway-lb/fairway/client/balancer"
	"github.com/fairway-lb/fairway/internal/testkit"
	"github.com/fairway-lb/fairway/wire"
)

// orcaBackend is a real gRPC backend that reports its load with grpc-go's
// orca package: every call's trailer (health checks included) and the
// out-of-band stream carry named_metrics["rif"], its requests in flight
// plus extra, the load other clients put on it.
type orcaBackend struct {
	testgrpc.UnimplementedTestServiceServer
	extra    float64
	inflight atomic.Int64
	served   atomic.Int64
	srv      *grpc.Server
	addr     string
}

func startORCABackend(t *testing.T, ip string, extra float64) *orcaBackend {
	t.Helper()
	lis, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	b := &orcaBackend{extra: extra, addr: lis.Addr().String()}
	smr := orca.NewServerMetricsRecorder()
	smr.(orca.CallMetricsRecorder).SetNamedMetric(wire.RIFMetric, extra)
	b.srv = grpc.NewServer(orca.CallMetricsServerOption(smr), grpc.ChainUnaryInterceptor(b.report))
	testgrpc.RegisterTestServiceServer(b.srv, b)
	healthpb.RegisterHealthServer(b.srv, health.NewServer())
	if err := orca.Register(b.srv, orca.ServiceOptions{ServerMetricsProvider: smr}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = b.srv.Serve(lis) }()
	t.Cleanup(func() { b.srv.Stop(); <-done })
	return b
}

// report sets the call's load report; health checks are not counted as
// requests in flight.
func (b *orcaBackend) report(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if info.FullMethod != healthpb.Health_Check_FullMethodName {
		b.inflight.Add(1)
		defer b.inflight.Add(-1)
	}
	resp, err := h(ctx, req)
	if r := orca.CallMetricsRecorderFromContext(ctx); r != nil {
		r.SetNamedMetric(wire.RIFMetric, b.extra+float64(b.inflight.Load()))
	}
	return resp, err
}

func (b *orcaBackend) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	b.served.Add(1)
	time.Sleep(time.Millisecond)
	return &testpb.Empty{}, nil
}

// TestLoadAware_OverloadedBackendGetsLessTraffic: four real ORCA-reporting
// backends, one of which reports 50 requests in flight (other clients'
// load). A fresh client through the real balancer learns it before sending
// it anything, from the out-of-band stream or from probes, and sends it
// at most a third of what each of its peers gets.
func TestLoadAware_OverloadedBackendGetsLessTraffic(t *testing.T) {
	for _, tc := range []struct{ name, chain string }{
		{"oob", `[{"load_aware":{"oob_interval":"1s","probe_rate":0,"max_age":"30s"}}]`},
		{"probes", `[{"load_aware":{"oob_interval":0,"probe_rate":1,"max_age":"30s"}}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var backends []*orcaBackend
			var s resolver.State
			for i := range 4 {
				b := startORCABackend(t, fmt.Sprintf("127.0.0.%d", i+1), map[bool]float64{true: 50, false: 0}[i == 0])
				backends = append(backends, b)
				s.Endpoints = append(s.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: b.addr}}})
			}
			r := manual.NewBuilderWithScheme("loadaware")
			r.InitialState(s)
			cc, err := grpc.NewClient("loadaware:///"+tc.name, grpc.WithResolvers(r),
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{"fairway":{"strategy":%s}}]}`, tc.chain)))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			cc.Connect()
			client := testgrpc.NewTestServiceClient(cc)
			if tc.name == "oob" {
				// The reports arrive before any request is sent.
				testkit.Eventually(ctx, t, "a load report from every backend", func() bool {
					eps, _ := balancer.Inspect(tc.name)
					n := 0
					for _, e := range eps {
						if e.Reported {
							n++
						}
					}
					return n == 4
				})
			}
			const workers, calls = 4, 100
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for range calls {
						if _, err := client.EmptyCall(ctx, &testpb.Empty{}, grpc.WaitForReady(true)); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			var peers int64
			for _, b := range backends[1:] {
				peers += b.served.Load()
			}
			mean := float64(peers) / 3
			if got := float64(backends[0].served.Load()); got > mean/3 {
				t.Errorf("overloaded backend served %v requests, its peers %v on average: want at most a third", got, mean)
			}
			t.Logf("overloaded backend: %d requests; peers: %.0f on average", backends[0].served.Load(), mean)
			if tc.name == "probes" {
				reg := prometheus.NewRegistry()
				reg.MustRegister(balancer.Collector())
				if n := testkit.MetricValue(t, reg, "fairway_client_load_probes_total", "target", tc.name, "result", "sent"); n == 0 {
					t.Error("fairway_client_load_probes_total{result=\"sent\"} = 0, want the probes counted")
				}
			}
		})
	}
}
