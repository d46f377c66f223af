package weighted_test

import (
	"context"
	"math"
	"testing"

	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy/strategytest"
)

func TestWeighted_SharesFollowWeights(t *testing.T) {
	weights := []uint32{1, 2, 3, 4, 10, 1}
	var sum float64
	for _, w := range weights {
		sum += float64(w)
	}
	eps := strategytest.Endpoints(len(weights), func(i int) endpointattr.Info { return endpointattr.Info{Weight: weights[i]} })
	for _, chain := range []string{`[{"weighted":{}}]`, `[{"slow_start":{}},{"weighted":{}}]`} {
		s, _ := strategytest.Chain(t, chain, nil, 7)
		const n = 100000
		got := strategytest.Count(t, context.Background(), s.Build(strategytest.Set(eps, "", strategytest.Start)), n)
		for i, e := range eps {
			want := float64(weights[i]) / sum
			share := float64(got[e.Addr]) / n
			if math.Abs(share-want)/want > 0.05 {
				t.Errorf("%s: weight %d share %.4f, want %.4f ±5%%", chain, weights[i], share, want)
			}
		}
	}
}
