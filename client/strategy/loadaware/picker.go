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
	failAge  int64  // ms a failing report counts (failingAge × maxAge)
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
	r := e.ServerReport()
	age := strategy.Age(pr.now, r.Stamp())
	fresh = r.Stamp() != 0 && age <= p.maxAge && r.Since() < p.reuse
	est := float64(r.InFlight())
	if fresh {
		est = r.RIF() + float64(min(r.Since(), uint64(r.InFlight())))
	}
	load := est * en.invW
	switch {
	case r.Failing() && age <= p.failAge:
		return classHot | keyPart(float64(r.InFlight()+1)*en.invW, failingFactor), true
	case lat > pr.slow, fresh && load > pr.thr:
		return classHot | keyPart(load+en.invW, max(lat*pr.invRef, 1)), fresh
	case !fresh:
		return classUnknown | keyPart(float64(r.InFlight()+1)*en.invW, 1) | tieBits(r.Picks(), en), false
	}
	return classCold | keyPart(load, 1) | tieBits(r.Picks(), en), true
}

// keyPart is the value v·f of a rank key, in bits 31–61.
func keyPart(v, f float64) uint64 {
	return uint64(math.Float32bits(float32(v*f))) >> 1 << 31
}

// tieBits is the tie-breaker of a rank key, in bits 0–30.
func tieBits(picks uint64, en *entry) uint64 {
	return uint64(math.Float32bits(float32(float64(picks)*en.invW))) >> 1
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
