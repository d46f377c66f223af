// Package roundrobin is the round-robin chooser, the baseline for
// comparisons: each pick takes the next candidate of a shared counter.
// Weights are ignored (see the weighted strategy).
package roundrobin

import (
	"context"
	"encoding/json"
	"sync/atomic"

	"github.com/fairway-lb/fairway/client/strategy"
)

// Name is the strategy's name in chains.
const Name = "round_robin"

// Config is round_robin's typed configuration (no fields).
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
	return &rr{rand: opts.Rand}
}

type rr struct{ rand func() uint64 }

func (s *rr) Tick(strategy.Set) bool { return false }

func (s *rr) Build(set strategy.Set) strategy.Picker {
	if len(set.Cands) == 0 {
		return strategy.NoEndpoint
	}
	p := &picker{eps: make([]*strategy.Endpoint, len(set.Cands))}
	for i, c := range set.Cands {
		p.eps[i] = c.E
	}
	// Start at a random offset so that many clients do not move in step.
	p.next.Store(uint64(strategy.Index(s.rand(), len(p.eps))))
	return p
}

type picker struct {
	eps  []*strategy.Endpoint
	_    [40]byte // keep the counter's writes off the line of eps
	next atomic.Uint64
}

func (p *picker) Pick(context.Context) (*strategy.Endpoint, error) {
	i := p.next.Add(1)
	return p.eps[i%uint64(len(p.eps))], nil
}
