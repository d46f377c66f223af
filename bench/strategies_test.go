package bench

import (
	"context"
	"math"
	"slices"
	"testing"
	"time"
)

// share is pod p's fraction of the requests of strategy s in rep.
func share(t *testing.T, rep *Report, s string, p int) float64 {
	t.Helper()
	for _, r := range rep.Results {
		if r.Strategy == s {
			return r.Shares[p]
		}
	}
	t.Fatalf("no result for %s", s)
	return 0
}

func result(t *testing.T, rep *Report, s string) Result {
	t.Helper()
	for _, r := range rep.Results {
		if r.Strategy == s {
			return r
		}
	}
	t.Fatalf("no result for %s", s)
	return Result{}
}

// wantSlowPodHalved runs the preset one-slow-pod in the simulation with
// round robin and strategy s for d, and checks that s sends the slow pod at
// most half of round robin's share. adjust, when not nil, changes the
// configuration first.
func wantSlowPodHalved(ctx context.Context, t *testing.T, s string, d time.Duration, adjust func(*Config)) {
	t.Helper()
	cfg, _ := Preset("one-slow-pod")
	cfg.Sim, cfg.Progress = true, false
	cfg.Strategies = []string{RoundRobin, s}
	cfg.Duration = d
	if adjust != nil {
		adjust(&cfg)
	}
	rep, err := Run(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep, cfg.Strategies)
	rr, got := share(t, rep, RoundRobin, 0), share(t, rep, s, 0)
	t.Logf("slow pod's share: round_robin %.3f, %s %.3f", rr, s, got)
	if got > rr/2 {
		t.Errorf("%s gave the slow pod %.3f of the requests, round_robin %.3f: want at most half", s, got, rr)
	}
}

// TestSim_WRRWeighsBySlowPodsReports: in the simulation, grpc_wrr's weights
// (the pods' reported rps over utilization, about capacity over mean
// latency) send the 5× slow pod well under round robin's tenth.
func TestSim_WRRWeighsBySlowPodsReports(t *testing.T) {
	wantSlowPodHalved(context.Background(), t, GRPCWRR, 20*time.Second, nil)
}

// TestSim_WRRBlackoutForAJoiningPod: pods that join wait out the 10 s
// blackout with the mean weight, as in grpc-go; in the steady state the pods
// there from the start are weighted from their first report.
func TestSim_WRRBlackoutForAJoiningPod(t *testing.T) {
	cfg, _ := Preset("one-slow-pod")
	cfg.Sim, cfg.Progress = true, false
	cfg.Strategies = []string{GRPCWRR}
	cfg.Duration = 8 * time.Second
	cfg.Pods[0].JoinAt = 0.25 // slow, and joins 2 s in: no weight of its own before 12 s
	rep, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Serving 6 of the 8 s, with the mean weight, the slow pod gets about
	// 6/8 of a tenth.
	if got := share(t, rep, GRPCWRR, 0); math.Abs(got-0.075) > 0.02 {
		t.Errorf("joining slow pod's share %.3f, want about 0.075 (round robin while in blackout)", got)
	}
}

// TestSim_OracleIsTheLimit: the central join-shortest-queue dispatcher beats
// every client-side strategy's p99 on homogeneous pods.
func TestSim_OracleIsTheLimit(t *testing.T) {
	cfg, _ := Preset("many-clients")
	cfg.Sim, cfg.Progress = true, false
	cfg.Strategies = []string{RoundRobin, GRPCWRR, Fairway, Oracle}
	cfg.Duration = 12 * time.Second
	rep, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep, cfg.Strategies)
	o := result(t, rep, Oracle)
	for _, r := range rep.Results {
		if r.Strategy != Oracle && r.P99ms < o.P99ms {
			t.Errorf("%s p99 %.1f ms below the oracle's %.1f ms", r.Strategy, r.P99ms, o.P99ms)
		}
	}
}

func TestAntagonist_SlowdownsSeededAndInRange(t *testing.T) {
	a := &Antagonist{MinFactor: 2, MaxFactor: 5, Busy: 0.2, MeanSlow: 500 * time.Millisecond}
	run := 10 * time.Minute
	x, y := a.slowdowns(3, 20, run), a.slowdowns(3, 20, run)
	if !slices.EqualFunc(x, y, slices.Equal) {
		t.Error("same seed, different slowdowns")
	}
	if z := a.slowdowns(4, 20, run); slices.EqualFunc(x, z, slices.Equal) {
		t.Error("another seed, same slowdowns")
	}
	var slowed time.Duration
	for _, pod := range x {
		for i, s := range pod {
			if s.Factor < 2 || s.Factor > 5 || s.From >= s.To || s.To > run || (i > 0 && s.From < pod[i-1].To) {
				t.Fatalf("slowdown %+v out of range or overlapping", s)
			}
			slowed += s.To - s.From
		}
	}
	if f := float64(slowed) / float64(20*run); math.Abs(f-0.2) > 0.03 {
		t.Errorf("pods slowed %.3f of the time, want about 0.2", f)
	}
}

// TestRun_WRRRealSteersAwayFromSlowPod: in a real run, the control plane's
// weighted_round_robin policy reaches grpc-go's xds:/// clients, which
// weigh the pods by their ORCA trailers: the 5× slow pod gets less than
// half of round robin's share.
func TestRun_WRRRealSteersAwayFromSlowPod(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wantSlowPodHalved(ctx, t, GRPCWRR, 6*time.Second, func(cfg *Config) { cfg.Sim, cfg.Rate, cfg.Clients = false, 300, 10 })
}

// TestWRRChannel_SchedulerFollowsWeights: the static-stride scheduler picks
// each endpoint in proportion to its weight, an endpoint without a usable
// weight (none reported, or in blackout) at the mean of the others, and
// falls back to round robin with fewer than two weights.
func TestWRRChannel_SchedulerFollowsWeights(t *testing.T) {
	now := time.Minute
	w := &wrrChannel{eps: make([]wrrEndpoint, 4), order: []int{0, 1, 2, 3}}
	for p, weight := range []float64{100, 200, 300} {
		w.eps[p] = wrrEndpoint{weight: weight, lastUpdated: now, reported: true, nonEmptySince: 0, since: true}
	}
	// Pod 3 reports but is in its blackout: the mean weight, 200.
	w.eps[3] = wrrEndpoint{weight: 1000, lastUpdated: now, reported: true, nonEmptySince: now - time.Second, since: true}
	w.regenerate(now)
	counts := make([]int, 4)
	const n = 80_000
	for range n {
		counts[w.pick()]++
	}
	for p, want := range []float64{100, 200, 300, 200} {
		if got := float64(counts[p]) / n; math.Abs(got-want/800) > 0.01 {
			t.Errorf("pod %d: %.3f of the picks, want %.3f", p, got, want/800)
		}
	}
	// One usable weight: round robin.
	w.eps[1].reported, w.eps[2].reported = false, false
	w.regenerate(now)
	if w.weights != nil {
		t.Errorf("weights %v with one usable weight, want round robin", w.weights)
	}
}
