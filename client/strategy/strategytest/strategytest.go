// Package strategytest helps test and benchmark strategies without a
// balancer: it makes endpoints, candidate sets and chains with an injected
// clock and a seeded random source. Importing it registers the built-in
// strategies.
package strategytest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy"
	_ "github.com/fairway-lb/fairway/client/strategy/all" // registers the built-ins
)

// Start is the fake clocks' initial time.
var Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Endpoints returns n endpoints with addresses 10.0.I.J:8080 and the Info
// info(i) returns (nil: weight 1, healthy, no zone). All are Initial.
func Endpoints(n int, info func(i int) endpointattr.Info) []*strategy.Endpoint {
	out := make([]*strategy.Endpoint, n)
	for i := range out {
		in := endpointattr.Info{Weight: 1}
		if info != nil {
			in = info(i)
		}
		e := strategy.NewEndpoint(fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250+1), in, Start)
		e.Initial = true
		out[i] = e
	}
	return out
}

// Set returns a set where every endpoint is a candidate with its Info weight.
func Set(eps []*strategy.Endpoint, localZone string, now time.Time) strategy.Set {
	s := strategy.Set{All: eps, LocalZone: localZone, Now: now}
	for _, e := range eps {
		s.Cands = append(s.Cands, strategy.Candidate{E: e, Weight: float64(e.Info.Weight)})
	}
	return s
}

// Chain parses and builds chain (JSON) with clk and a PCG seeded with seed
// (for one goroutine only). A nil clk gets a fake clock at Start.
func Chain(tb testing.TB, chain string, clk *testingclock.FakeClock, seed uint64) (strategy.Strategy, strategy.BuildOptions) {
	tb.Helper()
	c, err := strategy.ParseChain([]byte(chain))
	if err != nil {
		tb.Fatalf("ParseChain(%s): %v", chain, err)
	}
	if clk == nil {
		clk = testingclock.NewFakeClock(Start)
	}
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return c.Build(strategy.BuildOptions{Clock: clk, Rand: r.Uint64})
}

// Count picks n times and returns picks per address. It fails the test on
// an error.
func Count(tb testing.TB, ctx context.Context, p strategy.Picker, n int) map[string]int {
	tb.Helper()
	out := map[string]int{}
	for range n {
		e, err := p.Pick(ctx)
		if err != nil {
			tb.Fatalf("Pick: %v", err)
		}
		out[e.Addr]++
	}
	return out
}

// Record records n requests picked and finished on e with code c.
func Record(e *strategy.Endpoint, n int, c codes.Code) {
	for range n {
		e.Picked()
		e.Finish(c)
	}
}

// SetInFlight makes e's in-flight count n by picking or finishing (OK).
func SetInFlight(e *strategy.Endpoint, n int64) {
	for e.InFlight() < n {
		e.Picked()
	}
	for e.InFlight() > n {
		e.Finish(codes.OK)
	}
}

// Sampled returns an endpoint that measures latency on clk with alpha and
// the failure penalty, as a Pool's endpoints do under a latency-aware chain.
func Sampled(clk *testingclock.FakeClock, alpha, penalty float64) *strategy.Endpoint {
	e := strategy.NewEndpoint("10.0.0.1:8080", endpointattr.Info{}, clk.Now())
	e.SetLatencyConfig(clk, alpha, penalty)
	return e
}
