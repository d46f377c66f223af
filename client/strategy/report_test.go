package strategy_test

import (
	"context"
	"math"
	"testing"
	"time"

	orcapb "github.com/cncf/xds/go/xds/data/orca/v3"
	"google.golang.org/grpc/balancer"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/client/strategy"
	"github.com/fairway-lb/fairway/client/strategy/strategytest"
	"github.com/fairway-lb/fairway/loadreport"
	"github.com/fairway-lb/fairway/wire"
)

// TestReport_NamesAreLoadreports: the client reads the metrics under the
// names the server package sends them.
func TestReport_NamesAreLoadreports(t *testing.T) {
	if wire.RIFMetric != loadreport.RIFMetric || wire.LatencyMetric != loadreport.LatencyMetric {
		t.Errorf("wire names %q, %q; loadreport sends %q, %q", wire.RIFMetric, wire.LatencyMetric, loadreport.RIFMetric, loadreport.LatencyMetric)
	}
}

func orcaReport(m map[string]float64) *orcapb.OrcaLoadReport {
	return &orcapb.OrcaLoadReport{NamedMetrics: m}
}

// TestEndpoint_RecordsTheTrailersReport: a finished request's ORCA report
// is the endpoint's server load, stamped with the pool's clock; picks
// since count; reports without a valid RIF are ignored.
func TestEndpoint_RecordsTheTrailersReport(t *testing.T) {
	clk := testingclock.NewFakeClock(strategytest.Start)
	p := newPool(t, `[{"round_robin":{}}]`, clk)
	added, _ := p.Update([]strategy.Member{{Addr: "10.0.0.1:80"}}, "", nil)
	p.SetConnected(added[0], true)
	pp, _, _ := p.Build()
	e, done, err := pp.Pick(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	done(balancer.DoneInfo{ServerLoad: orcaReport(map[string]float64{wire.RIFMetric: 7.5})})
	for _, bad := range []any{orcaReport(map[string]float64{"other": 1}), orcaReport(map[string]float64{wire.RIFMetric: -1}),
		orcaReport(map[string]float64{wire.RIFMetric: math.NaN()}), "not a report"} {
		_, done, _ := pp.Pick(context.Background())
		done(balancer.DoneInfo{ServerLoad: bad})
	}
	rif, stamp, since := e.ServerLoad()
	if rif != 7.5 || stamp != strategy.Stamp(strategytest.Start) || since != 4 {
		t.Errorf("ServerLoad() = %v, %v, %v; want 7.5, %v, 4", rif, stamp, since, strategy.Stamp(strategytest.Start))
	}
	e.ReportLoad(1e9)
	if rif, _, _ := e.ServerLoad(); rif != strategy.MaxRIF {
		t.Errorf("ServerLoad() after a huge report = %v, want MaxRIF %v", rif, strategy.MaxRIF)
	}
}

// TestEndpoint_ProbesPauseAfterAnUnansweredOne.
func TestEndpoint_ProbesPauseAfterAnUnansweredOne(t *testing.T) {
	clk := testingclock.NewFakeClock(strategytest.Start)
	p := newPool(t, `[{"round_robin":{}}]`, clk)
	added, _ := p.Update([]strategy.Member{{Addr: "10.0.0.1:80"}}, "", nil)
	e := added[0]
	if !e.ProbeWanted() {
		t.Fatal("ProbeWanted() = false before any probe")
	}
	e.ProbeUnanswered(30 * time.Second)
	clk.Step(29 * time.Second)
	p.Tick()
	if e.ProbeWanted() {
		t.Error("ProbeWanted() = true 29 s after an unanswered probe, want false for 30 s")
	}
	clk.Step(time.Second)
	p.Tick()
	if !e.ProbeWanted() {
		t.Error("ProbeWanted() = false 30 s after an unanswered probe")
	}
}

// TestEndpoint_ReportSaysFailing: a report whose eps is more than
// FailingShare of its rps marks the endpoint failing; the next one that is
// not clears it.
func TestEndpoint_ReportSaysFailing(t *testing.T) {
	clk := testingclock.NewFakeClock(strategytest.Start)
	p := newPool(t, `[{"round_robin":{}}]`, clk)
	added, _ := p.Update([]strategy.Member{{Addr: "10.0.0.1:80"}}, "", nil)
	e := added[0]
	for _, tc := range []struct {
		rps, eps float64
		want     bool
	}{{100, 50, true}, {100, 5, false}, {0, 0, false}, {10, 2, true}} {
		e.ReportORCA(&orcapb.OrcaLoadReport{NamedMetrics: map[string]float64{wire.RIFMetric: 1}, RpsFractional: tc.rps, Eps: tc.eps})
		if r := e.ServerReport(); r.Failing() != tc.want || r.RIF() != 1 {
			t.Errorf("rps %v, eps %v: Failing() = %v, RIF() = %v; want %v, 1", tc.rps, tc.eps, r.Failing(), r.RIF(), tc.want)
		}
	}
}
