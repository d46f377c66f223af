// Package weighted is the weighted random chooser: each candidate receives
// traffic in proportion to its weight (as given, or as scaled by outer
// strategies such as slow_start). Build precomputes a Walker/Vose alias
// table, so a pick is one random draw and two array reads, O(1).
//
// p2c honours weights too (it compares load ÷ weight); weighted is the choice
// when shares must follow weights even under light load.
package weighted

import (
	"context"
	"encoding/json"

	"github.com/fairway-lb/fairway/client/strategy"
)

// Name is the strategy's name in chains.
const Name = "weighted"

// Config is weighted's typed configuration (no fields).
type Config struct{}

func init() { strategy.Register(builder{}) }

type builder struct{}

func (builder) Name() string                { return Name }
func (builder) Position() strategy.Position { return strategy.Terminal }

func (builder) ParseConfig(raw json.RawMessage) (any, error) {
	cfg := &Config{}
	if err := strategy.DecodeConfig(Name, raw, cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (builder) Build(_ any, _ strategy.Strategy, opts strategy.BuildOptions) strategy.Strategy {
	return &weighted{rand: opts.Rand}
}

type weighted struct{ rand func() uint64 }

func (s *weighted) Tick(strategy.Set) bool { return false }

func (s *weighted) Build(set strategy.Set) strategy.Picker {
	n := len(set.Cands)
	if n == 0 {
		return strategy.NoEndpoint
	}
	p := &picker{rand: s.rand, eps: make([]*strategy.Endpoint, n), prob: make([]uint32, n), alias: make([]uint32, n)}
	var sum float64
	for i, c := range set.Cands {
		p.eps[i] = c.E
		if c.Weight > 0 {
			sum += c.Weight
		}
	}
	// Vose's alias method on scaled weights (mean 1).
	scaled := make([]float64, n)
	var small, large []int
	for i, c := range set.Cands {
		w := c.Weight
		if w < 0 || sum == 0 {
			w = 0
		}
		if sum == 0 {
			w = 1
		} else {
			w = w * float64(n) / sum
		}
		scaled[i] = w
		if w < 1 {
			small = append(small, i)
		} else {
			large = append(large, i)
		}
	}
	for len(small) > 0 && len(large) > 0 {
		l := small[len(small)-1]
		small = small[:len(small)-1]
		g := large[len(large)-1]
		p.prob[l] = toProb(scaled[l])
		p.alias[l] = uint32(g)
		scaled[g] = scaled[g] + scaled[l] - 1
		if scaled[g] < 1 {
			large = large[:len(large)-1]
			small = append(small, g)
		}
	}
	for _, i := range append(small, large...) {
		p.prob[i] = ^uint32(0)
		p.alias[i] = uint32(i)
	}
	return p
}

func toProb(f float64) uint32 {
	if f >= 1 {
		return ^uint32(0)
	}
	if f <= 0 {
		return 0
	}
	return uint32(f * (1 << 32))
}

// picker is immutable; eps, prob and alias are parallel.
type picker struct {
	rand  func() uint64
	eps   []*strategy.Endpoint
	prob  []uint32 // chance (of 2^32) to keep the column rather than take its alias
	alias []uint32
}

func (p *picker) Pick(context.Context) (*strategy.Endpoint, error) {
	r := p.rand()
	i := strategy.Index32(uint32(r), len(p.eps))
	if uint32(r>>32) < p.prob[i] {
		return p.eps[i], nil
	}
	return p.eps[p.alias[i]], nil
}
