package testbackend_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fairway-lb/fairway/internal/testbackend"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBackend_CountsAndNamesRPCs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := testbackend.Start("127.0.0.2:0", testbackend.WithName("pod-a"), testbackend.WithZone("zone-a"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	if got := b.Addr().IP.String(); got != "127.0.0.2" {
		t.Errorf("Addr().IP = %s, want 127.0.0.2", got)
	}
	cc, err := grpc.NewClient(b.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := testgrpc.NewTestServiceClient(cc)
	var hdr metadata.MD
	if _, err := c.EmptyCall(ctx, &testpb.Empty{}, grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	if got := hdr.Get(testbackend.HeaderName); len(got) != 1 || got[0] != "pod-a" {
		t.Errorf("header %s = %v, want [pod-a]", testbackend.HeaderName, got)
	}
	resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(resp.GetPayload().GetBody()); got != "pod-a" {
		t.Errorf("payload body = %q, want pod-a", got)
	}
	if b.Count() != 2 || b.Name() != "pod-a" || b.Zone() != "zone-a" {
		t.Errorf("Count, Name, Zone = %d, %q, %q; want 2, pod-a, zone-a", b.Count(), b.Name(), b.Zone())
	}
}

func TestBackend_DelaySlowsRPCs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, c := startAndDial(t, testbackend.WithDelay(50*time.Millisecond))
	start := time.Now()
	if _, err := c.EmptyCall(ctx, &testpb.Empty{}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("RPC took %v, want at least the 50ms delay", d)
	}
}

func TestBackend_ErrorFailsEveryRPC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, c := startAndDial(t, testbackend.WithError(codes.Unavailable))
	for i := 0; i < 3; i++ {
		if _, err := c.EmptyCall(ctx, &testpb.Empty{}); status.Code(err) != codes.Unavailable {
			t.Fatalf("EmptyCall: %v, want UNAVAILABLE", err)
		}
	}
	if b.Count() != 3 {
		t.Errorf("Count = %d, want 3 (failed calls count too)", b.Count())
	}
}

// startAndDial starts a backend on 127.0.0.1 with opts and dials it; both
// are closed when the test ends.
func startAndDial(t *testing.T, opts ...testbackend.Option) (*testbackend.Backend, testgrpc.TestServiceClient) {
	t.Helper()
	b, err := testbackend.Start("127.0.0.1:0", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	cc, err := grpc.NewClient(b.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return b, testgrpc.NewTestServiceClient(cc)
}
