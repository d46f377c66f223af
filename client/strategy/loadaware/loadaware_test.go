package loadaware_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/client/strategy"
	"github.com/fairway-lb/fairway/client/strategy/loadaware"
	"github.com/fairway-lb/fairway/client/strategy/strategytest"
)

func build(t *testing.T, chain string, clk *testingclock.FakeClock, probe func(*strategy.Endpoint)) (strategy.Strategy, strategy.BuildOptions) {
	t.Helper()
	c, err := strategy.ParseChain([]byte(chain))
	if err != nil {
		t.Fatal(err)
	}
	s, opts := strategytest.Chain(t, chain, clk, 7)
	if probe != nil {
		// Rebuild with the probe: strategytest has no option for it.
		opts.Probe = probe
		s, opts = c.Build(opts)
	}
	return s, opts
}

func report(eps []*strategy.Endpoint, now time.Time, rif func(i int) float64) {
	for i, e := range eps {
		if r := rif(i); r >= 0 {
			e.ReportLoadAt(r, strategy.Stamp(now))
		}
	}
}

func TestLoadAware_HotEndpointGetsNothing(t *testing.T) {
	clk := testingclock.NewFakeClock(strategytest.Start)
	eps := strategytest.Endpoints(10, nil)
	report(eps, clk.Now(), func(i int) float64 { return map[bool]float64{true: 40, false: 1}[i == 0] })
	s, _ := build(t, `[{"load_aware":{}}]`, clk, nil)
	set := strategytest.Set(eps, "", clk.Now())
	s.Tick(set)
	got := strategytest.Count(t, context.Background(), s.Build(set), 10000)
	if got[eps[0].Addr] != 0 {
		t.Errorf("endpoint reporting 40 in flight got %d of 10000 picks, want 0", got[eps[0].Addr])
	}
	for _, e := range eps[1:] {
		if n := got[e.Addr]; n < 700 {
			t.Errorf("%s got %d picks, want about 1111", e.Addr, n)
		}
	}
}

// TestLoadAware_NoReportsIsP2C: without reports every candidate is
// unknown and ranked by its own in-flight count, as p2c ranks them.
func TestLoadAware_NoReportsIsP2C(t *testing.T) {
	eps := strategytest.Endpoints(10, nil)
	strategytest.SetInFlight(eps[0], 50)
	s, _ := build(t, `[{"load_aware":{}}]`, nil, nil)
	got := strategytest.Count(t, context.Background(), s.Build(strategytest.Set(eps, "", strategytest.Start)), 10000)
	if got[eps[0].Addr] != 0 {
		t.Errorf("endpoint with 50 in flight got %d picks, want 0", got[eps[0].Addr])
	}
}

// TestLoadAware_StaleAndReusedReportsExpire: a report stops counting after
// max_age, or after reuse requests sent on it.
func TestLoadAware_StaleAndReusedReportsExpire(t *testing.T) {
	for _, tc := range []struct {
		name  string
		age   time.Duration
		picks int
	}{
		{name: "fresh", age: 0, picks: 0},
		{name: "old", age: 2 * time.Second, picks: 0},
		{name: "reused", age: 0, picks: 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := testingclock.NewFakeClock(strategytest.Start)
			eps := strategytest.Endpoints(2, nil)
			// eps[1] reports itself idle and is slightly loaded by this
			// client: with its report it wins (cold beats unknown), without
			// it eps[0] does (fewer requests in flight).
			report(eps, clk.Now(), func(i int) float64 { return float64(i - 1) })
			strategytest.Record(eps[1], tc.picks, 0)
			strategytest.SetInFlight(eps[1], 1)
			clk.Step(tc.age)
			s, _ := build(t, `[{"load_aware":{"max_age":"1s","reuse":16}}]`, clk, nil)
			set := strategytest.Set(eps, "", clk.Now())
			s.Tick(set)
			e, _ := s.Build(set).Pick(context.Background())
			fresh := tc.age == 0 && tc.picks == 0
			if want := map[bool]*strategy.Endpoint{true: eps[1], false: eps[0]}[fresh]; e != want {
				t.Errorf("picked %s, want %s", e.Addr, want.Addr)
			}
		})
	}
}

// TestLoadAware_SlowEndpointAvoidedWhateverItReports: an endpoint measured
// slow (or failing) ranks last even when it reports itself idle.
func TestLoadAware_SlowEndpointAvoidedWhateverItReports(t *testing.T) {
	clk := testingclock.NewFakeClock(strategytest.Start)
	eps := strategytest.Endpoints(5, nil)
	for i, e := range eps {
		e.SetLatencyConfig(clk, 0.1, 5)
		e.ObserveLatency(map[bool]time.Duration{true: 200 * time.Millisecond, false: 20 * time.Millisecond}[i == 0], 0.1)
	}
	report(eps, clk.Now(), func(i int) float64 { return map[bool]float64{true: 0, false: 3}[i == 0] })
	s, _ := build(t, `[{"load_aware":{}}]`, clk, nil)
	set := strategytest.Set(eps, "", clk.Now())
	s.Tick(set)
	got := strategytest.Count(t, context.Background(), s.Build(set), 5000)
	if got[eps[0].Addr] != 0 {
		t.Errorf("slow endpoint got %d picks, want 0", got[eps[0].Addr])
	}
}

// TestLoadAware_ProbesOnlyWhatItDoesNotKnow: with probe_rate 1 every
// sampled candidate without a fresh report is probed, and no other.
func TestLoadAware_ProbesOnlyWhatItDoesNotKnow(t *testing.T) {
	clk := testingclock.NewFakeClock(strategytest.Start)
	eps := strategytest.Endpoints(4, nil)
	report(eps, clk.Now(), func(i int) float64 { return map[bool]float64{true: 1, false: -1}[i < 2] })
	probed := map[*strategy.Endpoint]int{}
	s, _ := build(t, `[{"load_aware":{"probe_rate":1}}]`, clk, func(e *strategy.Endpoint) { probed[e]++ })
	set := strategytest.Set(eps, "", clk.Now())
	s.Tick(set)
	strategytest.Count(t, context.Background(), s.Build(set), 1000)
	if probed[eps[0]]+probed[eps[1]] != 0 {
		t.Errorf("endpoints with fresh reports probed %d and %d times, want 0", probed[eps[0]], probed[eps[1]])
	}
	// Each pick samples 2 of 4: an unreported endpoint is in half of them.
	for _, e := range eps[2:] {
		if n := probed[e]; n < 400 || n > 600 {
			t.Errorf("%s probed %d times in 1000 picks, want about 500", e.Addr, n)
		}
	}
}

func TestLoadAware_PickAllocatesNothing(t *testing.T) {
	clk := testingclock.NewFakeClock(strategytest.Start)
	eps := strategytest.Endpoints(100, nil)
	report(eps, clk.Now(), func(i int) float64 { return float64(i%3) - 1 })
	var probes int
	s, _ := build(t, `[{"load_aware":{"probe_rate":1}}]`, clk, func(*strategy.Endpoint) { probes++ })
	set := strategytest.Set(eps, "", clk.Now())
	s.Tick(set)
	p := s.Build(set)
	ctx := context.Background()
	if got := testing.AllocsPerRun(1000, func() { _, _ = p.Pick(ctx) }); got != 0 {
		t.Errorf("allocs per pick = %v, want 0", got)
	}
	if probes == 0 {
		t.Error("no probe asked for: the allocation test did not cover the probe path")
	}
}

func TestLoadAware_ParseConfig(t *testing.T) {
	b, _ := strategy.Get(loadaware.Name)
	def := loadaware.Config{ProbeRate: 0.1, Reuse: 16, MaxAge: strategy.Duration(100 * time.Millisecond), Quantile: 0.75,
		DecayAlpha: 0.1, FailurePenalty: 5}
	for _, tc := range []struct {
		raw     string
		want    func(*loadaware.Config)
		wantErr string
	}{
		{raw: ``, want: func(*loadaware.Config) {}},
		{raw: `{"probe_rate":0,"reuse":3,"max_age":"250ms","quantile":0.5,"oob_interval":"2s"}`, want: func(c *loadaware.Config) {
			c.ProbeRate, c.Reuse, c.MaxAge, c.Quantile, c.OOBInterval = 0, 3, strategy.Duration(250*time.Millisecond), 0.5, strategy.Duration(2*time.Second)
		}},
		{raw: `{"probe_rate":1.5}`, wantErr: "fairway/load_aware: probe_rate 1.5 must be within [0, 1]"},
		{raw: `{"reuse":0}`, wantErr: "fairway/load_aware: reuse 0 must be within 1–1000"},
		{raw: `{"max_age":0}`, wantErr: "fairway/load_aware: max_age 0s must be within (0, 24h]"},
		{raw: `{"quantile":0}`, wantErr: "fairway/load_aware: quantile 0 must be within (0, 1]"},
		{raw: `{"oob_interval":"-1s"}`, wantErr: "fairway/load_aware: oob_interval -1s must not be negative"},
		{raw: `{"failure_penalty":0.5}`, wantErr: "fairway/load_aware: failure_penalty 0.5 must be >= 1"},
		{raw: `{"nope":1}`, wantErr: `fairway/load_aware: invalid config: json: unknown field "nope"`},
	} {
		got, err := b.ParseConfig(json.RawMessage(tc.raw))
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("ParseConfig(%s) error = %v, want %q", tc.raw, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseConfig(%s): %v", tc.raw, err)
			continue
		}
		want := def
		tc.want(&want)
		if diff := cmp.Diff(got, &want); diff != "" {
			t.Errorf("ParseConfig(%s) (-got +want):\n%s", tc.raw, diff)
		}
	}
	c, _ := strategy.ParseChain([]byte(`[{"load_aware":{"oob_interval":"2s"}}]`))
	if got := c.Needs; got.OOBInterval != 2*time.Second || got.LatencyAlpha != 0.1 {
		t.Errorf("Needs = %+v, want OOBInterval 2s and LatencyAlpha 0.1", got)
	}
}

// TestLoadAware_UnderWrappers: slow_start's ramped weight and outlier's
// ejection reach load_aware's choice as they reach p2c's.
func TestLoadAware_UnderWrappers(t *testing.T) {
	clk := testingclock.NewFakeClock(strategytest.Start)
	eps := strategytest.Endpoints(4, nil)
	eps[3].Initial, eps[3].Added = false, clk.Now() // just joined: 10% of its weight
	for _, e := range eps[:3] {
		strategytest.SetInFlight(e, 1) // busier than the newcomer, by this client's count
	}
	report(eps, clk.Now(), func(i int) float64 { return -1 })
	s, _ := build(t, `[{"slow_start":{}},{"outlier":{}},{"load_aware":{}}]`, clk, nil)
	set := strategytest.Set(eps, "", clk.Now())
	s.Tick(set)
	got := strategytest.Count(t, context.Background(), s.Build(set), 6000)
	// Unknown class: (in flight + 1) / weight is 2 for the others, 10 for
	// the newcomer, which never wins.
	if got[eps[3].Addr] != 0 {
		t.Errorf("ramping endpoint got %d of 6000 picks, want 0", got[eps[3].Addr])
	}
	// Failures make the outlier wrapper eject eps[0].
	strategytest.Record(eps[0], 200, codes.Unavailable)
	for range 3 {
		clk.Step(time.Second)
		s.Tick(strategytest.Set(eps, "", clk.Now()))
	}
	if !eps[0].Excluded(clk.Now()) {
		t.Fatal("outlier did not eject the failing endpoint")
	}
	got = strategytest.Count(t, context.Background(), s.Build(strategytest.Set(eps, "", clk.Now())), 6000)
	if got[eps[0].Addr] != 0 {
		t.Errorf("failing endpoint got %d of 6000 picks after ejection, want 0", got[eps[0].Addr])
	}
}

// TestLoadAware_TiesGoToTheLessPicked: like endpoints without reports tie
// in their class, and the ties go to the one this client has sent fewer
// requests per unit of weight, so its requests are spread as evenly as
// round robin deals them, where random tie-breaking would leave the
// counts about ±3 standard deviations (±90 here) apart.
func TestLoadAware_TiesGoToTheLessPicked(t *testing.T) {
	eps := strategytest.Endpoints(10, nil)
	s, _ := build(t, `[{"load_aware":{"probe_rate":0}}]`, nil, nil)
	p := s.Build(strategytest.Set(eps, "", strategytest.Start))
	got := map[string]int{}
	for range 10000 {
		e, err := p.Pick(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		e.Picked() // as the Pool records a pick
		e.Finish(codes.OK)
		got[e.Addr]++
	}
	lo, hi := 10000, 0
	for _, e := range eps {
		lo, hi = min(lo, got[e.Addr]), max(hi, got[e.Addr])
	}
	if hi-lo > 10 {
		t.Errorf("picks per endpoint %d to %d (%v), want within 10 of each other", lo, hi, got)
	}
}

// TestLoadAware_FailingEndpointRankedHot: an endpoint whose report says it
// fails (eps over rps above strategy.FailingShare) gets nothing against
// peers with little load, however idle it reports itself, also after
// max_age and reuse have made its report stale, until 20 × max_age have
// passed.
func TestLoadAware_FailingEndpointRankedHot(t *testing.T) {
	clk := testingclock.NewFakeClock(strategytest.Start)
	eps := strategytest.Endpoints(10, nil)
	report(eps[1:], clk.Now(), func(int) float64 { return 3 })
	eps[0].ReportFailingAt(0, strategy.Stamp(clk.Now()))
	s, _ := build(t, `[{"load_aware":{}}]`, clk, nil)
	for _, tc := range []struct {
		after time.Duration
		want  func(n int) bool
	}{
		{0, func(n int) bool { return n == 0 }},
		{time.Second, func(n int) bool { return n == 0 }},
		{3 * time.Second, func(n int) bool { return n > 500 }},
	} {
		set := strategytest.Set(eps, "", strategytest.Start.Add(tc.after))
		s.Tick(set)
		got := strategytest.Count(t, context.Background(), s.Build(set), 10000)
		if n := got[eps[0].Addr]; !tc.want(n) {
			t.Errorf("%v after its report: the failing endpoint got %d of 10000 picks", tc.after, n)
		}
	}
}
