package hist

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestHistogram_QuantilesWithinPrecision(t *testing.T) {
	var h Histogram
	r := rand.New(rand.NewPCG(1, 2))
	vals := make([]time.Duration, 0, 100000)
	for range 100000 {
		d := time.Duration(r.ExpFloat64() * float64(5*time.Millisecond))
		vals = append(vals, d)
		h.Record(d)
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := vals[int(q*float64(len(vals)))-1]
		got := h.Quantile(q)
		if diff := float64(got-want) / float64(want); diff > 0.02 || diff < -0.02 {
			t.Errorf("Quantile(%v) = %v, want %v within 2%%", q, got, want)
		}
	}
	if got, want := h.Count(), int64(len(vals)); got != want {
		t.Errorf("Count() = %d, want %d", got, want)
	}
	cdf := h.CDF()
	if last := cdf[len(cdf)-1].Fraction; last != 1 {
		t.Errorf("CDF ends at %v, want 1", last)
	}
}

func TestHistogram_IndexBoundsRoundTrip(t *testing.T) {
	for _, v := range []int64{0, 1, 63, 64, 65, 127, 128, 1000, 123456, 1 << 40} {
		lo, w := bounds(index(v))
		if v < lo || v >= lo+w {
			t.Errorf("value %d in bucket [%d, %d)", v, lo, lo+w)
		}
	}
}

func TestHistogram_ConcurrentRecordAndMerge(t *testing.T) {
	var a, b Histogram
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 1000 {
				a.Record(time.Duration(i*1000+j) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	b.Record(time.Hour)
	b.Merge(&a)
	if got, want := b.Count(), int64(4001); got != want {
		t.Errorf("Count() = %d, want %d", got, want)
	}
	if got, want := b.Max(), time.Hour; got != want {
		t.Errorf("Max() = %v, want %v", got, want)
	}
}
