package zoneaffinity_test

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy"
	"github.com/fairway-lb/fairway/client/strategy/strategytest"
	"github.com/fairway-lb/fairway/client/strategy/zoneaffinity"
)

// callersChain is zone_affinity over round robin with no capacity margin:
// Envoy's zone-aware routing exactly.
const callersChain = `[{"zone_affinity":{"capacity_margin":0}},{"round_robin":{}}]`

// zones returns counts[i] endpoints in zone names[i], in order.
func zones(names []string, counts []int) []*strategy.Endpoint {
	var total int
	for _, n := range counts {
		total += n
	}
	return strategytest.Endpoints(total, func(i int) endpointattr.Info {
		for j, n := range counts {
			if i < n {
				return endpointattr.Info{Zone: names[j], Weight: 1}
			}
			i -= n
		}
		panic("unreachable")
	})
}

// caller is one client of the service: its own chain, in its own zone.
type caller struct {
	zone string
	s    strategy.Strategy
	opts strategy.BuildOptions
}

func newCaller(t *testing.T, chain, zone string, seed uint64) *caller {
	s, opts := strategytest.Chain(t, chain, nil, seed)
	return &caller{zone: zone, s: s, opts: opts}
}

func (c *caller) set(eps []*strategy.Endpoint, callers map[string]float64, now time.Time) strategy.Set {
	s := strategytest.Set(eps, c.zone, now)
	s.CallerZones = callers
	return s
}

// tick runs one Tick and returns the spill fraction.
func (c *caller) tick(eps []*strategy.Endpoint, callers map[string]float64, now time.Time) float64 {
	c.s.Tick(c.set(eps, callers, now))
	return c.opts.Gauges.Value(zoneaffinity.SpillFraction)
}

// shares picks n times through each caller (picks[i] for callers[i]) and
// returns every endpoint's share of all picks.
func shares(t *testing.T, eps []*strategy.Endpoint, callers map[string]float64, cs []*caller, picks []int) map[string]float64 {
	t.Helper()
	got := map[string]float64{}
	total := 0
	for i, c := range cs {
		c.tick(eps, callers, strategytest.Start)
		for a, n := range strategytest.Count(t, context.Background(), c.s.Build(c.set(eps, callers, strategytest.Start)), picks[i]) {
			got[a] += float64(n)
		}
		total += picks[i]
	}
	for a := range got {
		got[a] /= float64(total)
	}
	return got
}

// checkLoad fails unless every endpoint's share is within 5% of
// wantLoad[its zone] × 1/len(eps); a nil wantLoad means 1 everywhere (even).
func checkLoad(t *testing.T, eps []*strategy.Endpoint, got, wantLoad map[string]float64) {
	t.Helper()
	mean := 1 / float64(len(eps))
	for _, e := range eps {
		want := mean
		if wantLoad != nil {
			want *= wantLoad[e.Info.Zone]
		}
		if s := got[e.Addr]; math.Abs(s-want) > 0.05*want {
			t.Errorf("endpoint %s (zone %s) share = %.4f, want %.4f ± 5%%", e.Addr, e.Info.Zone, s, want)
		}
	}
}

// TestZoneAffinity_CallerAwareSpill runs three callers, one per zone, over
// unequal zones. With capacity_margin 0 (Envoy's zone-aware routing) every
// endpoint ends up with the same share. With the default margin (0.05) a
// zone takes up to 1.05× its fair share before it spills: 4/3/3 pods for
// equal callers spill 1 − 1.05·(0.3/(1/3)) = 0.055 from zones b and c to
// zone a (the one with room), leaving b's and c's pods 1.05× the mean load;
// 2/4/4 pods for callers 0.6/0.2/0.2 spill 1 − 1.05·(0.2/0.6) = 0.65 from
// zone a, leaving its pods 1.05× the mean load.
func TestZoneAffinity_CallerAwareSpill(t *testing.T) {
	names := []string{"a", "b", "c"}
	const defaults = `[{"zone_affinity":{}},{"round_robin":{}}]`
	for _, tc := range []struct {
		name      string
		chain     string
		counts    []int
		callers   map[string]float64
		picks     []int              // per caller, zones a, b, c
		wantSpill map[string]float64 // per caller zone
		wantLoad  map[string]float64 // per endpoint of each zone, relative to the mean; nil: even
	}{
		{
			name:      "margin 0, 7/7/6 endpoints, callers a third each",
			chain:     callersChain,
			counts:    []int{7, 7, 6},
			callers:   map[string]float64{"a": 1.0 / 3, "b": 1.0 / 3, "c": 1.0 / 3},
			picks:     []int{33334, 33333, 33333},
			wantSpill: map[string]float64{"a": 0, "b": 0, "c": 1 - (6.0/20)/(1.0/3)},
		},
		{
			name:      "margin 0, 2/4/4 endpoints, callers 0.6/0.2/0.2",
			chain:     callersChain,
			counts:    []int{2, 4, 4},
			callers:   map[string]float64{"a": 0.6, "b": 0.2, "c": 0.2},
			picks:     []int{60000, 20000, 20000},
			wantSpill: map[string]float64{"a": 2.0 / 3, "b": 0, "c": 0},
		},
		{
			name:      "default margin, 4/3/3 endpoints, callers a third each",
			chain:     defaults,
			counts:    []int{4, 3, 3},
			callers:   map[string]float64{"a": 1.0 / 3, "b": 1.0 / 3, "c": 1.0 / 3},
			picks:     []int{30000, 30000, 30000},
			wantSpill: map[string]float64{"a": 0, "b": 0.055, "c": 0.055},
			// zone a: (1/3 + 2·(1/3)·0.055)/4 = 0.0925 per endpoint; b and c:
			// (1/3)·0.945/3 = 0.105.
			wantLoad: map[string]float64{"a": 0.925, "b": 1.05, "c": 1.05},
		},
		{
			name:      "default margin, 2/4/4 endpoints, callers 0.6/0.2/0.2",
			chain:     defaults,
			counts:    []int{2, 4, 4},
			callers:   map[string]float64{"a": 0.6, "b": 0.2, "c": 0.2},
			picks:     []int{60000, 20000, 20000},
			wantSpill: map[string]float64{"a": 0.65, "b": 0, "c": 0},
			// zone a: 0.6·0.35/2 = 0.105 per endpoint; b and c: 0.2/4 + 0.6·0.65/8 = 0.09875.
			wantLoad: map[string]float64{"a": 1.05, "b": 0.9875, "c": 0.9875},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eps := zones(names, tc.counts)
			var cs []*caller
			for i, z := range names {
				c := newCaller(t, tc.chain, z, uint64(i+1))
				if got := c.tick(eps, tc.callers, strategytest.Start); math.Abs(got-tc.wantSpill[z]) > 0.001 {
					t.Errorf("caller in %s: spill fraction = %v, want %.3f", z, got, tc.wantSpill[z])
				}
				cs = append(cs, c)
			}
			checkLoad(t, eps, shares(t, eps, tc.callers, cs, tc.picks), tc.wantLoad)
		})
	}
}

func TestZoneAffinity_SpillFollowsRemoteExcess(t *testing.T) {
	names := []string{"a", "b", "c"}
	for _, tc := range []struct {
		name    string
		callers map[string]float64
		// want is the share of all picks per zone for a caller in a.
		want map[string]float64
	}{
		// U = 0.2/0.4/0.4; spill 1-0.2/0.5 = 0.6; excess b 0, c 0.3: all to c.
		{name: "zero excess gets nothing", callers: map[string]float64{"a": 0.5, "b": 0.4, "c": 0.1},
			want: map[string]float64{"a": 0.4, "b": 0, "c": 0.6}},
		// Spill 2/3; excess b 0.05, c 0.35: b 1/8, c 7/8 of it.
		{name: "proportional to excess", callers: map[string]float64{"a": 0.6, "b": 0.35, "c": 0.05},
			want: map[string]float64{"a": 1.0 / 3, "b": 2.0 / 3 / 8, "c": 2.0 / 3 * 7 / 8}},
		// Callers name a zone with no endpoints: normalised over a, b, c.
		{name: "zones without endpoints left out", callers: map[string]float64{"a": 0.25, "b": 0.2, "c": 0.05, "d": 0.5},
			want: map[string]float64{"a": 0.4, "b": 0, "c": 0.6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eps := zones(names, []int{2, 4, 4})
			c := newCaller(t, callersChain, "a", 7)
			got := shares(t, eps, tc.callers, []*caller{c}, []int{40000})
			byZone := map[string]float64{}
			for _, e := range eps {
				byZone[e.Info.Zone] += got[e.Addr]
			}
			for _, z := range names {
				if math.Abs(byZone[z]-tc.want[z]) > 0.01 {
					t.Errorf("zone %s share = %.4f, want %.4f", z, byZone[z], tc.want[z])
				}
			}
		})
	}
}

func TestZoneAffinity_NoCallerInfoOrCallerAwareOffSpillsNothing(t *testing.T) {
	eps := zones([]string{"a", "b", "c"}, []int{2, 4, 4})
	callers := map[string]float64{"a": 0.6, "b": 0.2, "c": 0.2}
	for _, tc := range []struct {
		name    string
		chain   string
		callers map[string]float64
	}{
		{name: "no caller info", chain: callersChain},
		{name: "caller_aware false", chain: `[{"zone_affinity":{"caller_aware":false}},{"round_robin":{}}]`, callers: callers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCaller(t, tc.chain, "a", 1)
			for i := range 20 {
				if got := c.tick(eps, tc.callers, strategytest.Start.Add(time.Duration(i)*100*time.Millisecond)); got != 0 {
					t.Fatalf("tick %d: spill fraction = %v, want 0", i, got)
				}
			}
			got := strategytest.Count(t, context.Background(), c.s.Build(c.set(eps, tc.callers, strategytest.Start)), 1000)
			if diff := fmt.Sprint(got[eps[0].Addr], got[eps[1].Addr]); diff != "500 500" {
				t.Errorf("local picks = %s, want 500 500 (all local, round robin)", diff)
			}
		})
	}
}

func TestZoneAffinity_EjectedLocalEndpointsRaiseCapacitySpill(t *testing.T) {
	// Health spill off: only the capacity part moves. The inner outlier
	// strategy keeps ejected endpoints out of the picks.
	const chain = `[{"zone_affinity":{"min_healthy_fraction":0,"capacity_margin":0}},{"outlier":{}},{"round_robin":{}}]`
	eps := zones([]string{"a", "b", "c"}, []int{7, 7, 6})
	callers := map[string]float64{"a": 1.0 / 3, "b": 1.0 / 3, "c": 1.0 / 3}
	c := newCaller(t, chain, "c", 1)
	if got := c.tick(eps, callers, strategytest.Start); math.Abs(got-0.1) > 0.001 {
		t.Fatalf("spill fraction = %v, want 0.1", got)
	}
	now := strategytest.Start.Add(100 * time.Millisecond)
	for _, e := range eps[14:17] { // 3 of the 6 zone-c endpoints
		e.Exclude(now.Add(time.Hour))
	}
	// U_c = 3/17; target 1 − (3/17)/(1/3) ≈ 0.471, reached in steps of 0.2.
	want := 1 - (3.0/17)/(1.0/3)
	for i, w := range []float64{0.3, 0.471, 0.471} {
		got := c.tick(eps, callers, now.Add(time.Duration(i)*100*time.Millisecond))
		if math.Abs(got-w) > 0.001 {
			t.Errorf("tick %d after ejections: spill fraction = %v, want %.3f", i, got, w)
		}
	}
	got := strategytest.Count(t, context.Background(), c.s.Build(c.set(eps, callers, now)), 20000)
	local := 0
	for _, e := range eps[14:] {
		local += got[e.Addr]
	}
	for _, e := range eps[14:17] {
		if got[e.Addr] != 0 {
			t.Errorf("ejected %s got %d picks", e.Addr, got[e.Addr])
		}
	}
	if share := float64(local) / 20000; math.Abs(share-(1-want)) > 0.02 {
		t.Errorf("local share = %.3f, want %.3f", share, 1-want)
	}
}

func TestZoneAffinity_CapacityStartsAtTargetThenMovesInSteps(t *testing.T) {
	eps := zones([]string{"a", "b", "c"}, []int{2, 4, 4})
	c := newCaller(t, `[{"zone_affinity":{"spill_step":0.05,"capacity_margin":0}},{"round_robin":{}}]`, "a", 1)
	now := strategytest.Start
	next := func(callers map[string]float64) float64 {
		now = now.Add(100 * time.Millisecond)
		return c.tick(eps, callers, now)
	}
	if got := next(nil); got != 0 {
		t.Fatalf("spill fraction without callers = %v, want 0", got)
	}
	// First sight of callers: straight to 1 − 0.2/0.4 = 0.5.
	if got := next(map[string]float64{"a": 0.4, "b": 0.3, "c": 0.3}); got != 0.5 {
		t.Errorf("first tick with callers: spill fraction = %v, want 0.5", got)
	}
	// New target 1 − 0.2/0.8 = 0.75: at most 4 × 0.05 per tick.
	callers := map[string]float64{"a": 0.8, "b": 0.1, "c": 0.1}
	for i, want := range []float64{0.7, 0.75, 0.75} {
		if got := next(callers); got != want {
			t.Errorf("tick %d toward 0.75: spill fraction = %v, want %v", i, got, want)
		}
	}
	// The local zone leaves and comes back: a Build starts at the target.
	c.s.Build(c.set(eps[2:], callers, now))
	set := c.set(eps, map[string]float64{"a": 0.4, "b": 0.3, "c": 0.3}, now)
	c.s.Build(set)
	if got := c.opts.Gauges.Value(zoneaffinity.SpillFraction); got != 0.5 {
		t.Errorf("Build after the local zone came back: spill fraction = %v, want 0.5", got)
	}
}

func TestZoneAffinity_CallerAwareConfig(t *testing.T) {
	for _, tc := range []struct {
		raw     string
		wantErr bool
	}{
		{raw: `[{"zone_affinity":{"caller_aware":true}},{"p2c":{}}]`},
		{raw: `[{"zone_affinity":{"caller_aware":false}},{"p2c":{}}]`},
		{raw: `[{"zone_affinity":{"caller_aware":"yes"}},{"p2c":{}}]`, wantErr: true},
		{raw: `[{"zone_affinity":{"capacity_margin":0.5,"latency_margin":1}},{"p2c":{}}]`},
		{raw: `[{"zone_affinity":{"capacity_margin":-0.1}},{"p2c":{}}]`, wantErr: true},
		{raw: `[{"zone_affinity":{"latency_margin":-1}},{"p2c":{}}]`, wantErr: true},
	} {
		_, err := strategy.ParseChain([]byte(tc.raw))
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseChain(%s) err = %v, wantErr %v", tc.raw, err, tc.wantErr)
		}
	}
}

// The pick path of the caller-aware picker allocates nothing.
func TestZoneAffinity_CallerAwarePickDoesNotAllocate(t *testing.T) {
	eps := zones([]string{"a", "b", "c"}, []int{2, 4, 4})
	c := newCaller(t, callersChain, "a", 1)
	callers := map[string]float64{"a": 0.6, "b": 0.35, "c": 0.05}
	c.tick(eps, callers, strategytest.Start)
	p := c.s.Build(c.set(eps, callers, strategytest.Start))
	ctx := context.Background()
	if n := testing.AllocsPerRun(1000, func() { _, _ = p.Pick(ctx) }); n != 0 {
		t.Errorf("Pick allocates %v times, want 0", n)
	}
}

// BenchmarkZoneAffinity_Pick compares the pick path with and without caller
// information (2/4/4 endpoints, caller in a, p2c inside).
func BenchmarkZoneAffinity_Pick(b *testing.B) {
	eps := zones([]string{"a", "b", "c"}, []int{2, 4, 4})
	for _, bc := range []struct {
		name    string
		callers map[string]float64
	}{
		{name: "no_callers"},
		{name: "callers", callers: map[string]float64{"a": 0.6, "b": 0.35, "c": 0.05}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, opts := strategytest.Chain(b, `[{"zone_affinity":{"spill_step":1}},{"p2c":{}}]`, nil, 1)
			set := strategytest.Set(eps, "a", strategytest.Start)
			set.CallerZones = bc.callers
			eps[0].Exclude(strategytest.Start.Add(time.Hour)) // health spill without callers
			defer eps[0].Readmit()
			s.Tick(set)
			p := s.Build(set)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				_, _ = p.Pick(ctx)
			}
			b.ReportMetric(opts.Gauges.Value(zoneaffinity.SpillFraction), "spill")
		})
	}
}
