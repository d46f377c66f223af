package balancer

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy"
)

func TestPicker_TimesOneRequestPerArm(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e := strategy.NewEndpoint("10.0.0.1:80", endpointattr.Info{}, clk.Now())
	e.Done, e.TimedDone = e.FinishDone, e.FinishTimed
	e.SetLatencyConfig(clk, 0.5, 5)
	p := newPicker(strategy.PickerFunc(func(context.Context) (*strategy.Endpoint, error) { return e, nil }))
	info := balancer.PickInfo{Ctx: context.Background()}

	first, err := p.Pick(info)
	if err != nil {
		t.Fatal(err)
	}
	second, err := p.Pick(info)
	if err != nil {
		t.Fatal(err)
	}
	clk.Step(25 * time.Millisecond)
	second.Done(balancer.DoneInfo{}) // untimed: no sample
	if got := e.Latency(); got != 0 {
		t.Fatalf("Latency after the untimed request = %v, want 0", got)
	}
	first.Done(balancer.DoneInfo{}) // timed
	if got, want := e.Latency(), 25*time.Millisecond; got != want {
		t.Errorf("Latency after the timed request = %v, want %v", got, want)
	}
	if got := e.InFlight(); got != 0 {
		t.Errorf("InFlight = %d, want 0", got)
	}
	if got := testing.AllocsPerRun(100, func() {
		r, _ := p.Pick(info)
		r.Done(balancer.DoneInfo{})
	}); got != 0 {
		t.Errorf("allocs per pick = %v, want 0", got)
	}
}
