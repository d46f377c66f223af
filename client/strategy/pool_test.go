package strategy_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/balancer"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy"
	"github.com/fairway-lb/fairway/client/strategy/strategytest"
)

func newPool(t *testing.T, chain string, clk *testingclock.FakeClock) *strategy.Pool {
	t.Helper()
	c, err := strategy.ParseChain([]byte(chain))
	if err != nil {
		t.Fatal(err)
	}
	p := strategy.NewPool(strategy.BuildOptions{Clock: clk})
	if !p.SetChain(c) {
		t.Fatal("SetChain on a new pool = false, want true")
	}
	return p
}

func addrs(eps []*strategy.Endpoint) []string {
	var out []string
	for _, e := range eps {
		out = append(out, e.Addr)
	}
	return out
}

func TestPool_KeepsEndpointsByAddress(t *testing.T) {
	clk := testingclock.NewFakeClock(strategytest.Start)
	p := newPool(t, `[{"round_robin":{}}]`, clk)
	seen := strategytest.Start.Add(-time.Hour)
	added, removed := p.Update([]strategy.Member{
		{Addr: "a", Info: endpointattr.Info{Zone: "z1"}},
		{Addr: "b", Info: endpointattr.Info{Weight: 3, FirstSeen: seen}},
		{Addr: "a", Info: endpointattr.Info{Zone: "repeated"}},
	}, "z1", nil)
	if diff := cmp.Diff(addrs(added), []string{"a", "b"}); diff != "" || len(removed) != 0 {
		t.Fatalf("first Update added (-got +want):\n%s removed %v", diff, addrs(removed))
	}
	a, b := added[0], added[1]
	if !a.Initial || a.Info.Weight != 1 || a.Info.Zone != "z1" || !a.Added.Equal(strategytest.Start) || !b.Added.Equal(seen) {
		t.Errorf("first endpoints: a %v %+v %v, b %v; want Initial, weight 1, zone z1, added now / at FirstSeen", a.Initial, a.Info, a.Added, b.Added)
	}

	clk.Step(time.Second)
	added, removed = p.Update([]strategy.Member{{Addr: "c"}, {Addr: "a", Info: endpointattr.Info{Zone: "z2", Weight: 2}}}, "z1", nil)
	if diff := cmp.Diff(addrs(added), []string{"c"}); diff != "" {
		t.Errorf("second Update added (-got +want):\n%s", diff)
	}
	if len(removed) != 1 || removed[0] != b {
		t.Errorf("second Update removed %v, want [b]", addrs(removed))
	}
	if got := p.Endpoints(); len(got) != 2 || got[0] != added[0] || got[1] != a {
		t.Errorf("Endpoints() = %v, want [c a] with a kept", addrs(got))
	}
	if c := added[0]; c.Initial || !c.Added.Equal(strategytest.Start.Add(time.Second)) {
		t.Errorf("later endpoint: Initial %v, Added %v; want false, now", c.Initial, c.Added)
	}
	if a.Info.Zone != "z2" || a.Info.Weight != 2 {
		t.Errorf("kept endpoint's Info = %+v, want the new one", a.Info)
	}
	p.Drop(a)
	if got := p.Endpoints(); len(got) != 1 || got[0].Addr != "c" {
		t.Errorf("Endpoints() after Drop = %v, want [c]", addrs(got))
	}
}

func TestPool_CandidatesAreConnectedAndHealthy(t *testing.T) {
	clk := testingclock.NewFakeClock(strategytest.Start)
	p := newPool(t, `[{"round_robin":{}}]`, clk)
	added, _ := p.Update([]strategy.Member{
		{Addr: "ready"},
		{Addr: "connecting"},
		{Addr: "draining", Info: endpointattr.Info{Health: endpointattr.Draining}},
		{Addr: "heavy", Info: endpointattr.Info{Weight: 5}},
	}, "", nil)
	if _, _, ok := p.Build(); ok {
		t.Fatal("Build with nothing connected: ok, want no picker")
	}
	for _, e := range added {
		p.SetConnected(e, e.Addr != "connecting")
	}
	pp, set, ok := p.Build()
	if !ok {
		t.Fatal("Build: not ok")
	}
	if diff := cmp.Diff(addrs(set.All), []string{"ready", "connecting", "draining", "heavy"}); diff != "" {
		t.Errorf("All (-got +want):\n%s", diff)
	}
	var cands []string
	var weights []float64
	for _, c := range set.Cands {
		cands, weights = append(cands, c.E.Addr), append(weights, c.Weight)
	}
	if diff := cmp.Diff(cands, []string{"ready", "heavy"}); diff != "" {
		t.Errorf("Cands (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(weights, []float64{1, 5}); diff != "" {
		t.Errorf("candidate weights (-got +want):\n%s", diff)
	}
	e, done, err := pp.Pick(context.Background())
	if err != nil || e.InFlight() != 1 || e.Picks() != 1 {
		t.Fatalf("Pick = %v, %v; want an endpoint with one request in flight", e, err)
	}
	done(balancer.DoneInfo{})
	if e.InFlight() != 0 {
		t.Errorf("InFlight after done = %d, want 0", e.InFlight())
	}
}

func TestPool_TimesOneRequestPerTick(t *testing.T) {
	clk := testingclock.NewFakeClock(strategytest.Start)
	p := newPool(t, `[{"p2c":{"latency_aware":true,"decay_alpha":0.5}}]`, clk)
	added, _ := p.Update([]strategy.Member{{Addr: "a"}}, "", nil)
	e := added[0]
	p.SetConnected(e, true)
	pp, _, _ := p.Build()
	ctx := context.Background()

	_, first, _ := pp.Pick(ctx) // timed: the first request after creation
	_, second, _ := pp.Pick(ctx)
	clk.Step(25 * time.Millisecond)
	second(balancer.DoneInfo{}) // untimed: no sample
	if got := e.Latency(); got != 0 {
		t.Fatalf("Latency after the untimed request = %v, want 0", got)
	}
	first(balancer.DoneInfo{})
	if got, want := e.Latency(), 25*time.Millisecond; got != want {
		t.Errorf("Latency after the timed request = %v, want %v", got, want)
	}
	_, done, _ := pp.Pick(ctx) // not armed: untimed
	clk.Step(5 * time.Millisecond)
	done(balancer.DoneInfo{})
	p.Tick() // arms the slot
	_, done, _ = pp.Pick(ctx)
	clk.Step(5 * time.Millisecond)
	done(balancer.DoneInfo{})
	// EWMA with alpha 0.5: 25 + 0.5 × (5 − 25) = 15 ms.
	if got, want := e.Latency(), 15*time.Millisecond; got != want {
		t.Errorf("Latency after a tick and a faster sample = %v, want %v", got, want)
	}
	if got := e.InFlight(); got != 0 {
		t.Errorf("InFlight = %d, want 0", got)
	}
	if got := testing.AllocsPerRun(100, func() {
		_, done, _ := pp.Pick(ctx)
		done(balancer.DoneInfo{})
	}); got != 0 {
		t.Errorf("allocs per pick = %v, want 0", got)
	}
}

func TestPool_SetChainKeepsAnEqualChain(t *testing.T) {
	clk := testingclock.NewFakeClock(strategytest.Start)
	p := newPool(t, `[{"p2c":{"latency_aware":true}}]`, clk)
	added, _ := p.Update([]strategy.Member{{Addr: "a"}}, "", nil)
	same, _ := strategy.ParseChain([]byte(`[ {"p2c": {"latency_aware": true}} ]`))
	if p.SetChain(same) {
		t.Error("SetChain with an equal chain = true, want false")
	}
	other, _ := strategy.ParseChain([]byte(`[{"p2c":{}}]`))
	if !p.SetChain(other) || p.Chain() != other {
		t.Error("SetChain with another chain did not take it")
	}
	// The new chain does not measure latency: no request is timed.
	p.SetConnected(added[0], true)
	pp, _, _ := p.Build()
	e, done, _ := pp.Pick(context.Background())
	clk.Step(time.Millisecond)
	done(balancer.DoneInfo{})
	if got := e.Latency(); got != 0 {
		t.Errorf("Latency after switching to a chain without latency = %v, want 0 (nothing timed)", got)
	}
}
