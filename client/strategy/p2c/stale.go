package p2c

import (
	"math"
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
