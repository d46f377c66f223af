package bench

import (
	"context"
	"testing"
	"time"

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

// TestSim_LoadAwareAvoidsTheSlowPod: the bench's load_aware strategy sends
// the one slow pod less than half of round robin's share.
func TestSim_LoadAwareAvoidsTheSlowPod(t *testing.T) {
	wantSlowPodHalved(context.Background(), t, LoadAware, 20*time.Second, nil)
}

// TestSim_OutOfBandReportsReachEveryChannel: a chain that asks for
// out-of-band reports gets every live pod's on every channel at its
// interval.
func TestSim_OutOfBandReportsReachEveryChannel(t *testing.T) {
	chain, err := strategy.ParseChain([]byte(`[{"load_aware":{"oob_interval":"1s","probe_rate":0}}]`))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(1_700_000_000, 0)
	clk := testingclock.NewFakeClock(start)
	s := &sim{clock: clk, epoch: start, chain: chain, epPod: map[*strategy.Endpoint]int{}, podIndex: map[string]int{}}
	for i, rif := range []int{4, 0} {
		s.pods = append(s.pods, &simPod{live: true, inflight: rif, load: loadreport.New(loadreport.WithClock(clk))})
		s.podAddrs = append(s.podAddrs, simPodAddr(i))
		s.podIndex[simPodAddr(i)] = i
	}
	s.updateLive()
	for range 2 {
		ch := &simChannel{fw: newFairwayChannel(chain, clk, func() uint64 { return 1 }, nil, "", nil)}
		s.chans = append(s.chans, ch)
		s.setMembers(ch)
	}
	s.startOOB()
	if len(s.events) != 1 || s.events[0].kind != evOOB || s.events[0].at != time.Second {
		t.Fatalf("events %+v, want the first out-of-band reports at 1s", s.events)
	}
	s.now = time.Second
	s.oob()
	for c, ch := range s.chans {
		for _, e := range ch.fw.pool.Endpoints() {
			if rif, stamp, _ := e.ServerLoad(); stamp == 0 || rif != float64(s.pods[s.epPod[e]].inflight) {
				t.Errorf("channel %d, %s: ServerLoad() = %v (stamp %v), want %d", c, e.Addr, rif, stamp, s.pods[s.epPod[e]].inflight)
			}
		}
	}
	if last := s.events[len(s.events)-1]; last.kind != evOOB || last.at != 2*time.Second {
		t.Errorf("next event %+v, want the next reports at 2s", last)
	}
}
