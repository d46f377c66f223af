package bench

import (
	"math/rand/v2"
	"time"
)

// arrival is one request of the open-loop schedule.
type arrival struct {
	at time.Duration // offset from the start of the run
	ch int32         // client channel that sends it
}

// schedule draws Poisson arrivals at rate per second over d, each on a
// uniformly chosen channel of n, at most limit of them. The same seed gives
// the same schedule, so every strategy sees the same arrival sequence.
func schedule(seed uint64, rate float64, d time.Duration, n, limit int) []arrival {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	out := make([]arrival, 0, min(limit, int(rate*d.Seconds()*1.1)+16))
	var t float64
	end := d.Seconds()
	for len(out) < limit {
		t += r.ExpFloat64() / rate
		if t >= end {
			break
		}
		out = append(out, arrival{at: time.Duration(t * float64(time.Second)), ch: int32(r.IntN(n))})
	}
	return out
}

// channelZones assigns a zone to each of n channels: zone i gets a share
// proportional to weights[i] (equal when weights is nil), in a fixed order.
func channelZones(n int, zones []string, weights []float64) []string {
	if len(weights) == 0 {
		weights = make([]float64, len(zones))
		for i := range weights {
			weights[i] = 1
		}
	}
	var sum float64
	for _, w := range weights {
		sum += w
	}
	out := make([]string, 0, n)
	acc := 0.0
	for i, z := range zones {
		acc += weights[i]
		upto := int(acc/sum*float64(n) + 0.5)
		if i == len(zones)-1 {
			upto = n
		}
		for len(out) < upto {
			out = append(out, z)
		}
	}
	return out
}
