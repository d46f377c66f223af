package strategy

import (
	"math"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fairway-lb/fairway/client/endpointattr"
)

// Endpoint is one backend address and its live state. A Pool creates one
// per address and keeps it while the address stays in the membership, so
// counters survive picker rebuilds. Counters are atomics updated on the pick
// and done paths; the other fields are written only by the Pool (or the
// owner that made the Endpoint) while no Build or Tick runs, and by
// strategies' Tick/Build through the cross-strategy contracts below.
//
// Everything a pick and its done touch (the load, latency and sampling
// counters, SubConn and the done functions) fills the Endpoint's own 64
// bytes, one cache line: a pick among 1,000 endpoints reads two lines, and
// the 64 KiB they take stay in cache. The rest (Addr, Info, Initial, Added,
// outcome counters, exclusion state) lives behind one pointer and is reached
// through the embedded *EndpointState.
type Endpoint struct {
	// SubConn is the owner's connection handle, returned with each pick
	// (set before the Endpoint reaches any Build). Done and TimedDone (in
	// EndpointState) are the done functions a PoolPicker returns: Done
	// (FinishDone) for most requests, TimedDone (FinishTimed) for the one
	// whose latency is being sampled (see StartSample). The Pool sets them
	// at creation, once, so that a pick allocates no method value.
	SubConn balancer.SubConn
	Done    func(balancer.DoneInfo)
	// report is the last server-reported load (report.go): arrival Stamp
	// (high 32 bits; 0 = none), the failing bit, RIF × 16 (15 bits) and
	// the low 16 bits of Picks when it arrived.
	report atomic.Uint64

	// load packs picks (high 40 bits) and in-flight requests (low 24 bits)
	// so that a pick is a single atomic add and a successful request's
	// done another.
	load    atomic.Uint64
	latency atomic.Uint64 // peak-EWMA latency in ns, as float64 bits
	// sample is the latency-sampling slot: sampleIdle, sampleWanted,
	// sampleTaking, or 1 + the start (ns since lcfg.base) of the one timed
	// request in flight.
	sample atomic.Int64

	*EndpointState
}

// EndpointState is the part of an Endpoint that picks do not touch.
type EndpointState struct {
	// TimedDone is the done function of a sampled request (see Endpoint).
	TimedDone func(balancer.DoneInfo)
	// Addr is the endpoint's address (immutable).
	Addr string
	// Info is what the resolver says of the endpoint. The Pool updates it
	// only while no Build or Tick runs; pickers must not read it.
	Info endpointattr.Info
	// Initial is true for endpoints of the Pool's first membership update
	// (immutable).
	Initial bool
	// Added is when this client first saw the endpoint: Info.FirstSeen when
	// set, else the Pool's clock at creation (immutable).
	Added time.Time

	failed [17]atomic.Uint64 // finished requests by code; OK is derived

	// Cross-strategy contracts, written by strategies from Build/Tick and
	// read by anyone (other strategies, inspection, metrics).
	excludedUntil   atomic.Int64  // unix ns; 0 when not excluded (see Exclude)
	exclusions      atomic.Uint64 // times excluded
	effectiveWeight atomic.Uint64 // float64 bits; 0 = unset (see SetEffectiveWeight)

	// Latency sampling (latency.go).
	lcfg atomic.Pointer[latencyConfig] // nil: latency not measured
	peer atomic.Int64                  // typical latency of the peers, ns (SetPeerLatency)

	coarse   *coarseClock  // the owner's coarse clock for reports; nil for NewEndpoint's
	probeOff atomic.Uint32 // Stamp until which probes are not wanted; 0: none (report.go)
}

const (
	inflightBits = 24
	inflightMask = 1<<inflightBits - 1
	onePick      = 1<<inflightBits | 1
)

// NewEndpoint returns an Endpoint for addr with info, first seen at added
// (weight 1 when info has none). Pools make their endpoints themselves;
// NewEndpoint is for tests and tools that drive strategies directly.
func NewEndpoint(addr string, info endpointattr.Info, added time.Time) *Endpoint {
	if info.Weight == 0 {
		info.Weight = 1
	}
	return &Endpoint{EndpointState: &EndpointState{Addr: addr, Info: info, Added: added}}
}

// Picked records that a request was sent to e: one atomic add. Every Picked
// must be followed by one Finish.
func (e *Endpoint) Picked() { e.load.Add(onePick) }

// InFlight returns the requests picked and not yet finished.
func (e *Endpoint) InFlight() int64 { return int64(e.load.Load() & inflightMask) }

// Picks returns the requests picked in total (wraps at 2^40).
func (e *Endpoint) Picks() uint64 { return e.load.Load() >> inflightBits }

// Finish records the end of one request with its status code: it decrements
// the in-flight count and, for a code other than OK, counts it. Safe for
// concurrent use; no locks; one atomic add for OK.
func (e *Endpoint) Finish(c codes.Code) {
	e.load.Add(^uint64(0)) // -1: in-flight is >= 1 here
	if c == codes.OK {
		return
	}
	if uint32(c) >= uint32(len(e.failed)) {
		c = codes.Unknown
	}
	e.failed[c].Add(1)
}

// FinishErr is Finish with the code of err (nil is OK).
func (e *Endpoint) FinishErr(err error) {
	if err == nil {
		e.Finish(codes.OK)
		return
	}
	e.Finish(status.Code(err))
}

// Outcomes returns how many requests ended with code c.
func (e *Endpoint) Outcomes(c codes.Code) uint64 {
	if c == codes.OK {
		total, notOK := e.Finished(^CodeMask(1))
		return total - notOK
	}
	if uint32(c) >= uint32(len(e.failed)) {
		return 0
	}
	return e.failed[c].Load()
}

// Finished returns how many requests have ended, and how many of them ended
// with a code in mask (bit 1<<code set; OK is never matched).
func (e *Endpoint) Finished(mask CodeMask) (total, matching uint64) {
	l := e.load.Load()
	total = l>>inflightBits - l&inflightMask
	for c := 1; c < len(e.failed); c++ {
		if mask.Has(codes.Code(c)) {
			matching += e.failed[c].Load()
		}
	}
	return total, min(matching, total)
}

// Exclusion is a cross-strategy contract. A strategy that keeps an endpoint
// out of its inner strategy's candidates for a while (outlier's ejection)
// records the verdict with Exclude and lifts it with Readmit, from its
// Build or Tick; outer strategies (zone_affinity counts an excluded
// endpoint as unusable), the balancer's inspection and its metrics read it.

// Exclude records that e is kept out of the candidates until until, and
// counts one exclusion.
func (e *Endpoint) Exclude(until time.Time) {
	e.excludedUntil.Store(until.UnixNano())
	e.exclusions.Add(1)
}

// Readmit lifts an exclusion.
func (e *Endpoint) Readmit() { e.excludedUntil.Store(0) }

// Excluded reports whether e is excluded at now.
func (e *Endpoint) Excluded(now time.Time) bool {
	u := e.excludedUntil.Load()
	return u != 0 && now.UnixNano() < u
}

// ExcludedUntil returns the end of the last exclusion not readmitted; zero
// when there is none.
func (e *Endpoint) ExcludedUntil() time.Time {
	if u := e.excludedUntil.Load(); u != 0 {
		return time.Unix(0, u)
	}
	return time.Time{}
}

// Exclusions returns how many times e was excluded.
func (e *Endpoint) Exclusions() uint64 { return e.exclusions.Load() }

// SetEffectiveWeight is a cross-strategy contract for inspection only: a
// strategy that scales candidates' weights (slow_start) records the weight
// it currently applies, from Build. No strategy reads it.
func (e *Endpoint) SetEffectiveWeight(w float64) { e.effectiveWeight.Store(math.Float64bits(w)) }

// EffectiveWeight returns the last weight recorded by SetEffectiveWeight; 0
// when none was.
func (e *Endpoint) EffectiveWeight() float64 {
	if b := e.effectiveWeight.Load(); b != 0 {
		return math.Float64frombits(b)
	}
	return 0
}
