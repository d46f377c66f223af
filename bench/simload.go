package bench

import (
	"time"

	"google.golang.org/grpc/balancer"

	orcapb "github.com/cncf/xds/go/xds/data/orca/v3"

	"github.com/fairway-lb/fairway/client/strategy"
	"github.com/fairway-lb/fairway/wire"
)

// LoadAware is the Fairway client with the load_aware strategy as the
// default chain's terminal (zone_affinity, slow_start and outlier around
// it), balancing on the load the pods report.
const LoadAware = "load_aware"

// loadAwareChain is LoadAware's chain.
const loadAwareChain = `[{"zone_affinity":{}},{"slow_start":{}},{"outlier":{}},{"load_aware":{}}]`

func init() { strategyChains[LoadAware] = loadAwareChain }

// Server-reported load in the simulation. Simulated pods report their load
// as pods using package loadreport do (see wire.RIFMetric): a request a pod
// answered (served, or failed at once) finishes with the pod's requests in
// flight (being served or queued, this one excluded; simPod.inflight, as the
// pod's loadreport.Reporter counts them) in DoneInfo.ServerLoad, which
// the endpoint's done function records as the balancer's does from a
// trailer. A probe a strategy asks for (strategy.BuildOptions.Probe) reads
// the pod's requests in flight when it is sent and reaches the channel's
// endpoint SimRTT later, through the same ReportORCA as a real probe's
// trailer. A chain that asks for out-of-band reports (Needs.OOBInterval)
// gets every pod's report on every channel at that interval, each stream
// (channel, pod) in its own phase drawn from the seed, as streams opened at
// different moments deliver them (streams opened together would report in
// step, and every client would learn at once which pods are idle). Every
// Fairway chain gets the reports; load_aware balances on them, and every
// latency-measuring chain folds their latency in.

// simProbe is a probe under way: all take SimRTT, so they arrive in the
// order they were sent.
type simProbe struct {
	e    *strategy.Endpoint
	load podReport
}

// evProbe is a probe's arrival at its channel: the oldest probe under way;
// evOOB the out-of-band reports' arrival at every channel.
const (
	evProbe evKind = 100
	evOOB   evKind = 101
)

// loadReports is the simulator's share of server-reported load.
type loadReports struct {
	report  *orcapb.OrcaLoadReport // reused: done functions read it synchronously
	probes  []simProbe             // under way, oldest first
	oobSlot uint64                 // out-of-band slots delivered so far
}

// prober returns the probe function of the simulator's channels.
func (s *sim) prober() func(*strategy.Endpoint) {
	return func(e *strategy.Endpoint) {
		p, ok := s.epPod[e]
		if !ok || !s.pods[p].live {
			return
		}
		s.loads.probes = append(s.loads.probes, simProbe{e: e, load: s.podLoad(p)})
		s.push(event{at: s.now + SimRTT, kind: evProbe})
	}
}

// probeDone delivers the oldest probe under way.
func (s *sim) probeDone() {
	pr := s.loads.probes[0]
	s.loads.probes = s.loads.probes[1:]
	s.loads.orca(pr.load)
	pr.e.ReportORCA(s.loads.report)
}

// oobSlots is how many phases the out-of-band streams are spread over: the
// stream of channel c for pod p reports at the interval, offset by
// oobPhase(c, p) slots of interval/oobSlots, as streams opened at
// different moments deliver them.
const oobSlots = 16

// startOOB schedules the first out-of-band reports when the chain asks for
// them.
func (s *sim) startOOB() {
	if s.chain != nil && s.chain.Needs.OOBInterval > 0 {
		s.push(event{at: s.oobStep(), kind: evOOB})
	}
}

// oobStep is the time between two slots of out-of-band reports.
func (s *sim) oobStep() time.Duration {
	return max(s.chain.Needs.OOBInterval/oobSlots, time.Microsecond)
}

// oobPhase is the slot of the stream of channel c for pod p: drawn from the
// seed, the same for every strategy of a run.
func (s *sim) oobPhase(c, p int) uint64 {
	x := s.cfg.Seed ^ uint64(c)<<32 ^ uint64(p)*0x9e3779b97f4a7c15
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x % oobSlots
}

// oob delivers the reports of the streams in the current slot and schedules
// the next slot.
func (s *sim) oob() {
	slot := s.loads.oobSlot % oobSlots
	s.loads.oobSlot++
	for c, ch := range s.chans {
		for _, e := range ch.fw.pool.Endpoints() {
			if p, ok := s.epPod[e]; ok && s.pods[p].live && s.oobPhase(c, p) == slot {
				s.loads.orca(s.podLoad(p))
				e.ReportORCA(s.loads.report)
			}
		}
	}
	s.push(event{at: s.now + s.oobStep(), kind: evOOB})
}

// podReport is what a pod reports of its load.
type podReport struct {
	rif, latMS float64 // requests in flight; mean latency in ms (0: none)
	rps, eps   float64 // requests and errors per second
}

// podLoad is what pod p reports: its requests in flight, the mean latency
// of its recent calls, its requests and errors per second, as its
// loadreport.Reporter counts them.
func (s *sim) podLoad(p int) podReport {
	sp := s.pods[p]
	l := sp.load.Load()
	return podReport{rif: float64(sp.inflight), latMS: float64(l.Latency) / float64(time.Millisecond), rps: l.QPS, eps: l.EPS}
}

// orca fills the reused load report with pr (latency left out when 0).
func (l *loadReports) orca(pr podReport) {
	if l.report == nil {
		l.report = &orcapb.OrcaLoadReport{NamedMetrics: map[string]float64{}}
	}
	l.report.NamedMetrics[wire.RIFMetric] = pr.rif
	l.report.RpsFractional, l.report.Eps = pr.rps, pr.eps
	delete(l.report.NamedMetrics, wire.LatencyMetric)
	if pr.latMS > 0 {
		l.report.NamedMetrics[wire.LatencyMetric] = pr.latMS
	}
}

// reportDone tells a channel's balancer how a Fairway request ended, as
// gRPC does, through the done function of its pick (nil for other
// strategies), with the pod's load report when the pod answered.
func (s *sim) reportDone(r *simReq, err error, answered bool) {
	if r.onDone == nil {
		return
	}
	di := balancer.DoneInfo{Err: err}
	if answered {
		s.loads.orca(s.podLoad(r.pod)) // finish has counted r out
		di.ServerLoad = s.loads.report
	}
	r.onDone(di)
}
