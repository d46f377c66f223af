package zoneaffinity

import (
	"context"

	"github.com/fairway-lb/fairway/client/strategy"
)

// zonedPicker is immutable: picker with the spilled requests spread over the
// remote zones.
type zonedPicker struct {
	rand          func() uint64
	threshold     uint64
	local, remote strategy.Picker // remote: all remote endpoints, the fallback
	// A spilled draw r goes to zones[i] for the first i with r < cum[i];
	// cum is increasing and its last element is threshold.
	cum   []uint64
	zones []strategy.Picker
}

// Pick draws one random number while spilling: below threshold it spills,
// and the same number chooses the zone. When the chosen zone has nothing to
// offer, all remote endpoints, then the local ones, answer.
func (p *zonedPicker) Pick(ctx context.Context) (*strategy.Endpoint, error) {
	if p.threshold != 0 {
		if r := p.rand(); r < p.threshold {
			for i, c := range p.cum {
				if r < c {
					if e, err := p.zones[i].Pick(ctx); err == nil {
						return e, nil
					}
					break
				}
			}
			if e, err := p.remote.Pick(ctx); err == nil {
				return e, nil
			}
			return p.local.Pick(ctx)
		}
	}
	if e, err := p.local.Pick(ctx); err == nil {
		return e, nil
	}
	return p.remote.Pick(ctx)
}

// picker is immutable.
type picker struct {
	rand          func() uint64
	threshold     uint64
	local, remote strategy.Picker
}

// Pick draws a random number only while spilling; when the chosen side has
// nothing to offer (say, an inner outlier ejected it all), the other answers.
func (p *picker) Pick(ctx context.Context) (*strategy.Endpoint, error) {
	first, second := p.local, p.remote
	if p.threshold != 0 && p.rand() < p.threshold {
		first, second = p.remote, p.local
	}
	if e, err := first.Pick(ctx); err == nil {
		return e, nil
	}
	return second.Pick(ctx)
}
