package slowstart_test

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy"
	"github.com/fairway-lb/fairway/client/strategy/slowstart"
	"github.com/fairway-lb/fairway/client/strategy/strategytest"
)

func TestSlowStart_FollowsEnvoyFormula(t *testing.T) {
	clk := testingclock.NewFakeClock(strategytest.Start)
	eps := strategytest.Endpoints(2, func(int) endpointattr.Info { return endpointattr.Info{Weight: 4} })
	eps[1].Initial = false // arrived after the first update, at Start
	s, _ := strategytest.Chain(t, `[{"slow_start":{"window":"10s","aggression":2,"min_weight_percent":10}},{"weighted":{}}]`, clk, 1)

	for _, tc := range []struct {
		at   time.Duration
		want float64 // effective weight of the new endpoint
	}{
		{0, 4 * 0.1},                       // floor
		{100 * time.Millisecond, 4 * 0.1},  // (0.01)^(1/2) = 0.1
		{2500 * time.Millisecond, 4 * 0.5}, // (0.25)^(1/2)
		{6400 * time.Millisecond, 4 * 0.8}, // (0.64)^(1/2)
		{10 * time.Second, 4},              // window over
		{time.Minute, 4},
	} {
		now := strategytest.Start.Add(tc.at)
		s.Build(strategytest.Set(eps, "", now))
		if got := eps[1].EffectiveWeight(); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("at %v: effective weight %v, want %v", tc.at, got, tc.want)
		}
		if got := eps[0].EffectiveWeight(); got != 4 {
			t.Errorf("at %v: initial endpoint's effective weight %v, want 4 (not ramped)", tc.at, got)
		}
	}
}

func TestSlowStart_TickRebuildsWhileRamping(t *testing.T) {
	eps := strategytest.Endpoints(2, nil)
	eps[1].Initial = false
	s, _ := strategytest.Chain(t, `[{"slow_start":{"window":"1s"}},{"p2c":{}}]`, nil, 1)
	var got []bool
	for _, at := range []time.Duration{0, 500 * time.Millisecond, 1100 * time.Millisecond, 1200 * time.Millisecond} {
		got = append(got, s.Tick(strategytest.Set(eps, "", strategytest.Start.Add(at))))
	}
	if diff := cmp.Diff(got, []bool{true, true, true, false}); diff != "" {
		t.Errorf("Tick results (-got +want):\n%s", diff)
	}
}

func TestSlowStart_Factor(t *testing.T) {
	c := &slowstart.Config{Window: strategy.Duration(30 * time.Second), Aggression: 1, MinWeightPercent: 10}
	if got := c.Factor(15 * time.Second); got != 0.5 {
		t.Errorf("Factor(15s) = %v, want 0.5 (linear)", got)
	}
	b, _ := strategy.Get(slowstart.Name)
	if _, err := b.ParseConfig([]byte(`{"aggression":0}`)); err == nil || err.Error() != "fairway/slow_start: aggression 0 must be > 0" {
		t.Errorf("ParseConfig(aggression 0) error = %v", err)
	}
}
