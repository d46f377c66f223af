package p2c_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"

	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy"
	"github.com/fairway-lb/fairway/client/strategy/p2c"
	"github.com/fairway-lb/fairway/client/strategy/strategytest"
)

func TestP2C_PrefersLessLoaded(t *testing.T) {
	eps := strategytest.Endpoints(10, nil)
	strategytest.SetInFlight(eps[0], 50) // heavily loaded
	strategytest.SetInFlight(eps[1], 1)  // slightly loaded
	s, _ := strategytest.Chain(t, `[{"p2c":{}}]`, nil, 1)
	p := s.Build(strategytest.Set(eps, "", strategytest.Start))
	got := strategytest.Count(t, context.Background(), p, 10000)
	if got[eps[0].Addr] != 0 {
		t.Errorf("loaded endpoint got %d picks, want 0", got[eps[0].Addr])
	}
	// eps[1] only wins against eps[0]: pairs {0,1} are 2/90 of draws.
	if n := got[eps[1].Addr]; n > 400 {
		t.Errorf("slightly loaded endpoint got %d picks, want about 222", n)
	}
	for _, e := range eps[2:] {
		if n := got[e.Addr]; n < 1000 {
			t.Errorf("%s got %d picks, want about 1200", e.Addr, n)
		}
	}
}

// TestP2C_PairsUniform checks the two-index draw: with endpoint i carrying
// i requests, a pick returns the lower index of the pair drawn, so
// endpoint i must win 2(n-1-i)/(n(n-1)) of the picks, and the most loaded
// one none.
func TestP2C_PairsUniform(t *testing.T) {
	for _, n := range []int{2, 3, 7, 1000} {
		eps := strategytest.Endpoints(n, nil)
		for i, e := range eps {
			strategytest.SetInFlight(e, int64(i))
		}
		s, _ := strategytest.Chain(t, `[{"p2c":{}}]`, nil, uint64(n))
		picks := 200 * n * n
		if n > 100 {
			picks = 2_000_000
		}
		got := strategytest.Count(t, context.Background(), s.Build(strategytest.Set(eps, "", strategytest.Start)), picks)
		if c := got[eps[n-1].Addr]; c != 0 {
			t.Errorf("n=%d: the most loaded endpoint won %d picks", n, c)
		}
		for i, e := range eps[:min(n-1, 10)] {
			want := float64(picks) * 2 * float64(n-1-i) / float64(n*(n-1))
			// 5 standard deviations of a binomial count.
			if c := float64(got[e.Addr]); math.Abs(c-want) > 5*math.Sqrt(want) {
				t.Errorf("n=%d: endpoint %d won %v picks, want %.0f ± %.0f", n, i, c, want, 5*math.Sqrt(want))
			}
		}
	}
}

// TestP2C_PairsDistinct loads one endpoint at a time: it can win only a
// pair that draws it twice, which must never happen.
func TestP2C_PairsDistinct(t *testing.T) {
	const n = 5
	for loaded := range n {
		eps := strategytest.Endpoints(n, nil)
		strategytest.SetInFlight(eps[loaded], 1)
		s, _ := strategytest.Chain(t, `[{"p2c":{}}]`, nil, uint64(loaded))
		got := strategytest.Count(t, context.Background(), s.Build(strategytest.Set(eps, "", strategytest.Start)), 20000)
		if c := got[eps[loaded].Addr]; c != 0 {
			t.Errorf("loaded endpoint %d of %d won %d of 20000 picks: a pair drew it twice", loaded, n, c)
		}
	}
}

func TestP2C_WeightDividesLoad(t *testing.T) {
	eps := strategytest.Endpoints(2, func(i int) endpointattr.Info { return endpointattr.Info{Weight: uint32(1 + 3*i)} })
	strategytest.SetInFlight(eps[0], 3) // load 4/1
	strategytest.SetInFlight(eps[1], 9) // load 10/4: less
	s, _ := strategytest.Chain(t, `[{"p2c":{}}]`, nil, 1)
	got := strategytest.Count(t, context.Background(), s.Build(strategytest.Set(eps, "", strategytest.Start)), 100)
	if diff := cmp.Diff(got, map[string]int{eps[1].Addr: 100}); diff != "" {
		t.Errorf("picks (-got +want):\n%s", diff)
	}
}

func TestP2C_LatencyAware(t *testing.T) {
	eps := strategytest.Endpoints(2, nil)
	eps[0].ObserveLatency(100*time.Millisecond, 0.1)
	eps[1].ObserveLatency(10*time.Millisecond, 0.1)
	strategytest.SetInFlight(eps[1], 3) // 4 × 10ms < 1 × 100ms
	s, _ := strategytest.Chain(t, `[{"p2c":{"latency_aware":true}}]`, nil, 1)
	for chain, want := range map[string]strategy.Needs{
		`[{"p2c":{"latency_aware":true}}]`:                                       {LatencyAlpha: 0.1, FailurePenalty: 5},
		`[{"p2c":{"latency_aware":true,"decay_alpha":0.3,"failure_penalty":2}}]`: {LatencyAlpha: 0.3, FailurePenalty: 2},
		`[{"outlier":{}},{"p2c":{}}]`:                                            {},
	} {
		c, err := strategy.ParseChain([]byte(chain))
		if err != nil {
			t.Fatal(err)
		}
		if c.Needs != want {
			t.Errorf("ParseChain(%s).Needs = %+v, want %+v", chain, c.Needs, want)
		}
	}
	got := strategytest.Count(t, context.Background(), s.Build(strategytest.Set(eps, "", strategytest.Start)), 100)
	if diff := cmp.Diff(got, map[string]int{eps[1].Addr: 100}); diff != "" {
		t.Errorf("picks (-got +want):\n%s", diff)
	}
	// Peak EWMA: a higher sample replaces the estimate, a lower one decays it.
	eps[1].ObserveLatency(200*time.Millisecond, 0.1)
	if got := eps[1].Latency(); got != 200*time.Millisecond {
		t.Errorf("after peak, Latency = %v, want 200ms", got)
	}
	eps[1].ObserveLatency(100*time.Millisecond, 0.1)
	if got := eps[1].Latency(); got != 190*time.Millisecond {
		t.Errorf("after decay, Latency = %v, want 190ms", got)
	}
}

func TestP2C_NoCandidates(t *testing.T) {
	s, _ := strategytest.Chain(t, `[{"p2c":{}}]`, nil, 1)
	if _, err := s.Build(strategy.Set{}).Pick(context.Background()); err != strategy.ErrNoEndpoint {
		t.Errorf("Pick = %v, want ErrNoEndpoint", err)
	}
}

func TestP2C_ParseConfig(t *testing.T) {
	b, _ := strategy.Get(p2c.Name)
	for _, tc := range []struct {
		raw, wantErr string
		want         *p2c.Config
	}{
		{raw: ``, want: &p2c.Config{DecayAlpha: 0.1, FailurePenalty: 5}},
		{raw: `{"latency_aware":true,"decay_alpha":0.5}`, want: &p2c.Config{LatencyAware: true, DecayAlpha: 0.5, FailurePenalty: 5}},
		{raw: `{"decay_alpha":2}`, wantErr: "fairway/p2c: decay_alpha 2 must be in (0, 1]"},
		{raw: `{"bogus":1}`, wantErr: `fairway/p2c: invalid config: json: unknown field "bogus"`},
	} {
		got, err := b.ParseConfig([]byte(tc.raw))
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("ParseConfig(%s) error = %v, want %q", tc.raw, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("ParseConfig(%s): %v", tc.raw, err)
		}
		if diff := cmp.Diff(got, tc.want); diff != "" {
			t.Errorf("ParseConfig(%s) (-got +want):\n%s", tc.raw, diff)
		}
	}
}

func TestP2C_StaleSlowEstimateDecays(t *testing.T) {
	eps := strategytest.Endpoints(2, nil)
	eps[0].ObserveLatency(100*time.Millisecond, 0.1) // measured slow once
	eps[1].ObserveLatency(10*time.Millisecond, 0.1)
	s, _ := strategytest.Chain(t, `[{"p2c":{"latency_aware":true}}]`, nil, 1)
	set := strategytest.Set(eps, "", strategytest.Start)
	p := s.Build(set)
	if got := strategytest.Count(t, context.Background(), p, 100); got[eps[0].Addr] != 0 {
		t.Fatalf("slow endpoint got %d of 100 picks before decay, want 0", got[eps[0].Addr])
	}
	// eps[1] keeps being picked; eps[0] is not: after a second of ticks its
	// estimate moves toward the reference (the mean of 10 ms and 40 ms, the
	// slow one counted at most 4 × the fastest) until it wins again.
	for i := 0; i < 80; i++ {
		eps[1].Picked()
		eps[1].Finish(codes.OK)
		if s.Tick(set) {
			t.Errorf("Tick %d asked for a rebuild, want none", i)
		}
	}
	if got := eps[1].Latency(); got != 10*time.Millisecond {
		t.Errorf("busy endpoint's Latency = %v, want 10ms unchanged", got)
	}
	if got := eps[0].Latency(); got >= 30*time.Millisecond {
		t.Errorf("idle endpoint's Latency after 80 ticks = %v, want < 30ms", got)
	}
	if got := strategytest.Count(t, context.Background(), p, 100); got[eps[0].Addr] != 0 {
		t.Fatalf("endpoint with a 25 ms estimate beat one of 10 ms: %v", got)
	}
}

func TestP2C_UnmeasuredEndpointCountsAsTypical(t *testing.T) {
	// Two endpoints measured at 10 and 30 ms (reference 20 ms), one not
	// measured. It competes as a 20 ms endpoint: it beats the 30 ms one and
	// loses to the 10 ms one, instead of winning every comparison.
	eps := strategytest.Endpoints(3, nil)
	eps[0].ObserveLatency(10*time.Millisecond, 0.1)
	eps[1].ObserveLatency(30*time.Millisecond, 0.1)
	s, _ := strategytest.Chain(t, `[{"p2c":{"latency_aware":true}}]`, nil, 1)
	set := strategytest.Set(eps, "", strategytest.Start)
	s.Tick(set)
	got := strategytest.Count(t, context.Background(), s.Build(set), 3000)
	// Each pair is drawn a third of the time: eps[0] wins 2 pairs, eps[2] one.
	if got[eps[1].Addr] != 0 || got[eps[0].Addr] < 1800 || got[eps[2].Addr] < 800 || got[eps[2].Addr] > 1200 {
		t.Errorf("picks = %v, want ≈2000 for %s, ≈1000 for the unmeasured %s, 0 for %s", got, eps[0].Addr, eps[2].Addr, eps[1].Addr)
	}
}
