package strategy_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy"
	"github.com/fairway-lb/fairway/client/strategy/strategytest"
)

func TestEndpointSample_OneTimedRequestPerArm(t *testing.T) {
	clk := testingclock.NewFakeClock(strategytest.Start)
	e := strategytest.Sampled(clk, 0.5, 4)

	// The first request after SetLatencyConfig is timed, the next ones are
	// not until the slot is armed again.
	e.Picked()
	if !e.StartSample() {
		t.Fatal("first StartSample = false, want true")
	}
	e.Picked()
	if e.StartSample() {
		t.Fatal("second StartSample while one is timed = true, want false")
	}
	e.ArmSample(clk.Now()) // one is in flight: no new sample
	e.Picked()
	if e.StartSample() {
		t.Fatal("StartSample armed while one is in flight = true, want false")
	}
	clk.Step(30 * time.Millisecond)
	e.FinishTimed(balancer.DoneInfo{})
	e.FinishDone(balancer.DoneInfo{})
	e.FinishDone(balancer.DoneInfo{})
	if got, want := e.Latency(), 30*time.Millisecond; got != want {
		t.Errorf("Latency() = %v, want %v", got, want)
	}
	if got := e.InFlight(); got != 0 {
		t.Errorf("InFlight() = %d, want 0", got)
	}

	e.Picked()
	if e.StartSample() {
		t.Fatal("StartSample before ArmSample = true, want false")
	}
	e.FinishDone(balancer.DoneInfo{})
	e.ArmSample(clk.Now())
	e.Picked()
	if !e.StartSample() {
		t.Fatal("StartSample after ArmSample = false, want true")
	}
	clk.Step(10 * time.Millisecond)
	e.FinishTimed(balancer.DoneInfo{})
	// EWMA with alpha 0.5: 30 + 0.5 × (10 − 30) = 20 ms.
	if got, want := e.Latency(), 20*time.Millisecond; got != want {
		t.Errorf("Latency() after a faster sample = %v, want %v", got, want)
	}
}

func TestEndpointSample_FailuresCountAsSlow(t *testing.T) {
	clk := testingclock.NewFakeClock(strategytest.Start)
	e := strategytest.Sampled(clk, 0.5, 4)
	e.Picked()
	e.StartSample()
	clk.Step(10 * time.Millisecond)
	e.FinishTimed(balancer.DoneInfo{})

	// An untimed fast failure raises the estimate to penalty × estimate.
	e.Picked()
	e.FinishDone(balancer.DoneInfo{Err: status.Error(codes.Unavailable, "down")})
	if got, want := e.Latency(), 40*time.Millisecond; got != want {
		t.Errorf("Latency() after an untimed failure = %v, want %v", got, want)
	}
	// So does a timed one.
	e.ArmSample(clk.Now())
	e.Picked()
	e.StartSample()
	clk.Step(time.Millisecond)
	e.FinishTimed(balancer.DoneInfo{Err: status.Error(codes.Unavailable, "down")})
	if got, want := e.Latency(), 160*time.Millisecond; got != want {
		t.Errorf("Latency() after a timed failure = %v, want %v", got, want)
	}
	if got := e.Outcomes(codes.Unavailable); got != 2 {
		t.Errorf("Outcomes(Unavailable) = %d, want 2", got)
	}
}

func TestEndpointSample_LongTimedRequestRaisesEstimate(t *testing.T) {
	clk := testingclock.NewFakeClock(strategytest.Start)
	e := strategytest.Sampled(clk, 0.5, 4)
	e.Picked()
	e.StartSample()
	clk.Step(20 * time.Millisecond)
	e.FinishTimed(balancer.DoneInfo{})
	e.ArmSample(clk.Now())
	e.Picked()
	e.StartSample()
	clk.Step(500 * time.Millisecond)
	e.ArmSample(clk.Now()) // still running: already 500 ms
	if got, want := e.Latency(), 500*time.Millisecond; got != want {
		t.Errorf("Latency() while a slow request runs = %v, want %v", got, want)
	}
}

func TestEndpointSample_OffWithoutConfig(t *testing.T) {
	e := strategy.NewEndpoint("a", endpointattr.Info{}, strategytest.Start)
	e.ArmSample(strategytest.Start)
	e.Picked()
	if e.StartSample() {
		t.Error("StartSample without a latency config = true, want false")
	}
	e.FinishDone(balancer.DoneInfo{Err: status.Error(codes.Unavailable, "down")})
	if got := e.Latency(); got != 0 {
		t.Errorf("Latency() = %v, want 0", got)
	}
}
