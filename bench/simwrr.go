package bench

import (
	"math"
	"time"

	"github.com/fairway-lb/fairway/loadreport"
)

// grpc_wrr in the simulation: grpc-go's weighted_round_robin (gRFC A58)
// with its defaults, one balancer per channel, fed by the per-call ORCA
// reports of the requests the channel's own picks complete (a request that
// hits its deadline brings none), which each simulated pod computes with
// the loadreport.Reporter the real pods run. As grpc-go does, a channel
// recomputes its weights every wrrUpdatePeriod (each channel at its own
// phase) and at once when the membership changes; an endpoint's weight is
// rps/(utilization + eps/rps × wrrPenalty) from its last report, counts
// only after wrrBlackout of reports, expires after wrrExpiration, and an
// endpoint without a usable weight gets the mean of the others. The
// scheduler is grpc-go's static-stride (EDF) one over weights scaled to
// 16 bits, round robin when fewer than two weights are known or all are
// equal.
//
// The simulation measures the steady state: the pods there from the start
// have reported for longer than the blackout (their first report counts at
// once), while a pod that joins waits out the whole blackout.
const (
	wrrBlackout     = 10 * time.Second
	wrrUpdatePeriod = time.Second
	wrrExpiration   = 3 * time.Minute
	wrrPenalty      = 1.0
)

// wrrEndpoint is one endpoint's weight state in one channel.
type wrrEndpoint struct {
	weight        float64
	lastUpdated   time.Duration
	nonEmptySince time.Duration
	reported      bool // lastUpdated is set
	since         bool // nonEmptySince is set
}

// wrrChannel is one channel's weighted_round_robin balancer.
type wrrChannel struct {
	eps        []wrrEndpoint // by pod index
	order      []int         // the picker's endpoints (pod indexes)
	weights    []uint16      // the scheduler's; nil = round robin
	idx        uint32
	nextUpdate time.Duration
}

func (s *sim) newWRRChannel(ch *simChannel) *wrrChannel {
	w := &wrrChannel{eps: make([]wrrEndpoint, len(s.pods))}
	for p, pod := range s.pods {
		if pod.live { // steady state: past the blackout already
			w.eps[p] = wrrEndpoint{nonEmptySince: -wrrBlackout, since: true}
		}
	}
	w.nextUpdate = time.Duration(ch.rng.Int64N(int64(wrrUpdatePeriod)))
	w.newPicker(s, ch)
	return w
}

// newPicker is a membership change: a new picker over the live pods, from a
// random point, with its own update ticker.
func (w *wrrChannel) newPicker(s *sim, ch *simChannel) {
	w.order = append(w.order[:0], s.live...)
	w.idx = ch.rng.Uint32()
	w.nextUpdate = s.now + wrrUpdatePeriod
	w.regenerate(s.now)
}

// report is a per-call ORCA report from pod p reaching the channel.
func (w *wrrChannel) report(p int, l loadreport.Load, now time.Duration) {
	if l.Utilization == 0 || l.QPS == 0 {
		return // grpc-go ignores an empty report
	}
	e := &w.eps[p]
	e.weight = l.QPS / (l.Utilization + l.EPS/l.QPS*wrrPenalty)
	e.lastUpdated, e.reported = now, true
	if !e.since {
		e.nonEmptySince, e.since = now, true
	}
}

// tick regenerates the scheduler when the channel's update period is due.
func (w *wrrChannel) tick(now time.Duration) {
	if now >= w.nextUpdate {
		w.regenerate(now)
		for w.nextUpdate <= now {
			w.nextUpdate += wrrUpdatePeriod
		}
	}
}

func (w *wrrChannel) weight(p int, now time.Duration) float64 {
	e := &w.eps[p]
	if !e.reported {
		return 0
	}
	if now-e.lastUpdated >= wrrExpiration {
		e.since = false
		return 0
	}
	if !e.since || now-e.nonEmptySince < wrrBlackout {
		return 0
	}
	return e.weight
}

// regenerate builds the scheduler as grpc-go's newScheduler does.
func (w *wrrChannel) regenerate(now time.Duration) {
	n := len(w.order)
	w.weights = nil
	if n < 2 {
		return
	}
	ws := make([]float64, n)
	var sum, hi float64
	zero := 0
	for i, p := range w.order {
		ws[i] = w.weight(p, now)
		sum += ws[i]
		hi = max(hi, ws[i])
		if ws[i] == 0 {
			zero++
		}
	}
	if zero >= n-1 {
		return
	}
	scale := math.MaxUint16 / hi
	mean := uint16(math.Round(scale * sum / float64(n-zero)))
	weights := make([]uint16, n)
	equal := true
	for i, x := range ws {
		if x == 0 {
			weights[i] = mean
			continue
		}
		weights[i] = uint16(math.Round(scale * x))
		if weights[i] != mean {
			equal = false
		}
	}
	if !equal {
		w.weights = weights
	}
}

// pick returns the next pod; -1 when there is none.
func (w *wrrChannel) pick() int {
	n := uint64(len(w.order))
	if n == 0 {
		return -1
	}
	if w.weights == nil {
		w.idx++
		return w.order[uint64(w.idx)%n]
	}
	const offset = math.MaxUint16 / 2
	for {
		w.idx++
		idx := uint64(w.idx)
		i, gen := idx%n, idx/n
		weight := uint64(w.weights[i])
		if (weight*gen+i*offset)%math.MaxUint16 >= math.MaxUint16-weight {
			return w.order[i]
		}
	}
}
