package strategy

import (
	"sync/atomic"
	"time"

	orcapb "github.com/cncf/xds/go/xds/data/orca/v3"

	"github.com/fairway-lb/fairway/wire"
)

// Server-reported load: the last requests-in-flight count (RIF) a backend
// reported of itself, in an ORCA load report (see wire.RIFMetric), with
// when it arrived. Reports come from the trailers of finished requests
// (FinishDone and FinishTimed read balancer.DoneInfo.ServerLoad), from the
// out-of-band stream and from probes (the owner calls ReportORCA or
// ReportLoad). Arrival is stamped with the owner's coarse clock, which the
// Pool advances in Tick and Build, so no report reads the clock either.
// Strategies read the report on the pick path (ServerReport); it is one
// atomic word in the endpoint's hot cache line, which also holds whether
// the server said it fails (see FailingShare) and the pick count at
// arrival, to tell how many requests this client has sent the endpoint
// since.

// Stamp is a coarse clock reading in the reports' unit: milliseconds, in 32
// bits (wrapping every 49 days; compare stamps with Age). Never 0, which
// marks "no report".
func Stamp(t time.Time) uint32 {
	if s := uint32(t.UnixMilli()); s != 0 {
		return s
	}
	return 1
}

// Age returns how many milliseconds stamp is before now (both from Stamp);
// negative if after.
func Age(now, stamp uint32) int64 { return int64(int32(now - stamp)) }

// ReportORCA records the RIF of an ORCA load report (a
// *orcapb.OrcaLoadReport, as balancer.DoneInfo.ServerLoad and the
// out-of-band listener carry it), and whether the server is failing: its
// errors per second (eps) are more than FailingShare of its requests per
// second (rps_fractional). Anything else, or a report without a valid RIF,
// is ignored. When the endpoint measures latency (see SetLatencyConfig) and
// the report carries the server's mean latency (wire.LatencyMetric), that
// is folded into the estimate as a sample: a server's view of its recent
// calls, which reaches a client that sends the endpoint little or nothing.
// It is a mean over the server's window, so it is folded once per tick of
// the owner's coarse clock (the first report of the tick), not once per
// call. Safe for concurrent use; no lock, no allocation; one map lookup for
// most reports.
func (e *Endpoint) ReportORCA(load any) {
	r, ok := load.(*orcapb.OrcaLoadReport)
	if !ok || r == nil {
		return
	}
	var now uint32
	var prev uint64
	if c := e.coarse; c != nil {
		now, prev = uint32(c.Load()), e.report.Load()
	}
	if rif, ok := r.NamedMetrics[wire.RIFMetric]; ok && now != 0 {
		e.reportAt(rif, r.Eps > FailingShare*r.RpsFractional, now)
	}
	if now != 0 && uint32(prev>>32) == now {
		return // the server's latency was folded in this tick
	}
	if lc := e.lcfg.Load(); lc != nil {
		if ms, ok := r.NamedMetrics[wire.LatencyMetric]; ok && ms > 0 && ms < 1e7 {
			e.ObserveLatency(time.Duration(ms*float64(time.Millisecond)), lc.alpha)
		}
	}
}

// FailingShare is the share of a server's requests that fail, in its load
// report (eps over rps_fractional), above which it counts as failing (see
// ServerReport): a server that fails its requests at once has few in
// flight and reports itself idle.
const FailingShare = 0.1

// ReportLoad records that the endpoint reported rif requests in flight,
// stamped with the owner's coarse clock (see Pool); an endpoint made by
// NewEndpoint has none and ignores it (use ReportLoadAt). Negative and NaN
// values are ignored.
func (e *Endpoint) ReportLoad(rif float64) {
	if c := e.coarse; c != nil {
		e.ReportLoadAt(rif, uint32(c.Load()))
	}
}

// ReportLoadAt is ReportLoad with the arrival stamp given (see Stamp).
// RIF is kept to 1/16 and at most MaxRIF.
func (e *Endpoint) ReportLoadAt(rif float64, stamp uint32) { e.reportAt(rif, false, stamp) }

// ReportFailingAt is ReportLoadAt for a server whose report says it is
// failing (see FailingShare).
func (e *Endpoint) ReportFailingAt(rif float64, stamp uint32) { e.reportAt(rif, true, stamp) }

func (e *Endpoint) reportAt(rif float64, failing bool, stamp uint32) {
	if !(rif >= 0) || stamp == 0 {
		return
	}
	w := uint64(stamp)<<32 | uint64(min(rif, MaxRIF)*16+0.5)<<16 | e.Picks()&0xffff
	if failing {
		w |= reportFailing
	}
	if e.report.Load() != w { // the same report in the same tick: no store
		e.report.Store(w)
	}
}

// MaxRIF is the largest RIF a report keeps; more counts as MaxRIF.
const MaxRIF = 2047

// reportFailing is the report word's failing bit, above RIF × 16.
const reportFailing = 1 << 31

// ServerLoad returns the last reported RIF, its arrival stamp (0: no report
// yet) and how many requests this client has sent the endpoint since (mod
// 2^16).
func (e *Endpoint) ServerLoad() (rif float64, stamp uint32, since uint64) {
	r := e.ServerReport()
	return r.RIF(), r.Stamp(), r.Since()
}

// Report is what a pick reads of an endpoint: its own counts and the last
// server-reported load, as two words read once (a struct of two fields,
// which the compiler keeps in registers).
type Report struct{ load, report uint64 }

// ServerReport returns the endpoint's counts and its last report. Called on
// the pick path: two atomic loads of the endpoint's own cache line.
func (e *Endpoint) ServerReport() Report { return Report{e.load.Load(), e.report.Load()} }

// InFlight returns the requests picked and not yet finished.
func (r Report) InFlight() int64 { return int64(r.load & inflightMask) }

// Picks returns the requests picked in total (wraps at 2^40).
func (r Report) Picks() uint64 { return r.load >> inflightBits }

// RIF returns the last reported RIF.
func (r Report) RIF() float64 { return float64(r.report>>16&0x7fff) * (1.0 / 16) }

// Stamp returns the last report's arrival (0: no report yet).
func (r Report) Stamp() uint32 { return uint32(r.report >> 32) }

// Since returns how many requests this client has sent the endpoint since
// the last report arrived (mod 2^16).
func (r Report) Since() uint64 { return (r.Picks() - r.report) & 0xffff }

// Failing reports whether the last report said the server fails more than
// FailingShare of its requests.
func (r Report) Failing() bool { return r.report&reportFailing != 0 }

// ProbeWanted reports whether probes of e are worth sending: false for a
// while after one came back without a load report (see ProbeUnanswered).
// Safe for concurrent use; one atomic load.
func (e *Endpoint) ProbeWanted() bool {
	c := e.coarse
	if c == nil {
		return true
	}
	off := e.probeOff.Load()
	return off == 0 || Age(uint32(c.Load()), off) >= 0
}

// ProbeUnanswered records that a probe of e brought no load report (the
// backend does not report): ProbeWanted is false for d.
func (e *Endpoint) ProbeUnanswered(d time.Duration) {
	if c := e.coarse; c != nil {
		e.probeOff.Store(max(uint32(c.Load())+uint32(d.Milliseconds()), 1))
	}
}

// coarseClock is a Pool's clock as strategies' reports see it: a Stamp,
// advanced in Tick and Build.
type coarseClock = atomic.Int64
