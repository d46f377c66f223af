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

// The classes of a sampled candidate, best first (see the package doc),
// in the two top bits of its rank key.
const (
	classCold uint64 = iota << 62
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
	pr := p.s.live.Load()
	ka, fa := p.rank(ea, pr)
	kb, fb := p.rank(eb, pr)
	if p.probe != nil && !(fa && fb) {
		p.maybeProbe(ea.e, fa, eb.e, fb)
	}
	// One comparison of the keys, which the compiler turns into a
	// conditional move: the winner is a coin toss to a branch predictor.
	e := ea.e
	if kb < ka {
		e = eb.e
	}
	return e, nil
}

// rank returns en's rank key (lower is better) and whether its report is
// fresh. The key orders by class, then by a value within the class, then
// by a tie-breaker (this client's picks of en per unit of weight, so that
// like endpoints share its requests evenly, as round robin deals them):
// the class in the two top bits, the value and the tie-breaker as
// float32 bits (non-negative floats order as their bits do) in 31 bits
// each.
func (p *picker) rank(en *entry, pr *params) (key uint64, fresh bool) {
	e := en.e
	lat := e.LatencyNanos()
	if lat <= 0 {
		lat = pr.unref
	}
	inflight := e.InFlight()
	rif, stamp, since := e.ServerLoad()
	fresh = stamp != 0 && strategy.Age(pr.now, stamp) <= p.maxAge && since < p.reuse
	est := float64(inflight)
	if fresh {
		est = rif + float64(min(since, uint64(inflight)))
	}
	load := est * en.invW
	switch {
	case lat > pr.slow, fresh && load > pr.thr:
		return classHot | keyPart(load+en.invW, max(lat*pr.invRef, 1)), fresh
	case !fresh:
		return classUnknown | keyPart(float64(inflight+1)*en.invW, 1) | tieBits(e, en), false
	}
	return classCold | keyPart(load, 1) | tieBits(e, en), true
}

// keyPart is the value v·f of a rank key, in bits 31–61.
func keyPart(v, f float64) uint64 {
	return uint64(math.Float32bits(float32(v*f))) >> 1 << 31
}

// tieBits is the tie-breaker of a rank key, in bits 0–30.
func tieBits(e *strategy.Endpoint, en *entry) uint64 {
	return uint64(math.Float32bits(float32(float64(e.Picks())*en.invW))) >> 1
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
