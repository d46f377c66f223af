package bench

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/client/strategy"
	"github.com/fairway-lb/fairway/loadreport"
)

// TestSim_ProbesAndTrailersCarryThePodsLoad: a probe reads the pod's
// requests in flight when sent and reaches the endpoint SimRTT later; a
// finished request's done function gets the pod's report.
func TestSim_ProbesAndTrailersCarryThePodsLoad(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	clk := testingclock.NewFakeClock(start)
	s := &sim{clock: clk, epoch: start, epPod: map[*strategy.Endpoint]int{}}
	s.pods = []*simPod{{live: true, inflight: 3, load: loadreport.New(loadreport.WithClock(clk))}}
	pool := strategy.NewPool(strategy.BuildOptions{Clock: clk})
	added, _ := pool.Update([]strategy.Member{{Addr: simPodAddr(0)}}, "", nil)
	e := added[0]
	s.epPod[e] = 0
	s.prober()(e)
	if _, stamp, _ := e.ServerLoad(); stamp != 0 {
		t.Fatal("the probe's report arrived at once, want SimRTT later")
	}
	ev := s.events[0]
	if ev.kind != evProbe || ev.at != SimRTT {
		t.Fatalf("event %+v, want a probe's arrival at %v", ev, SimRTT)
	}
	s.pods[0].inflight = 7 // the report is what the pod had when probed
	s.probeDone()
	if rif, stamp, _ := e.ServerLoad(); rif != 3 || stamp == 0 {
		t.Errorf("after the probe: ServerLoad() = %v (stamp %v), want 3", rif, stamp)
	}
	// A request the pod answered carries its load; one that timed out none.
	e.Picked()
	s.reportDone(&simReq{pod: 0, onDone: e.FinishDone}, nil, true)
	if rif, _, _ := e.ServerLoad(); rif != 7 {
		t.Errorf("after a request: ServerLoad() = %v, want 7", rif)
	}
	s.pods[0].inflight = 1
	e.Picked()
	s.reportDone(&simReq{pod: 0, onDone: e.FinishDone}, nil, false)
	if rif, _, _ := e.ServerLoad(); rif != 7 {
		t.Errorf("after a request the pod did not answer: ServerLoad() = %v, want 7 still", rif)
	}
}

// TestSim_FailingPodsReportSaysSo: a pod whose requests fail reports its
// errors per second, and its report marks the endpoint failing.
func TestSim_FailingPodsReportSaysSo(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	clk := testingclock.NewFakeClock(start)
	s := &sim{clock: clk, epoch: start, epPod: map[*strategy.Endpoint]int{}}
	s.pods = []*simPod{{live: true, load: loadreport.New(loadreport.WithClock(clk))}}
	pool := strategy.NewPool(strategy.BuildOptions{Clock: clk})
	added, _ := pool.Update([]strategy.Member{{Addr: simPodAddr(0)}}, "", nil)
	e := added[0]
	for i := range 10 {
		var err error
		if i%2 == 0 {
			err = status.Error(codes.Unavailable, "failing")
		}
		s.pods[0].load.End(s.pods[0].load.Begin(), err)
	}
	clk.Step(100 * time.Millisecond)
	e.Picked()
	s.reportDone(&simReq{pod: 0, onDone: e.FinishDone}, nil, true)
	if s.loads.report.Eps <= 0 || s.loads.report.RpsFractional <= s.loads.report.Eps {
		t.Errorf("report rps %v, eps %v; want eps > 0, about half of rps", s.loads.report.RpsFractional, s.loads.report.Eps)
	}
	if !e.ServerReport().Failing() {
		t.Error("the failing pod's report did not mark its endpoint failing")
	}
}

// TestSim_LoadAwareAvoidsTheSlowPod: the bench's load_aware strategy sends
// the one slow pod less than half of round robin's share.
func TestSim_LoadAwareAvoidsTheSlowPod(t *testing.T) {
	wantSlowPodHalved(context.Background(), t, LoadAware, 20*time.Second, nil)
}

// TestSim_OutOfBandReportsReachEveryChannel: a chain that asks for
// out-of-band reports gets every live pod's on every channel once per
// interval, each stream in its own phase.
func TestSim_OutOfBandReportsReachEveryChannel(t *testing.T) {
	chain, err := strategy.ParseChain([]byte(`[{"load_aware":{"oob_interval":"1s","probe_rate":0}}]`))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(1_700_000_000, 0)
	clk := testingclock.NewFakeClock(start)
	s := &sim{clock: clk, epoch: start, chain: chain, epPod: map[*strategy.Endpoint]int{}, podIndex: map[string]int{}}
	for i := range 3 {
		s.pods = append(s.pods, &simPod{live: true, load: loadreport.New(loadreport.WithClock(clk))})
		s.podAddrs = append(s.podAddrs, simPodAddr(i))
		s.podIndex[simPodAddr(i)] = i
	}
	s.updateLive()
	for range 4 {
		ch := &simChannel{fw: newFairwayChannel(chain, clk, func() uint64 { return 1 }, nil, "", nil)}
		s.chans = append(s.chans, ch)
		s.setMembers(ch)
	}
	step := time.Second / oobSlots
	s.startOOB()
	if len(s.events) != 1 || s.events[0].kind != evOOB || s.events[0].at != step {
		t.Fatalf("events %+v, want the first out-of-band slot at %v", s.events, step)
	}
	// Slot k reports 100+k requests in flight on every pod, so an
	// endpoint's report tells the slot it came in.
	reported := map[*strategy.Endpoint]int{}
	for k := range oobSlots {
		s.now = time.Duration(k+1) * step
		for _, p := range s.pods {
			p.inflight = 100 + k
		}
		s.oob()
		for _, ch := range s.chans {
			for _, e := range ch.fw.pool.Endpoints() {
				if rif, stamp, _ := e.ServerLoad(); stamp != 0 && rif == float64(100+k) {
					reported[e]++
				}
			}
		}
		if last := s.events[len(s.events)-1]; last.kind != evOOB || last.at != s.now+step {
			t.Fatalf("next event %+v, want the next slot at %v", last, s.now+step)
		}
	}
	for c, ch := range s.chans {
		for _, e := range ch.fw.pool.Endpoints() {
			if reported[e] != 1 {
				t.Errorf("channel %d, %s: reported in %d slots of one interval, want 1", c, e.Addr, reported[e])
			}
		}
	}
}

// TestSim_OutOfBandPhasesSpread: the streams' phases cover the slots
// about evenly, so the reports do not arrive in step.
func TestSim_OutOfBandPhasesSpread(t *testing.T) {
	s := &sim{cfg: Config{Seed: 3}}
	var count [oobSlots]int
	const chans, pods = 200, 20
	for c := range chans {
		for p := range pods {
			count[s.oobPhase(c, p)]++
		}
	}
	want := chans * pods / oobSlots
	for k, n := range count {
		if n < want*8/10 || n > want*12/10 {
			t.Errorf("slot %d: %d streams, want %d ± 20%%", k, n, want)
		}
	}
}
