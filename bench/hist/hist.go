// Package hist is a log-linear latency histogram in the style of HDR
// histograms: values are grouped into 64 linear sub-buckets per power of two,
// so every recorded value is kept to within 1/64 (1.6%) of its true value,
// over the whole range from 1 µs to days, in a fixed 18 KiB of counters.
//
// Record is lock-free and may be called from any number of goroutines at
// once; the read methods (Count, Quantile, ...) may run concurrently with
// Record and see some consistent-enough prefix of the recordings.
package hist

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

const (
	subBits    = 6
	subBuckets = 1 << subBits // linear sub-buckets per power of two
	maxShift   = 40           // covers values up to 2^46 µs (≈ 2 years)
	numBuckets = subBuckets + maxShift*subBuckets
)

// Histogram counts durations at microsecond resolution. The zero value is
// ready to use.
type Histogram struct {
	counts [numBuckets]atomic.Int64
	total  atomic.Int64
	sumUS  atomic.Int64
	maxUS  atomic.Int64
}

// index maps a value in µs to its bucket.
func index(v int64) int {
	if v < subBuckets {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - subBits - 1 // v>>shift in [64, 128)
	if shift >= maxShift {
		return numBuckets - 1
	}
	return subBuckets + shift*subBuckets + int(v>>shift) - subBuckets
}

// lowest and width of bucket i, in µs.
func bounds(i int) (lo, width int64) {
	if i < subBuckets {
		return int64(i), 1
	}
	shift := (i - subBuckets) / subBuckets
	sub := int64((i-subBuckets)%subBuckets) + subBuckets
	return sub << shift, 1 << shift
}

// Record adds one duration.
func (h *Histogram) Record(d time.Duration) {
	v := d.Microseconds()
	if v < 0 {
		v = 0
	}
	h.counts[index(v)].Add(1)
	h.total.Add(1)
	h.sumUS.Add(v)
	for {
		m := h.maxUS.Load()
		if v <= m || h.maxUS.CompareAndSwap(m, v) {
			break
		}
	}
}

// Count is the number of recorded values.
func (h *Histogram) Count() int64 { return h.total.Load() }

// Mean is the mean of the recorded values; 0 when empty.
func (h *Histogram) Mean() time.Duration {
	n := h.total.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sumUS.Load()/n) * time.Microsecond
}

// Max is the largest recorded value.
func (h *Histogram) Max() time.Duration { return time.Duration(h.maxUS.Load()) * time.Microsecond }

// Quantile returns the value at quantile q in [0, 1]: the midpoint of the
// bucket holding the ceil(q·n)-th smallest value (never above Max). 0 when
// empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.total.Load()
	if n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(n)))
	if rank < 1 {
		rank = 1
	}
	var seen int64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			lo, w := bounds(i)
			v := lo + w/2
			if m := h.maxUS.Load(); v > m {
				v = m
			}
			return time.Duration(v) * time.Microsecond
		}
	}
	return h.Max()
}

// Merge adds every value of o to h.
func (h *Histogram) Merge(o *Histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c != 0 {
			h.counts[i].Add(c)
		}
	}
	h.total.Add(o.total.Load())
	h.sumUS.Add(o.sumUS.Load())
	for {
		m, v := h.maxUS.Load(), o.maxUS.Load()
		if v <= m || h.maxUS.CompareAndSwap(m, v) {
			break
		}
	}
}

// Point is one step of a cumulative distribution.
type Point struct {
	Value    time.Duration // upper edge of a bucket
	Fraction float64       // fraction of values <= Value
}

// CDF returns the cumulative distribution at every non-empty bucket.
func (h *Histogram) CDF() []Point {
	n := h.total.Load()
	if n == 0 {
		return nil
	}
	var pts []Point
	var seen int64
	for i := range h.counts {
		c := h.counts[i].Load()
		if c == 0 {
			continue
		}
		seen += c
		lo, w := bounds(i)
		pts = append(pts, Point{Value: time.Duration(lo+w) * time.Microsecond, Fraction: float64(seen) / float64(n)})
	}
	return pts
}
