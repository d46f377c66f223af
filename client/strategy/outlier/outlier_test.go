package outlier_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/fairway-lb/fairway/client/strategy"
	"github.com/fairway-lb/fairway/client/strategy/outlier"
	"github.com/fairway-lb/fairway/client/strategy/strategytest"
)

const chain = `[{"outlier":{"interval":"1s","base_ejection_time":"30s","max_ejection_time":"100s","max_ejection_percent":20,"consecutive_failures":0}},{"round_robin":{}}]`

// round feeds one interval of traffic: bad endpoints fail every call.
func round(eps []*strategy.Endpoint, bad map[int]bool) {
	for i, e := range eps {
		c := codes.OK
		if bad[i] {
			c = codes.Unavailable
		}
		strategytest.Record(e, 20, c)
	}
}

func picked(t *testing.T, s strategy.Strategy, set strategy.Set) map[string]int {
	t.Helper()
	return strategytest.Count(t, context.Background(), s.Build(set), 100*len(set.Cands))
}

func TestOutlier_EjectsFailingEndpointAndReadmits(t *testing.T) {
	eps := strategytest.Endpoints(5, nil)
	s, _ := strategytest.Chain(t, chain, nil, 1)
	now := strategytest.Start
	s.Tick(strategytest.Set(eps, "", now)) // baseline

	round(eps, map[int]bool{2: true})
	now = now.Add(time.Second)
	if !s.Tick(strategytest.Set(eps, "", now)) {
		t.Fatal("Tick after failures = false, want a rebuild")
	}
	if !eps[2].Excluded(now) {
		t.Fatal("failing endpoint not ejected")
	}
	if got := picked(t, s, strategytest.Set(eps, "", now)); got[eps[2].Addr] != 0 {
		t.Errorf("ejected endpoint got %d picks, want 0", got[eps[2].Addr])
	}

	// Still ejected just before base_ejection_time, re-admitted after.
	now = now.Add(29 * time.Second)
	s.Tick(strategytest.Set(eps, "", now))
	if !eps[2].Excluded(now) {
		t.Fatal("endpoint re-admitted before base_ejection_time")
	}
	now = now.Add(time.Second)
	if !s.Tick(strategytest.Set(eps, "", now)) || eps[2].Excluded(now) {
		t.Fatal("endpoint not re-admitted after base_ejection_time")
	}
	if got := picked(t, s, strategytest.Set(eps, "", now)); got[eps[2].Addr] == 0 {
		t.Error("re-admitted endpoint gets no picks")
	}

	// Failing again: the second ejection lasts twice as long.
	round(eps, map[int]bool{2: true})
	now = now.Add(time.Second)
	s.Tick(strategytest.Set(eps, "", now))
	if got, want := eps[2].ExcludedUntil(), now.Add(60*time.Second); !got.Equal(want) {
		t.Errorf("second ejection until %v, want %v", got, want)
	}
	if got := eps[2].Exclusions(); got != 2 {
		t.Errorf("Ejections = %d, want 2", got)
	}
}

func TestOutlier_CapsEjections(t *testing.T) {
	eps := strategytest.Endpoints(5, nil) // 20% of 5: one endpoint
	s, _ := strategytest.Chain(t, chain, nil, 1)
	now := strategytest.Start
	s.Tick(strategytest.Set(eps, "", now))
	for range 3 {
		round(eps, map[int]bool{0: true, 1: true, 3: true})
		now = now.Add(time.Second)
		s.Tick(strategytest.Set(eps, "", now))
	}
	ejected := 0
	for _, e := range eps {
		if e.Excluded(now) {
			ejected++
		}
	}
	if ejected != 1 {
		t.Errorf("%d endpoints ejected, want 1 (max_ejection_percent 20 of 5)", ejected)
	}
}

func TestOutlier_NoEjectionWhenAllFailAlike(t *testing.T) {
	eps := strategytest.Endpoints(4, nil)
	s, _ := strategytest.Chain(t, chain, nil, 1)
	now := strategytest.Start
	s.Tick(strategytest.Set(eps, "", now))
	round(eps, map[int]bool{0: true, 1: true, 2: true, 3: true})
	now = now.Add(time.Second)
	s.Tick(strategytest.Set(eps, "", now))
	for _, e := range eps {
		if e.Excluded(now) {
			t.Errorf("%s ejected though its peers fail alike", e.Addr)
		}
	}
}

func TestOutlier_ConsecutiveFailuresAndCodes(t *testing.T) {
	eps := strategytest.Endpoints(5, nil)
	s, _ := strategytest.Chain(t, `[{"outlier":{"consecutive_failures":5,"failure_codes":["UNAVAILABLE"]}},{"p2c":{}}]`, nil, 1)
	now := strategytest.Start
	s.Tick(strategytest.Set(eps, "", now))
	strategytest.Record(eps[0], 10, codes.Internal) // not a failure code here
	strategytest.Record(eps[1], 5, codes.Unavailable)
	now = now.Add(100 * time.Millisecond) // a tick, well within the interval
	s.Tick(strategytest.Set(eps, "", now))
	if eps[0].Excluded(now) {
		t.Error("endpoint ejected for a code outside failure_codes")
	}
	if !eps[1].Excluded(now) {
		t.Error("endpoint with 5 consecutive failures not ejected")
	}
}

func TestOutlier_ParseConfig(t *testing.T) {
	b, _ := strategy.Get(outlier.Name)
	for raw, want := range map[string]string{
		`{"max_ejection_percent":101}`: "fairway/outlier: max_ejection_percent 101 must be within 0–100",
		`{"failure_codes":["NOPE"]}`:   `fairway/outlier: failure_codes: unknown gRPC code "NOPE"`,
		`{"interval":"x"}`:             `fairway/outlier: invalid config: time: invalid duration "x"`,
		`{"max_ejection_time":"1s"}`:   "fairway/outlier: max_ejection_time must be >= base_ejection_time",
		`{"window":"500ms"}`:           "fairway/outlier: window must be >= interval",
		`{"window":"61s"}`:             "fairway/outlier: window must be at most 60 intervals",
	} {
		if _, err := b.ParseConfig([]byte(raw)); err == nil || err.Error() != want {
			t.Errorf("ParseConfig(%s) error = %v, want %q", raw, err, want)
		}
	}
	cfg, err := b.ParseConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if m := cfg.(*outlier.Config).Mask(); m != strategy.MaskOf(codes.Unavailable, codes.Internal, codes.Unknown, codes.DeadlineExceeded, codes.ResourceExhausted) {
		t.Errorf("default failure codes mask = %b", m)
	}
}

// trickle feeds one interval of low-rate traffic: one call per endpoint,
// failing on bad endpoints when fail is true.
func trickle(eps []*strategy.Endpoint, bad int, fail bool) {
	for i, e := range eps {
		c := codes.OK
		if i == bad && fail {
			c = codes.Unavailable
		}
		strategytest.Record(e, 1, c)
	}
}

func TestOutlier_LowRateEndpointJudgedOverWindow(t *testing.T) {
	// Defaults: 1 s interval, 10 s window, 5 calls at least; consecutive
	// failures off so that only the rate can eject.
	eps := strategytest.Endpoints(5, nil)
	s, _ := strategytest.Chain(t, `[{"outlier":{"consecutive_failures":0}},{"round_robin":{}}]`, nil, 1)
	now := strategytest.Start
	s.Tick(strategytest.Set(eps, "", now))
	// One call a second to each endpoint; endpoint 2 fails every other one.
	// Four intervals hold 4 calls: too few to judge.
	for i := range 4 {
		trickle(eps, 2, i%2 == 0)
		now = now.Add(time.Second)
		s.Tick(strategytest.Set(eps, "", now))
	}
	if eps[2].Excluded(now) {
		t.Fatal("ejected after 4 calls, want at least min_requests (5)")
	}
	for i := range 6 {
		trickle(eps, 2, i%2 == 0)
		now = now.Add(time.Second)
		s.Tick(strategytest.Set(eps, "", now))
		if eps[2].Excluded(now) {
			break
		}
	}
	if !eps[2].Excluded(now) {
		t.Fatal("endpoint failing half of its calls at 1 call/s not ejected within the 10 s window")
	}
	for i, e := range eps {
		if i != 2 && e.Excluded(now) {
			t.Errorf("healthy %s ejected", e.Addr)
		}
	}
}

func TestOutlier_OldFailuresLeaveWindow(t *testing.T) {
	eps := strategytest.Endpoints(5, nil)
	s, _ := strategytest.Chain(t, `[{"outlier":{"consecutive_failures":0,"window":"3s","min_requests":3}},{"round_robin":{}}]`, nil, 1)
	now := strategytest.Start
	s.Tick(strategytest.Set(eps, "", now))
	step := func(calls func()) {
		if calls != nil {
			calls()
		}
		now = now.Add(time.Second)
		s.Tick(strategytest.Set(eps, "", now))
	}
	// Two failures (too few calls to judge), three quiet seconds, then
	// three calls of which one fails: the window holds 1 failure in 3.
	// Counted since the start it would be 3 in 5 (60%).
	step(func() { trickle(eps, 2, true) })
	step(func() { trickle(eps, 2, true) })
	step(nil)
	step(nil)
	step(nil)
	step(func() {
		trickle(eps, 2, true)
		trickle(eps, 2, false)
		trickle(eps, 2, false)
	})
	if got := eps[2].Exclusions(); got != 0 {
		t.Errorf("Ejections = %d, want 0: failures older than the window must not count", got)
	}
	// Two more failures within the window: 3 of 5, ejected.
	step(func() {
		trickle(eps, 2, true)
		trickle(eps, 2, true)
	})
	if !eps[2].Excluded(now) {
		t.Error("endpoint with 3 failures in 5 calls within the window not ejected")
	}
}
