package p2c

import (
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy"
)

func newSampled(clk *testingclock.FakeClock) *strategy.Endpoint {
	e := strategy.NewEndpoint("a", endpointattr.Info{}, clk.Now())
	e.SetLatencyConfig(clk, 0.5, 4)
	return e
}

func TestDecay_IdleEstimateMovesTowardRef(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e := newSampled(clk)
	ste := &staleState{}
	e.ObserveLatency(100*time.Millisecond, 0.5)
	ref := 20 * time.Millisecond
	for i := 0; i < 2; i++ { // two idle ticks: not yet stale
		ste.decay(e, ref, 3, 0.5, 4, 32)
	}
	if got, want := e.Latency(), 100*time.Millisecond; got != want {
		t.Fatalf("Latency() before idle ticks = %v, want %v", got, want)
	}
	ste.decay(e, ref, 3, 0.5, 4, 32) // third idle tick: half way to ref
	if got, want := e.Latency(), 60*time.Millisecond; got != want {
		t.Errorf("Latency() after decay = %v, want %v", got, want)
	}
	e.Picked() // a pick resets the idle count
	ste.decay(e, ref, 3, 0.5, 4, 32)
	if got, want := e.Latency(), 60*time.Millisecond; got != want {
		t.Errorf("Latency() after a pick = %v, want %v", got, want)
	}
	ste.decay(e, ref, 3, 0.5, 4, 2) // cap: 2 × ref
	if got, want := e.Latency(), 40*time.Millisecond; got != want {
		t.Errorf("Latency() capped = %v, want %v", got, want)
	}
}

func TestDecay_FailuresRaiseEstimate(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e := newSampled(clk)
	ste := &staleState{}
	ref := 20 * time.Millisecond
	ste.decay(e, ref, 3, 0.5, 4, 32)
	if got := e.Latency(); got != 0 {
		t.Fatalf("Latency() with no sample and no failure = %v, want 0", got)
	}
	// A fast failure on a pod not yet measured.
	e.Picked()
	e.StartSample()
	clk.Step(time.Millisecond)
	e.FinishTimed(balancer.DoneInfo{Err: status.Error(codes.Unavailable, "down")})
	// The last tick left the peers' reference: penalty × 20 ms at once.
	if got, want := e.Latency(), 80*time.Millisecond; got != want {
		t.Errorf("Latency() after a fast failure = %v, want %v", got, want)
	}
	ste.decay(e, ref, 3, 0.5, 4, 32)
	if got, want := e.Latency(), 80*time.Millisecond; got != want {
		t.Errorf("Latency() after a fast failure and a tick = %v, want %v", got, want)
	}
	// A cancellation by the caller is no failure of the pod.
	c := newSampled(clk)
	stc := &staleState{}
	c.Picked()
	c.Finish(codes.Canceled)
	stc.decay(c, ref, 3, 0.5, 4, 32)
	if got := c.Latency(); got != 0 {
		t.Errorf("Latency() after a cancellation and a tick = %v, want 0", got)
	}
}
