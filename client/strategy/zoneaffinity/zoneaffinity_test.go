package zoneaffinity_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy"
	"github.com/fairway-lb/fairway/client/strategy/strategytest"
	"github.com/fairway-lb/fairway/client/strategy/zoneaffinity"
)

const chain = `[{"zone_affinity":{"spill_margin":0.2,"min_load":1,"min_healthy_fraction":0.7,"spill_step":0.1,"max_spill":0.8}},{"round_robin":{}}]`

// zoned returns 4 endpoints in zone "a" (local) then 4 in zone "b".
func zoned() []*strategy.Endpoint {
	return strategytest.Endpoints(8, func(i int) endpointattr.Info {
		z := "a"
		if i >= 4 {
			z = "b"
		}
		return endpointattr.Info{Zone: z, Weight: 1}
	})
}

type fixture struct {
	t    *testing.T
	s    strategy.Strategy
	opts strategy.BuildOptions
	eps  []*strategy.Endpoint
	now  time.Time
	// usable[i] false removes endpoint i from the candidates (not ready).
	usable []bool
}

func newFixture(t *testing.T) *fixture {
	s, opts := strategytest.Chain(t, chain, nil, 3)
	f := &fixture{t: t, s: s, opts: opts, eps: zoned(), now: strategytest.Start}
	f.usable = make([]bool, len(f.eps))
	for i := range f.usable {
		f.usable[i] = true
	}
	return f
}

func (f *fixture) set() strategy.Set {
	s := strategytest.Set(f.eps, "a", f.now)
	s.Cands = s.Cands[:0]
	for i, e := range f.eps {
		if f.usable[i] {
			s.Cands = append(s.Cands, strategy.Candidate{E: e, Weight: 1})
		}
	}
	return s
}

func (f *fixture) ticks(n int) {
	for range n {
		f.now = f.now.Add(100 * time.Millisecond)
		f.s.Tick(f.set())
	}
}

// remoteShare picks 10000 times and returns the share sent to zone b.
func (f *fixture) remoteShare() float64 {
	got := strategytest.Count(f.t, context.Background(), f.s.Build(f.set()), 10000)
	remote := 0
	for _, e := range f.eps[4:] {
		remote += got[e.Addr]
	}
	return float64(remote) / 10000
}

func (f *fixture) setInFlight(zone string, n int64) {
	for _, e := range f.eps {
		if e.Info.Zone == zone {
			strategytest.SetInFlight(e, n)
		}
	}
}

func near(got, want float64) bool { return math.Abs(got-want) < 0.03 }

func TestZoneAffinity_LightLoadStaysLocal(t *testing.T) {
	f := newFixture(t)
	f.ticks(50)
	if got := f.remoteShare(); got != 0 {
		t.Errorf("remote share under light load = %v, want 0", got)
	}
}

func TestZoneAffinity_SpillsGraduallyUnderOverloadAndReturns(t *testing.T) {
	f := newFixture(t)
	f.setInFlight("a", 10)
	f.setInFlight("b", 2)
	f.ticks(1)
	if got := f.remoteShare(); !near(got, 0.1) {
		t.Errorf("after one overloaded tick, remote share = %v, want ≈0.1 (one step)", got)
	}
	f.ticks(3)
	if got := f.remoteShare(); !near(got, 0.4) {
		t.Errorf("after four overloaded ticks, remote share = %v, want ≈0.4", got)
	}
	f.ticks(20)
	if got := f.opts.Gauges.Value(zoneaffinity.SpillFraction); got != 0.8 {
		t.Errorf("spill fraction = %v, want max_spill 0.8", got)
	}
	// Inside the hysteresis band (local 2.3 vs remote 2: above +10%, below +20%): hold.
	f.setInFlight("a", 23)
	f.setInFlight("b", 20)
	f.ticks(5)
	if got := f.opts.Gauges.Value(zoneaffinity.SpillFraction); got != 0.8 {
		t.Errorf("spill fraction inside the hysteresis band = %v, want 0.8 (held)", got)
	}
	// Load gone: back home, one step per tick.
	f.setInFlight("a", 0)
	f.setInFlight("b", 0)
	f.ticks(1)
	if got := f.opts.Gauges.Value(zoneaffinity.SpillFraction); got != 0.7 {
		t.Errorf("spill fraction one tick after overload = %v, want 0.7", got)
	}
	f.ticks(10)
	if got := f.remoteShare(); got != 0 {
		t.Errorf("remote share after recovery = %v, want 0", got)
	}
}

func TestZoneAffinity_SpillsWhenLocalUnhealthyAndReturns(t *testing.T) {
	f := newFixture(t)
	f.usable[0], f.usable[1], f.usable[2] = false, false, false // 1 of 4 local usable
	f.ticks(20)
	want := 1 - 0.25/0.7
	if got := f.remoteShare(); !near(got, want) {
		t.Errorf("remote share with 1/4 local healthy = %v, want ≈%.3f", got, want)
	}
	f.usable[3] = false // none local
	f.ticks(1)
	if got := f.remoteShare(); got != 1 {
		t.Errorf("remote share with no local endpoint = %v, want 1", got)
	}
	for i := range 4 {
		f.usable[i] = true
	}
	f.ticks(20)
	if got := f.remoteShare(); got != 0 {
		t.Errorf("remote share after local recovery = %v, want 0", got)
	}
}

func TestZoneAffinity_NoZoneBehavesLikeInner(t *testing.T) {
	s, _ := strategytest.Chain(t, chain, nil, 3)
	eps := zoned()
	set := strategytest.Set(eps, "", strategytest.Start)
	s.Tick(set)
	got := strategytest.Count(t, context.Background(), s.Build(set), 800)
	for _, e := range eps {
		if got[e.Addr] != 100 {
			t.Errorf("%s got %d picks, want 100 (plain round robin)", e.Addr, got[e.Addr])
		}
	}
}

func TestZoneAffinity_EjectedLocalEndpointsCountAsUnhealthy(t *testing.T) {
	s, opts := strategytest.Chain(t, `[{"zone_affinity":{"spill_step":1}},{"outlier":{}},{"round_robin":{}}]`, nil, 3)
	eps := zoned()
	now := strategytest.Start
	for _, e := range eps[:4] {
		e.Exclude(now.Add(time.Hour)) // all local endpoints ejected
	}
	set := strategytest.Set(eps, "a", now)
	s.Tick(set)
	if got := opts.Gauges.Value(zoneaffinity.SpillFraction); got != 1 {
		t.Errorf("spill fraction with all local endpoints ejected = %v, want 1", got)
	}
	got := strategytest.Count(t, context.Background(), s.Build(set), 400)
	for _, e := range eps[:4] {
		if got[e.Addr] != 0 {
			t.Errorf("ejected local %s got %d picks", e.Addr, got[e.Addr])
		}
	}
}

// setLatency sets the latency estimates of zone a then b (ms, one per
// endpoint); 0 leaves an endpoint unmeasured.
func (f *fixture) setLatency(ms ...float64) {
	for i, e := range f.eps {
		if ms[i] > 0 {
			// A sample above the estimate replaces it; decay below with alpha 1.
			e.ObserveLatency(time.Duration(ms[i]*float64(time.Millisecond)), 1)
		}
	}
}

func TestZoneAffinity_SpillsOnLocalLatencyAndReturns(t *testing.T) {
	f := newFixture(t)
	// In-flight counts all 0 (light load for the in-flight signal), but two
	// local endpoints are 5× slower: the zone's latency-weighted load is
	// 4 / (2/20 + 2/100) = 33.3 ms against 20 ms, above the 50% margin by a
	// factor 33.3/30 = 1.11, so each tick adds 1.11 steps of 0.1.
	f.setLatency(20, 20, 100, 100, 20, 20, 20, 20)
	f.ticks(3)
	if got := f.opts.Gauges.Value(zoneaffinity.SpillFraction); !near(got, 3*0.1*(100.0/3)/30) {
		t.Errorf("spill fraction after 3 ticks with two slow local endpoints = %v, want 0.333", got)
	}
	// Local 27 ms against 20 ms: between +25% and +50%, hold.
	f.setLatency(27, 27, 27, 27, 20, 20, 20, 20)
	f.ticks(5)
	if got := f.opts.Gauges.Value(zoneaffinity.SpillFraction); !near(got, 3*0.1*(100.0/3)/30) {
		t.Errorf("spill fraction inside the hysteresis band = %v, want 0.333 (held)", got)
	}
	// Equal again: back home one step per tick.
	f.setLatency(21, 21, 21, 21, 21, 21, 21, 21)
	f.ticks(1)
	if got := f.opts.Gauges.Value(zoneaffinity.SpillFraction); !near(got, 3*0.1*(100.0/3)/30-0.1) {
		t.Errorf("spill fraction one tick after recovery = %v, want 0.233", got)
	}
	f.ticks(5)
	if got := f.remoteShare(); got != 0 {
		t.Errorf("remote share after recovery = %v, want 0", got)
	}
}

// TestZoneAffinity_OneSlowLocalEndpointStaysLocal: one slow endpoint of
// four raises the zone's latency-weighted load by at most a third, below
// the latency margin: the inner strategy steers around it, nothing spills.
func TestZoneAffinity_OneSlowLocalEndpointStaysLocal(t *testing.T) {
	f := newFixture(t)
	f.setLatency(20, 20, 20, 1000, 20, 20, 20, 20)
	f.ticks(20)
	if got := f.opts.Gauges.Value(zoneaffinity.SpillFraction); got != 0 {
		t.Errorf("spill fraction with one slow local endpoint = %v, want 0", got)
	}
}

func TestZoneAffinity_LatencyWithoutRemoteEstimates(t *testing.T) {
	// Remote endpoints not measured: no latency signal, in-flight decides.
	f := newFixture(t)
	f.setLatency(20, 100, 100, 100, 0, 0, 0, 0)
	f.ticks(10)
	if got := f.opts.Gauges.Value(zoneaffinity.SpillFraction); got != 0 {
		t.Errorf("spill fraction with no remote estimate = %v, want 0", got)
	}
}

func TestZoneAffinity_HomogeneousLatencyStaysLocal(t *testing.T) {
	f := newFixture(t)
	f.setLatency(20, 30, 25, 22, 21, 29, 24, 26)
	f.ticks(50)
	if got := f.remoteShare(); got != 0 {
		t.Errorf("remote share with like latencies = %v, want 0", got)
	}
}
