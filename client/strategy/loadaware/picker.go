package loadaware

import (
	"context"
	"math"

	"github.com/fairway-lb/fairway/client/strategy"
)

type entry struct {
	e    *strategy.Endpoint
	invW float64 // 1 / weight
}

// picker is immutable.
type picker struct {
	s        *loadAware // the clock, threshold and reference latency, live
	eps      []entry
	maxAge   int64  // ms
	reuse    uint64 // requests per report
	probe    func(*strategy.Endpoint)
	probeThr uint32 // a 16-bit draw below it probes
}

// The classes of a sampled candidate, best first (see the package doc).
const (
	classCold uint8 = iota
	classUnknown
	classHot
)

func (p *picker) Pick(context.Context) (*strategy.Endpoint, error) {
	eps := p.eps
	n := uint64(len(eps))
	if n == 1 {
		return eps[0].e, nil
	}
	// Two distinct indexes from 32 random bits, as p2c draws them.
	x := uint64(p.s.rand()) * n
	a := x >> 32
	b := (x & (1<<32 - 1) * (n - 1)) >> 32
	b += (b-a)>>63 ^ 1 // b >= a: b+1
	ea, eb := &eps[a], &eps[b]
	now := uint32(p.s.now.Load())
	thr := math.Float64frombits(p.s.thr.Load())
	ref := p.s.lat.Ref()
	ca, va, ta, fa := p.rank(ea, now, thr, ref)
	cb, vb, tb, fb := p.rank(eb, now, thr, ref)
	if p.probe != nil && !(fa && fb) {
		p.maybeProbe(ea.e, fa, eb.e, fb)
	}
	if cb < ca || (cb == ca && (vb < va || (vb == va && tb < ta))) {
		return eb.e, nil
	}
	return ea.e, nil
}

// rank returns en's class, its value within the class and a tie-breaker
// (lower is better; two cold candidates whose latencies are not told apart
// yet go by their estimated RIF), and whether its report is fresh.
func (p *picker) rank(en *entry, now uint32, thr, ref float64) (class uint8, v, tie float64, fresh bool) {
	e := en.e
	lat := e.LatencyNanos()
	if lat <= 0 {
		lat = max(ref, 1)
	}
	inflight := e.InFlight()
	rif, stamp, since := e.ServerLoad()
	fresh = stamp != 0 && strategy.Age(now, stamp) <= p.maxAge && since < p.reuse
	est := float64(inflight)
	if fresh {
		est = rif + float64(min(since, uint64(inflight)))
	}
	load := est * en.invW
	switch {
	case ref > 0 && lat > slowFactor*ref, fresh && load > thr:
		return classHot, (est + 1) * en.invW * max(lat/max(ref, 1), 1), 0, fresh
	case !fresh:
		return classUnknown, float64(inflight+1) * en.invW, float64(e.Picks()) * en.invW, false
	}
	return classCold, load, float64(e.Picks()) * en.invW, true
}

// maybeProbe asks, with probability probe_rate each, for a probe of the
// sampled candidates without a fresh report.
func (p *picker) maybeProbe(a *strategy.Endpoint, fa bool, b *strategy.Endpoint, fb bool) {
	r := p.s.rand()
	if !fa && r&0xffff < p.probeThr {
		p.probe(a)
	}
	if !fb && r>>16 < p.probeThr {
		p.probe(b)
	}
}
