package strategy

import (
	"math"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"
)

// Latency sampling. Timing every request costs two clock reads per request;
// instead each endpoint has one sampling slot. The Pool's Tick arms it
// (ArmSample) when no timed request is in flight; the next pick of the
// endpoint that wins the slot (StartSample: one atomic load when the slot is
// not armed) reads the clock and returns TimedDone, whose FinishTimed reads
// it again and folds the latency into the estimate. So clock reads are
// bounded by two per endpoint per tick, whatever the request rate, and a
// client that sends less than one request per endpoint per tick times
// nearly all of them. A failed request counts as a slow one (see
// failureSample), so that fast errors do not look attractive.
const (
	sampleIdle   = 0
	sampleWanted = -1
	sampleTaking = -2
)

// latencyConfig is how an endpoint measures latency; immutable.
type latencyConfig struct {
	clock   clock.PassiveClock
	base    time.Time // monotonic origin of the sample slot's start times
	alpha   float64
	penalty float64
}

// SetLatencyConfig turns latency measurement on with the clock, EWMA alpha
// and failure penalty (alpha <= 0 turns it off). Called by the owner (from
// Build/Tick context); safe while requests are in flight.
func (e *Endpoint) SetLatencyConfig(c clock.PassiveClock, alpha, penalty float64) {
	if alpha <= 0 || c == nil {
		e.lcfg.Store(nil)
		e.sample.CompareAndSwap(sampleWanted, sampleIdle)
		return
	}
	if old := e.lcfg.Load(); old != nil && old.clock == c && old.alpha == alpha && old.penalty == max(penalty, 1) {
		return
	}
	e.lcfg.Store(&latencyConfig{clock: c, base: c.Now(), alpha: alpha, penalty: max(penalty, 1)})
	e.sample.CompareAndSwap(sampleIdle, sampleWanted) // time the first request
}

// SetPeerLatency records the typical latency of e's peers (a latency-aware
// strategy's reference, from its Tick). A failed request of e counts as at
// least the failure penalty times the higher of e's estimate and this.
func (e *Endpoint) SetPeerLatency(d time.Duration) { e.peer.Store(int64(d)) }

// failureSample is the latency recorded for a failed request that took d:
// at least the penalty times the estimate, or times the peers' typical
// latency when that is higher (a fast error on a pod not measured yet).
func (e *Endpoint) failureSample(lc *latencyConfig, d time.Duration) time.Duration {
	base := max(e.Latency(), time.Duration(e.peer.Load()))
	return max(d, time.Duration(float64(base)*lc.penalty))
}

// ArmSample asks for the next request to e to be timed, unless one timed
// request is already in flight; that one, if it has been running for longer
// than the estimate at now, already proves the endpoint slower, and its
// elapsed time is folded in at once (a peak). Called by the Pool's Tick.
func (e *Endpoint) ArmSample(now time.Time) {
	lc := e.lcfg.Load()
	if lc == nil {
		return
	}
	switch s := e.sample.Load(); {
	case s == sampleIdle:
		e.sample.CompareAndSwap(sampleIdle, sampleWanted)
	case s > 0:
		if d := now.Sub(lc.base) - time.Duration(s-1); d > e.Latency() {
			e.ObserveLatency(d, lc.alpha)
		}
	}
}

// StartSample is called on the pick path after Picked: it reports whether
// this request is the one to time, in which case it has stored the start
// time and the caller must finish the request with FinishTimed (TimedDone).
// One atomic load when no sample is wanted.
func (e *Endpoint) StartSample() bool {
	return e.sample.Load() == sampleWanted && e.startSample() // inlined fast path
}

func (e *Endpoint) startSample() bool {
	if !e.sample.CompareAndSwap(sampleWanted, sampleTaking) {
		return false
	}
	lc := e.lcfg.Load()
	if lc == nil {
		e.sample.Store(sampleIdle)
		return false
	}
	e.sample.Store(int64(lc.clock.Since(lc.base)) + 1)
	return true
}

// FinishDone is FinishErr shaped as a PickResult.Done, which also records
// the ORCA load report of the call's trailer, if any (ReportORCA); its method value,
// made once per endpoint (Done), serves every request. With latency
// measurement on (SetLatencyConfig), a failure also counts as a slow
// request: the estimate is raised to the failure penalty times itself (or
// times the peers' latency, when higher).
func (e *Endpoint) FinishDone(di balancer.DoneInfo) {
	if di.ServerLoad != nil {
		e.ReportORCA(di.ServerLoad)
	}
	if di.Err == nil {
		e.load.Add(^uint64(0)) // the common case, in one call
		return
	}
	if lc := e.lcfg.Load(); lc != nil {
		if f := e.failureSample(lc, 0); f > 0 {
			e.ObserveLatency(f, lc.alpha)
		}
	}
	e.Finish(status.Code(di.Err))
}

// FinishTimed is FinishDone for the request StartSample chose: it observes
// the request's latency (a failure counts as at least the penalty times the
// estimate), frees the slot and finishes the request.
func (e *Endpoint) FinishTimed(di balancer.DoneInfo) {
	if di.ServerLoad != nil {
		e.ReportORCA(di.ServerLoad)
	}
	s := e.sample.Load()
	if lc := e.lcfg.Load(); lc != nil && s > 0 {
		// d < 0 only if the config changed meanwhile: no sample then.
		if d := lc.clock.Since(lc.base) - time.Duration(s-1); d >= 0 {
			if di.Err != nil {
				d = e.failureSample(lc, d)
			}
			e.ObserveLatency(d, lc.alpha)
		}
	}
	e.sample.Store(sampleIdle)
	if di.Err == nil {
		e.load.Add(^uint64(0))
		return
	}
	e.Finish(status.Code(di.Err))
}

// ObserveLatency folds one request's latency into the peak-EWMA estimate:
// a sample above the estimate replaces it (peak), a lower one decays it with
// weight alpha. Lock-free (compare-and-swap loop).
func (e *Endpoint) ObserveLatency(d time.Duration, alpha float64) {
	s := float64(d)
	for {
		old := e.latency.Load()
		cur := math.Float64frombits(old)
		next := s
		if old != 0 && s < cur {
			next = cur + alpha*(s-cur)
		}
		if e.latency.CompareAndSwap(old, math.Float64bits(next)) {
			return
		}
	}
}

// CompareAndSwapLatency replaces the estimate (ns, as LatencyNanos returns
// it) with next if it still is old, and reports whether it did: for a
// strategy's Tick that moves an estimate unless a sample changed it
// meanwhile.
func (e *Endpoint) CompareAndSwapLatency(old, next float64) bool {
	return e.latency.CompareAndSwap(math.Float64bits(old), math.Float64bits(next))
}

// Latency returns the peak-EWMA latency estimate (0 when none yet).
func (e *Endpoint) Latency() time.Duration {
	return time.Duration(math.Float64frombits(e.latency.Load()))
}

// LatencyNanos is Latency as a float64 of nanoseconds, for the pick path.
func (e *Endpoint) LatencyNanos() float64 { return math.Float64frombits(e.latency.Load()) }
