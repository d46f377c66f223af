package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	grpcbalancer "google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/client/balancer"
	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// The simulator must measure the code that ships: the same event sequence
// driven through a real Fairway balancer and through the simulator's
// per-channel pool must give the same picks, latency estimates and
// in-flight counts.

// lbPath is one way of running a Fairway balancer: through gRPC's balancer
// API, or as the simulator does.
type lbPath interface {
	update(members []strategy.Member) // membership; every endpoint READY
	pick() (addr string, done func(grpcbalancer.DoneInfo))
	finish(done func(grpcbalancer.DoneInfo), err error) // a request ends
	step(d time.Duration)                               // advance the fake clock
	tick()                                              // one strategies' tick
	endpoints() map[string]epView
	close()
}

// epView is what the comparison looks at, per endpoint.
type epView struct {
	Latency  time.Duration
	InFlight int64
	Picks    uint64
}

// tickClock is a fake clock whose ticker is driven by hand: every call of
// the ticker's C() (once per iteration of the balancer's tick loop) hands
// the test a fresh channel, so the test knows when the previous tick has
// finished.
type tickClock struct {
	*testingclock.FakeClock
	ticks chan chan time.Time
	next  chan time.Time // the channel the tick loop waits on
}

func (c *tickClock) NewTicker(time.Duration) clock.Ticker { return handTicker{c} }

type handTicker struct{ c *tickClock }

func (t handTicker) C() <-chan time.Time {
	ch := make(chan time.Time)
	t.c.ticks <- ch // buffered: the test collects it
	return ch
}
func (handTicker) Stop() {}

// tick runs one tick of the balancer's loop and waits until it is done.
func (c *tickClock) tick(t *testing.T) {
	t.Helper()
	if c.next == nil {
		c.next = testkit.Recv(t, c.ticks, "the tick loop")
	}
	c.next <- c.Now()
	c.next = testkit.Recv(t, c.ticks, "the end of a tick")
}

// testCC is a balancer.ClientConn whose SubConns the test drives.
type testCC struct {
	grpcbalancer.ClientConn // only the methods below are called

	mu     sync.Mutex // the tick goroutine publishes pickers too
	picker grpcbalancer.Picker
	fresh  []*testSC // SubConns created since the last update
}

type testSC struct {
	grpcbalancer.SubConn
	addr     string
	listener func(grpcbalancer.SubConnState)
}

func (cc *testCC) NewSubConn(addrs []resolver.Address, o grpcbalancer.NewSubConnOptions) (grpcbalancer.SubConn, error) {
	sc := &testSC{addr: addrs[0].Addr, listener: o.StateListener}
	cc.fresh = append(cc.fresh, sc)
	return sc, nil
}

func (cc *testCC) UpdateState(s grpcbalancer.State) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.picker = s.Picker
}

func (cc *testCC) ResolveNow(resolver.ResolveNowOptions) {}
func (sc *testSC) Connect()                              {}
func (sc *testSC) Shutdown()                             {}

// balancerPath is a real balancer built from balancer.Get("fairway").
type balancerPath struct {
	t      *testing.T
	clk    *tickClock
	cc     *testCC
	bal    grpcbalancer.Balancer
	cfg    serviceconfig.LoadBalancingConfig
	target string
}

func newBalancerPath(t *testing.T, chain string, seed uint64, start time.Time) *balancerPath {
	clk := &tickClock{FakeClock: testingclock.NewFakeClock(start), ticks: make(chan chan time.Time, 1)}
	rng := rand.New(rand.NewPCG(seed, seed))
	grpcbalancer.Register(balancer.NewBuilder(balancer.WithClock(clk), balancer.WithRand(rng.Uint64)))
	t.Cleanup(func() { grpcbalancer.Register(balancer.NewBuilder()) })
	bb := grpcbalancer.Get(balancer.Name)
	cfg, err := bb.(grpcbalancer.ConfigParser).ParseConfig([]byte(fmt.Sprintf(`{"strategy":%s}`, chain)))
	if err != nil {
		t.Fatal(err)
	}
	p := &balancerPath{t: t, clk: clk, cc: &testCC{}, cfg: cfg, target: "equivalence.default:8080"}
	p.bal = bb.Build(p.cc, grpcbalancer.BuildOptions{Target: resolver.Target{URL: url.URL{Scheme: "fairway", Path: "/" + p.target}}})
	return p
}

func (p *balancerPath) update(members []strategy.Member) {
	s := resolver.State{Attributes: endpointattr.SetLocalZone(nil, "a")}
	for _, m := range members {
		s.Endpoints = append(s.Endpoints, endpointattr.Set(resolver.Endpoint{Addresses: []resolver.Address{{Addr: m.Addr}}}, m.Info))
	}
	if err := p.bal.UpdateClientConnState(grpcbalancer.ClientConnState{ResolverState: s, BalancerConfig: p.cfg}); err != nil {
		p.t.Fatal(err)
	}
	for _, sc := range p.cc.fresh {
		sc.listener(grpcbalancer.SubConnState{ConnectivityState: connectivity.Connecting})
		sc.listener(grpcbalancer.SubConnState{ConnectivityState: connectivity.Ready})
	}
	p.cc.fresh = nil
}

func (p *balancerPath) pick() (string, func(grpcbalancer.DoneInfo)) {
	p.cc.mu.Lock()
	pk := p.cc.picker
	p.cc.mu.Unlock()
	r, err := pk.Pick(grpcbalancer.PickInfo{Ctx: context.Background()})
	if err != nil {
		p.t.Fatalf("balancer Pick: %v", err)
	}
	return r.SubConn.(*testSC).addr, r.Done
}

// finish ends a request as gRPC does: PickResult.Done with the RPC's error.
func (p *balancerPath) finish(done func(grpcbalancer.DoneInfo), err error) {
	done(grpcbalancer.DoneInfo{Err: err})
}

func (p *balancerPath) step(d time.Duration) { p.clk.Step(d) }
func (p *balancerPath) tick()                { p.clk.tick(p.t) }
func (p *balancerPath) close()               { p.bal.Close() }

func (p *balancerPath) endpoints() map[string]epView {
	eps, ok := balancer.Inspect(p.target)
	if !ok {
		p.t.Fatalf("Inspect(%s): no live balancer", p.target)
	}
	out := map[string]epView{}
	for _, e := range eps {
		out[e.Address] = epView{Latency: e.Latency, InFlight: e.InFlight, Picks: e.Picks}
	}
	return out
}

// simPath is the simulator's per-channel pool (fairwayChannel).
type simPath struct {
	t   *testing.T
	clk *testingclock.FakeClock
	fw  *fairwayChannel
	// end ends a request; report, the simulator's, unless a test replaces it.
	end func(done func(grpcbalancer.DoneInfo), err error)
}

func newSimPath(t *testing.T, chain string, seed uint64, start time.Time) *simPath {
	c, err := strategy.ParseChain([]byte(chain))
	if err != nil {
		t.Fatal(err)
	}
	clk := testingclock.NewFakeClock(start)
	rng := rand.New(rand.NewPCG(seed, seed))
	return &simPath{t: t, clk: clk, fw: newFairwayChannel(c, clk, rng.Uint64, nil, "a", nil), end: report}
}

func (p *simPath) update(members []strategy.Member) { p.fw.setMembers(members) }

func (p *simPath) pick() (string, func(grpcbalancer.DoneInfo)) {
	e, done, err := p.fw.picker.Pick(context.Background())
	if err != nil {
		p.t.Fatalf("simulator Pick: %v", err)
	}
	return e.Addr, done
}

func (p *simPath) finish(done func(grpcbalancer.DoneInfo), err error) { p.end(done, err) }
func (p *simPath) step(d time.Duration)                               { p.clk.Step(d) }
func (p *simPath) tick()                                              { p.fw.tick() }
func (p *simPath) close()                                             {}

func (p *simPath) endpoints() map[string]epView {
	out := map[string]epView{}
	for _, e := range p.fw.pool.Endpoints() {
		out[e.Addr] = epView{Latency: e.Latency(), InFlight: e.InFlight(), Picks: e.Picks()}
	}
	return out
}

// trace is what a run of the script observed.
type trace struct {
	picks []string            // endpoint of each pick, in order
	after []map[string]epView // endpoint state after each tick
}

// runScript drives path through a fixed event sequence: four endpoints in
// two zones (the local one, "a", holds two), then rounds of picks whose
// requests take a per-endpoint time or fail, 5 ms clock steps and a tick
// every 100 ms; a fifth endpoint joins and one leaves half way.
func runScript(path lbPath) trace {
	defer path.close()
	member := func(addr, zone string) strategy.Member {
		return strategy.Member{Addr: addr, Info: endpointattr.Info{Zone: zone, Weight: 1, Health: endpointattr.Healthy}}
	}
	members := []strategy.Member{member("10.0.0.1:80", "a"), member("10.0.0.2:80", "a"), member("10.0.1.1:80", "b"), member("10.0.1.2:80", "b")}
	// How each endpoint answers: after this long, with this error.
	latency := map[string]time.Duration{"10.0.0.1:80": 10 * time.Millisecond, "10.0.0.2:80": 45 * time.Millisecond,
		"10.0.1.1:80": 20 * time.Millisecond, "10.0.1.2:80": 5 * time.Millisecond, "10.0.2.1:80": 15 * time.Millisecond}
	unavailable := status.Error(codes.Unavailable, "unavailable")
	type req struct {
		at   time.Duration
		done func(grpcbalancer.DoneInfo)
		err  error
	}
	var tr trace
	var pending []req
	path.update(members)
	var now time.Duration
	for round := range 120 {
		if round == 60 {
			members = append(members[1:], member("10.0.2.1:80", "b"))
			path.update(members)
		}
		for i := range 3 {
			addr, done := path.pick()
			tr.picks = append(tr.picks, addr)
			r := req{at: now + latency[addr], done: done}
			if addr == "10.0.1.2:80" && i != 1 { // fails fast, mostly
				r.err = unavailable
			}
			pending = append(pending, r)
		}
		path.step(5 * time.Millisecond)
		now += 5 * time.Millisecond
		kept := pending[:0]
		for _, r := range pending {
			if r.at <= now {
				path.finish(r.done, r.err)
			} else {
				kept = append(kept, r)
			}
		}
		pending = kept
		if round%20 == 19 {
			path.tick()
			tr.after = append(tr.after, path.endpoints())
		}
	}
	return tr
}

func TestSim_RunsTheBalancersCode(t *testing.T) {
	const seed = 7
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, chain := range []string{
		`[{"p2c":{"latency_aware":true}}]`,
		`[{"zone_affinity":{}},{"slow_start":{}},{"outlier":{"interval":"100ms","window":"1s","min_requests":2}},{"p2c":{"latency_aware":true}}]`,
	} {
		t.Run(chain, func(t *testing.T) {
			bal := runScript(newBalancerPath(t, chain, seed, start))
			sim := runScript(newSimPath(t, chain, seed, start))
			if diff := cmp.Diff(bal.picks, sim.picks); diff != "" {
				t.Errorf("picks differ (-balancer +simulator):\n%s", diff)
			}
			if diff := cmp.Diff(bal.after, sim.after); diff != "" {
				t.Errorf("endpoint state after ticks differs (-balancer +simulator):\n%s", diff)
			}
			measured := false
			for _, v := range sim.after[len(sim.after)-1] {
				measured = measured || v.Latency > 0
			}
			if !measured {
				t.Error("no latency estimate after the script: the comparison would prove nothing")
			}
		})
	}
}

// TestSim_EquivalenceCatchesADifferentPenalty shows that the comparison of
// TestSim_RunsTheBalancersCode fails when the simulator's requests end
// differently: here, a failure also raises the estimate by 3× (as the
// simulator's own penalty once did).
func TestSim_EquivalenceCatchesADifferentPenalty(t *testing.T) {
	const chain = `[{"p2c":{"latency_aware":true}}]`
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	bal := runScript(newBalancerPath(t, chain, 7, start))
	sp := newSimPath(t, chain, 7, start)
	sp.end = func(done func(grpcbalancer.DoneInfo), err error) {
		report(done, err)
		if err != nil {
			for _, e := range sp.fw.pool.Endpoints() {
				if e.Addr == "10.0.1.2:80" {
					e.ObserveLatency(3*e.Latency(), 0.1)
				}
			}
		}
	}
	sim := runScript(sp)
	if cmp.Equal(bal.after, sim.after) {
		t.Error("the endpoint states agree although the simulator applied another failure penalty")
	}
}
