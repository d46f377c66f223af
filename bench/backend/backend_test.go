package backend

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fairway-lb/fairway/internal/testkit"
	"github.com/fairway-lb/fairway/loadreport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestBackend_CapacityQueuesAndTrailer sends 4 requests at once to a pod
// serving 2 at a time with a constant 50 ms service time: two finish after
// about 50 ms, two after about 100 ms, all naming the pod.
func TestBackend_CapacityQueuesAndTrailer(t *testing.T) {
	b := New(Spec{Index: 7, IP: "127.0.0.1", Capacity: 2, Median: 50 * time.Millisecond}, 100*time.Millisecond, 50)
	if err := b.Start(0); err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	cc := dial(t, b.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := Call(ctx, cc); err != nil { // connect first
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lats []time.Duration
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			start := time.Now()
			pod, err := Call(ctx, cc)
			if err != nil || pod != 7 {
				t.Errorf("Call() = %d, %v; want 7, nil", pod, err)
			}
			mu.Lock()
			lats = append(lats, time.Since(start))
			mu.Unlock()
		})
	}
	wg.Wait()
	var slow int
	for _, l := range lats {
		if l >= 95*time.Millisecond {
			slow++
		}
	}
	if slow != 2 {
		t.Errorf("latencies %v: %d took two service times, want 2", lats, slow)
	}
	if got := b.Received(); got != 5 {
		t.Errorf("Received() = %d, want 5", got)
	}
}

func TestBackend_ErrorRateAndStop(t *testing.T) {
	b := New(Spec{Index: 1, IP: "127.0.0.1", Capacity: 1, Median: time.Millisecond, ErrorRate: 1}, time.Second, 5)
	if err := b.Start(0); err != nil {
		t.Fatal(err)
	}
	cc := dial(t, b.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pod, err := Call(ctx, cc)
	if status.Code(err) != codes.Unavailable || pod != 1 || !ErrInjected(err) {
		t.Errorf("Call() = %d, %v; want 1, injected UNAVAILABLE", pod, err)
	}
	b.Stop()
	b.Stop() // twice is fine
	if _, err := Call(ctx, cc); status.Code(err) != codes.Unavailable || ErrInjected(err) {
		t.Errorf("Call() after Stop = %v, want a connection UNAVAILABLE", err)
	}
	if got := b.Buckets()[0]; got != 1 {
		t.Errorf("bucket 0 = %d, want 1", got)
	}
}

func TestServiceTime_SlowAndCold(t *testing.T) {
	s := Spec{Median: 10 * time.Millisecond, SlowFactor: 2, ColdFactor: 3, ColdFor: time.Second}
	if got := ServiceTime(s, 0, nil); got != 60*time.Millisecond {
		t.Errorf("cold: %v, want 60ms", got)
	}
	if got := ServiceTime(s, 2*time.Second, nil); got != 20*time.Millisecond {
		t.Errorf("warm: %v, want 20ms", got)
	}
}

// TestBackend_ReportsLoad: a pod serving 1 at a time with 3 requests sent
// reports them in flight (queued ones included) to a health-check probe,
// and every response carries a load report.
func TestBackend_ReportsLoad(t *testing.T) {
	b := New(Spec{Index: 2, IP: "127.0.0.1", Capacity: 1, Median: 300 * time.Millisecond}, time.Second, 5)
	if err := b.Start(0); err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	cc := dial(t, b.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	for range 3 {
		wg.Go(func() {
			var tr metadata.MD
			if _, err := Call(ctx, cc, grpc.Trailer(&tr)); err != nil {
				t.Error(err)
			}
			if lr, err := loadreport.FromTrailer(tr); lr == nil || err != nil {
				t.Errorf("response without a load report (%v)", err)
			}
		})
	}
	testkit.Eventually(ctx, t, "3 requests received", func() bool { return b.Received() == 3 })
	var tr metadata.MD
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Trailer(&tr)); err != nil {
		t.Fatal(err)
	}
	lr, err := loadreport.FromTrailer(tr)
	if err != nil || lr == nil {
		t.Fatalf("probe: report %v, error %v", lr, err)
	}
	if rif := lr.NamedMetrics[loadreport.RIFMetric]; rif != 3 {
		t.Errorf("probe reported rif %v, want 3", rif)
	}
}
