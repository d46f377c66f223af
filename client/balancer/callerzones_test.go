package balancer_test

import (
	"context"
	"encoding/json"
	"maps"
	"sync"
	"testing"
	"time"

	grpcbalancer "google.golang.org/grpc/balancer"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/client/balancer"
	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy"
	"github.com/fairway-lb/fairway/internal/testkit"
)

// seenSets is a test-only terminal strategy that picks the first candidate
// and records the CallerZones of every Build and Tick.
type seenSets struct{}

func (seenSets) Name() string                { return "seen_sets" }
func (seenSets) Position() strategy.Position { return strategy.Terminal }
func (seenSets) ParseConfig(raw json.RawMessage) (any, error) {
	var cfg struct{}
	return &cfg, strategy.DecodeConfig("seen_sets", raw, &cfg)
}
func (seenSets) Build(any, strategy.Strategy, strategy.BuildOptions) strategy.Strategy {
	return seenSetsStrategy{}
}

type seenSetsStrategy struct{}

var seen struct {
	mu            sync.Mutex
	builds, ticks []map[string]float64
}

func (seenSetsStrategy) Tick(s strategy.Set) bool {
	seen.mu.Lock()
	seen.ticks = append(seen.ticks, s.CallerZones)
	seen.mu.Unlock()
	return false
}

func (seenSetsStrategy) Build(s strategy.Set) strategy.Picker {
	seen.mu.Lock()
	seen.builds = append(seen.builds, s.CallerZones)
	seen.mu.Unlock()
	return strategy.PickerFunc(func(context.Context) (*strategy.Endpoint, error) {
		if len(s.Cands) == 0 {
			return nil, strategy.ErrNoEndpoint
		}
		return s.Cands[0].E, nil
	})
}

func init() { strategy.Register(seenSets{}) }

func lastSeen() (build, tick map[string]float64) {
	seen.mu.Lock()
	defer seen.mu.Unlock()
	if n := len(seen.builds); n > 0 {
		build = seen.builds[n-1]
	}
	if n := len(seen.ticks); n > 0 {
		tick = seen.ticks[n-1]
	}
	return build, tick
}

func TestBalancer_CallerZonesReachBuildAndTickWithoutNewEndpoints(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	grpcbalancer.Register(balancer.NewBuilder(balancer.WithClock(clk)))
	defer grpcbalancer.Register(balancer.NewBuilder())

	ctx := ctxT(t)
	bs := startBackends(t, 2, nil)
	const target = "callers.default:8080"
	r, c := dial(t, target)
	const chain = `[{"seen_sets":{}}]`
	r.UpdateState(state(t, r, chain, ep{b: bs[0]}, ep{b: bs[1], zone: "b"}))
	waitReady(t, ctx, target, 2)
	send(t, ctx, c, 10)

	zones := map[string]float64{"a": 0.25, "b": 0.75}
	s := state(t, r, chain, ep{b: bs[0]}, ep{b: bs[1], zone: "b"})
	s.Attributes = endpointattr.SetCallerZones(s.Attributes, zones)
	r.UpdateState(s)
	testkit.Eventually(ctx, t, "a Build with caller zones", func() bool {
		b, _ := lastSeen()
		return maps.Equal(b, zones)
	})
	testkit.Eventually(ctx, t, "a Tick with caller zones", func() bool {
		clk.Step(balancer.DefaultTickInterval)
		_, tk := lastSeen()
		return maps.Equal(tk, zones)
	})
	// The endpoints (and their counters) are the same ones.
	eps, _ := balancer.Inspect(target)
	var picks uint64
	for _, e := range eps {
		picks += e.Picks
	}
	if len(eps) != 2 || picks != 10 {
		t.Errorf("after a caller-zones update: %d endpoints with %d picks, want 2 with the 10 earlier picks", len(eps), picks)
	}
	if got := calls(bs); got[0] != 10 {
		t.Errorf("calls = %v, want 10 on the first backend", got)
	}
}
