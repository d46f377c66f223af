package p2c_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/client/strategy/p2c"
	"github.com/fairway-lb/fairway/client/strategy/strategytest"
)

func TestDecay_IdleEstimateMovesTowardRef(t *testing.T) {
	clk := testingclock.NewFakeClock(strategytest.Start)
	e := strategytest.Sampled(clk, 0.5, 4)
	ste := &p2c.StaleState{}
	e.ObserveLatency(100*time.Millisecond, 0.5)
	ref := 20 * time.Millisecond
	for i := 0; i < 2; i++ { // two idle ticks: not yet stale
		ste.Decay(e, ref, 3, 0.5, 4, 32)
	}
	if got, want := e.Latency(), 100*time.Millisecond; got != want {
		t.Fatalf("Latency() before idle ticks = %v, want %v", got, want)
	}
	ste.Decay(e, ref, 3, 0.5, 4, 32) // third idle tick: half way to ref
	if got, want := e.Latency(), 60*time.Millisecond; got != want {
		t.Errorf("Latency() after decay = %v, want %v", got, want)
	}
	e.Picked() // a pick resets the idle count
	ste.Decay(e, ref, 3, 0.5, 4, 32)
	if got, want := e.Latency(), 60*time.Millisecond; got != want {
		t.Errorf("Latency() after a pick = %v, want %v", got, want)
	}
	ste.Decay(e, ref, 3, 0.5, 4, 2) // cap: 2 × ref
	if got, want := e.Latency(), 40*time.Millisecond; got != want {
		t.Errorf("Latency() capped = %v, want %v", got, want)
	}
}

func TestDecay_FailuresRaiseEstimate(t *testing.T) {
	clk := testingclock.NewFakeClock(strategytest.Start)
	e := strategytest.Sampled(clk, 0.5, 4)
	ste := &p2c.StaleState{}
	ref := 20 * time.Millisecond
	ste.Decay(e, ref, 3, 0.5, 4, 32)
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
	ste.Decay(e, ref, 3, 0.5, 4, 32)
	if got, want := e.Latency(), 80*time.Millisecond; got != want {
		t.Errorf("Latency() after a fast failure and a tick = %v, want %v", got, want)
	}
	// A cancellation by the caller is no failure of the pod.
	c := strategytest.Sampled(clk, 0.5, 4)
	stc := &p2c.StaleState{}
	c.Picked()
	c.Finish(codes.Canceled)
	stc.Decay(c, ref, 3, 0.5, 4, 32)
	if got := c.Latency(); got != 0 {
		t.Errorf("Latency() after a cancellation and a tick = %v, want 0", got)
	}
}
