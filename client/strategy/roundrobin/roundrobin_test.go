package roundrobin_test

import (
	"context"
	"testing"

	"github.com/fairway-lb/fairway/client/strategy/strategytest"
)

func TestRoundRobin_EqualShares(t *testing.T) {
	eps := strategytest.Endpoints(7, nil)
	s, _ := strategytest.Chain(t, `[{"round_robin":{}}]`, nil, 1)
	got := strategytest.Count(t, context.Background(), s.Build(strategytest.Set(eps, "", strategytest.Start)), 700)
	for _, e := range eps {
		if got[e.Addr] != 100 {
			t.Errorf("%s got %d picks, want 100", e.Addr, got[e.Addr])
		}
	}
}
