package p2c

import (
	"math"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/fairway-lb/fairway/client/strategy"
)

// staleState is what Tick remembers of one endpoint between ticks.
type staleState struct {
	picks     uint64 // Picks at the last Tick
	idleTicks uint32 // Ticks in a row without a new pick
	failed    uint64 // failed requests at the last Tick
	gen       uint64 // the p2c's generation when last seen in set.All
}

// failures are the codes that are no failure of the endpoint.
var failures = ^strategy.MaskOf(codes.OK, codes.Canceled)

// decay is run by Tick for each endpoint e: it counts the ticks in a row in
// which e got no new pick and, once there have been idle of them, moves the
// estimate a fraction toward ref (a typical estimate of the other
// endpoints, which is also given to e for its failures to be measured
// against). A pod once measured slow then wins a comparison again after a
// while and is re-measured, so one that has recovered gets its traffic
// back. If requests to e failed since the last call, the estimate is raised
// to at least penalty × ref: a fast error, or one on a pod not yet
// measured, must not look attractive. The estimate is capped at maxOver ×
// ref. It reports whether e was idle.
func (st *staleState) decay(e *strategy.Endpoint, ref time.Duration, idle uint32, fraction, penalty, maxOver float64) bool {
	if p := e.Picks(); p != st.picks {
		st.picks, st.idleTicks = p, 0
	} else if st.idleTicks < math.MaxUint32 {
		st.idleTicks++
	}
	e.SetPeerLatency(ref)
	_, failed := e.Finished(failures)
	newFailures := failed != st.failed
	st.failed = failed
	cur, r := e.LatencyNanos(), float64(ref)
	if r <= 0 || (cur <= 0 && !newFailures) {
		return st.idleTicks > 0
	}
	next := cur
	if st.idleTicks >= idle && cur > r {
		next -= fraction * (cur - r)
	}
	if newFailures {
		next = max(next, penalty*r)
	}
	next = min(next, maxOver*r)
	if next != cur {
		e.CompareAndSwapLatency(cur, next) // unless a sample changed it meanwhile
	}
	return st.idleTicks > 0
}

// Tracker keeps the latency estimates of a latency-aware chooser honest,
// from its strategy's Tick: it computes the reference latency (the typical
// estimate of the candidates), decays the stale estimates of endpoints not
// picked for a while toward it and raises those of endpoints whose requests
// failed (see staleState.decay). p2c and load_aware use it. Tick and Init
// are called from the strategy's Tick and Build (serialized by the Pool);
// Ref and Unmeasured from any goroutine.
type Tracker struct {
	penalty float64
	// ref is the reference latency (ns; see Reference), updated by Tick
	// and Init; pickers give it to endpoints not yet measured.
	ref atomic.Int64
	// stale is what Tick remembers of each endpoint.
	stale map[*strategy.Endpoint]*staleState
	gen   uint64 // Tick's generation, to forget endpoints that are gone
}

// NewTracker returns a Tracker whose failed requests count penalty × the
// reference (>= 1).
func NewTracker(penalty float64) *Tracker {
	return &Tracker{penalty: penalty, stale: map[*strategy.Endpoint]*staleState{}}
}

// Stale-estimate decay, per Tick (100 ms by default): after staleTicks ticks
// without a pick, an estimate above the reference moves staleFraction of
// the way toward it each tick; no estimate stays above maxOverRef × the
// reference (see Reference).
const (
	staleTicks    = 10
	staleFraction = 0.05
	maxOverRef    = 32
	refClamp      = 4
)

// Reference returns the mean latency estimate of the candidates, each
// counted at most refClamp × the lowest, so one very slow endpoint does not
// drag it up; 0 when none is measured.
func Reference(cands []strategy.Candidate) time.Duration {
	var lowest time.Duration
	for _, c := range cands {
		if l := c.E.Latency(); l > 0 && (lowest == 0 || l < lowest) {
			lowest = l
		}
	}
	var sum time.Duration
	n := 0
	for _, c := range cands {
		if l := c.E.Latency(); l > 0 {
			sum += min(l, refClamp*lowest)
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return sum / time.Duration(n)
}

// Tick updates the reference from set.Cands and runs the decay step of
// every endpoint of set.All.
func (t *Tracker) Tick(set strategy.Set) {
	ref := Reference(set.Cands)
	t.ref.Store(int64(ref))
	t.gen++
	for _, e := range set.All {
		st := t.stale[e]
		if st == nil {
			st = &staleState{}
			t.stale[e] = st
		}
		st.gen = t.gen
		st.decay(e, ref, staleTicks, staleFraction, t.penalty, maxOverRef)
	}
	for e, st := range t.stale {
		if st.gen != t.gen {
			delete(t.stale, e)
		}
	}
}

// Init sets the reference from cands when no Tick has yet.
func (t *Tracker) Init(cands []strategy.Candidate) {
	if t.ref.Load() == 0 {
		t.ref.Store(int64(Reference(cands)))
	}
}

// Ref returns the reference latency in ns (0 while no endpoint is
// measured).
func (t *Tracker) Ref() float64 { return float64(t.ref.Load()) }

// Unmeasured is the latency assumed for an endpoint not measured yet: the
// reference, or 1 while no endpoint is measured (in-flight alone decides).
func (t *Tracker) Unmeasured() float64 {
	if r := t.ref.Load(); r > 0 {
		return float64(r)
	}
	return 1
}
