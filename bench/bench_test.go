package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// checkReport verifies a report's JSON shape and its internal consistency.
func checkReport(t *testing.T, rep *Report, wantStrategies []string) {
	t.Helper()
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatalf("WriteJSON: %v", err)
	}
	var generic map[string]any
	if err := json.Unmarshal(buf.Bytes(), &generic); err != nil {
		t.Fatalf("JSON does not parse: %v\n%s", err, buf.String())
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range generic {
			if !yield(k) {
				return
			}
		}
	})
	if diff := cmp.Diff(keys, []string{"duration_s", "results", "scenario"}); diff != "" {
		t.Errorf("top-level keys (-got +want):\n%s", diff)
	}
	var got []string
	for _, r := range generic["results"].([]any) {
		m := r.(map[string]any)
		var rk []string
		for k := range m {
			rk = append(rk, k)
		}
		slices.Sort(rk)
		want := []string{"cross_zone_fraction", "error_rate", "p50_ms", "p90_ms", "p999_ms", "p99_ms", "requests", "share_cv", "share_max_over_mean", "strategy"}
		if diff := cmp.Diff(rk, want); diff != "" {
			t.Errorf("result keys (-got +want):\n%s", diff)
		}
		got = append(got, m["strategy"].(string))
	}
	if diff := cmp.Diff(got, wantStrategies); diff != "" {
		t.Errorf("strategies (-got +want):\n%s", diff)
	}
	for _, r := range rep.Results {
		if r.Requests == 0 {
			t.Errorf("%s: no requests", r.Strategy)
		}
		if r.OK+r.Errors != r.Requests {
			t.Errorf("%s: ok %d + errors %d != requests %d", r.Strategy, r.OK, r.Errors, r.Requests)
		}
		if got := r.Latency.Count(); got != r.Requests {
			t.Errorf("%s: %d latencies recorded, want %d", r.Strategy, got, r.Requests)
		}
		var reached, attributed int64
		for i := range r.PodRequests {
			reached += r.PodRequests[i]
			attributed += r.Attributed[i]
			if r.Attributed[i] > r.PodRequests[i] {
				t.Errorf("%s: pod %d answered %d requests but received %d", r.Strategy, i, r.Attributed[i], r.PodRequests[i])
			}
		}
		// Every request reached a pod, or failed before reaching one.
		if unreached := r.Requests - reached; unreached < 0 || unreached > r.Errors {
			t.Errorf("%s: requests %d, reached pods %d, errors %d: counts do not add up", r.Strategy, r.Requests, reached, r.Errors)
		}
		var sum float64
		for _, s := range r.Shares {
			sum += s
		}
		if math.Abs(sum-1) > 1e-9 {
			t.Errorf("%s: shares sum to %v, want 1", r.Strategy, sum)
		}
		for b, row := range r.ShareOverTime {
			var s float64
			for _, x := range row {
				s += x
			}
			if s != 0 && math.Abs(s-1) > 1e-9 {
				t.Errorf("%s: bucket %d shares sum to %v, want 0 or 1", r.Strategy, b, s)
			}
		}
		if r.P50ms > r.P90ms || r.P90ms > r.P99ms || r.P99ms > r.P999ms {
			t.Errorf("%s: percentiles not ordered: %v %v %v %v", r.Strategy, r.P50ms, r.P90ms, r.P99ms, r.P999ms)
		}
		if r.ErrorRate < 0 || r.ErrorRate > 1 || r.CrossZoneFraction < 0 || r.CrossZoneFraction > 1 || r.ShareMaxOverMean < 1 {
			t.Errorf("%s: rates out of range: %+v", r.Strategy, r)
		}
	}
}

// TestRun_EveryScenarioReal runs every preset for a few seconds against real
// pods with all strategies, at a third of the preset's rate.
func TestRun_EveryScenarioReal(t *testing.T) {
	for _, name := range Scenarios() {
		t.Run(name, func(t *testing.T) {
			cfg, err := Preset(name)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Duration = 2500 * time.Millisecond
			cfg.Rate /= 3
			cfg.Progress = false
			// Each channel of the xds:/// and fairway:/// strategies has its
			// own xDS stream and a connection to every pod: hundreds of them
			// take longer to set up than the run on a shared machine.
			cfg.Clients = min(cfg.Clients, 100)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rep, err := Run(ctx, cfg, nil)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			checkReport(t, rep, RealStrategies())
			var tbl bytes.Buffer
			if err := rep.WriteTable(&tbl); err != nil {
				t.Fatal(err)
			}
			t.Logf("\n%s", tbl.String())
		})
	}
}

func TestRun_EveryScenarioSim(t *testing.T) {
	for _, name := range Scenarios() {
		t.Run(name, func(t *testing.T) {
			cfg, _ := Preset(name)
			cfg.Sim = true
			cfg.Progress = false
			cfg.Strategies = AllStrategies
			rep, err := Run(context.Background(), cfg, nil)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			checkReport(t, rep, AllStrategies)
		})
	}
}

// TestSim_AgreesWithReal runs one small scenario for real and simulated.
// How evenly the strategies spread load does not depend on how busy the
// machine is: share max/mean must agree within 10%. Real latencies do: on a
// loaded machine (CI shares two cores with compilers) real p90 has been
// measured at 6× the simulated one while p50 moved by 18%. So latency is
// checked loosely: p50 within 50% either way (a gross modelling error), and
// neither p50 nor p90 of the real run more than 30% below the simulation's
// (a machine can slow real requests down, never speed them up). The
// simulator's latencies are compared closely with real runs on a quiet
// machine in docs/results.md.
func TestSim_AgreesWithReal(t *testing.T) {
	cfg, _ := Preset("homogeneous")
	cfg.Pods = podZones(6, threeZones...)
	cfg.Rate = 200 // a third of the pods' capacity
	cfg.Clients = 20
	cfg.Strategies = []string{RoundRobin, FairwayP2C}
	cfg.Duration = 8 * time.Second
	cfg.Progress = false
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	real, err := Run(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Sim = true
	sim, err := Run(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range cfg.Strategies {
		r, s := real.Results[i], sim.Results[i]
		t.Logf("%s: real p50 %.1f p90 %.1f max/mean %.3f; sim p50 %.1f p90 %.1f max/mean %.3f",
			r.Strategy, r.P50ms, r.P90ms, r.ShareMaxOverMean, s.P50ms, s.P90ms, s.ShareMaxOverMean)
		within := func(what string, a, b, tol float64) {
			if math.Abs(a-b) > tol*b {
				t.Errorf("%s %s: real %.3f, sim %.3f: differ by more than %.0f%%", r.Strategy, what, a, b, 100*tol)
			}
		}
		notBelow := func(what string, a, b, tol float64) {
			if a < (1-tol)*b {
				t.Errorf("%s %s: real %.3f is more than %.0f%% below the simulation's %.3f", r.Strategy, what, a, 100*tol, b)
			}
		}
		within("share max/mean", r.ShareMaxOverMean, s.ShareMaxOverMean, 0.1)
		within("p50", r.P50ms, s.P50ms, 0.5)
		notBelow("p50", r.P50ms, s.P50ms, 0.3)
		notBelow("p90", r.P90ms, s.P90ms, 0.3)
	}
}

// TestSim_LargeScale runs 500 pods and 1,000 client channels simulated.
func TestSim_LargeScale(t *testing.T) {
	cfg, _ := Preset("homogeneous")
	cfg.Sim = true
	cfg.Progress = false
	cfg.Pods = resizePods(cfg.Pods, 500)
	cfg.Clients = 1000
	cfg.Rate = 30000 // 60% of the pods' capacity
	cfg.Duration = 5 * time.Second
	cfg.Strategies = []string{RoundRobin, Fairway}
	rep, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep, cfg.Strategies)
	for _, r := range rep.Results {
		if r.ErrorRate > 0.01 {
			t.Errorf("%s: error rate %v at 60%% load", r.Strategy, r.ErrorRate)
		}
	}
}

func TestCapacity_SimFindsFewestPods(t *testing.T) {
	cfg := DefaultCapacity()
	cfg.Base.Sim = true
	cfg.Base.Progress = false
	cfg.Base.Strategies = AllStrategies
	cfg.Trial = 5 * time.Second
	rep, err := Capacity(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		SLO     map[string]any `json:"slo"`
		Results []struct {
			Strategy     string  `json:"strategy"`
			Pods         int     `json:"pods"`
			VsRoundRobin float64 `json:"vs_round_robin"`
			VsOracle     float64 `json:"vs_oracle"`
		} `json:"results"`
	}
	if err := json.Unmarshal(buf.Bytes(), &parsed); err != nil {
		t.Fatal(err)
	}
	if len(parsed.Results) != len(AllStrategies) || parsed.SLO["p99_ms"] != 60.0 {
		t.Errorf("capacity JSON = %s", buf.String())
	}
	pods := map[string]int{}
	for _, r := range parsed.Results {
		pods[r.Strategy] = r.Pods
	}
	if pods[RoundRobin] <= 0 || pods[Oracle] <= 0 || pods[Oracle] > pods[RoundRobin] {
		t.Fatalf("round_robin %d pods, oracle %d: want both met, oracle with no more", pods[RoundRobin], pods[Oracle])
	}
	for _, r := range parsed.Results {
		if r.Pods <= 0 {
			continue
		}
		if want := float64(r.Pods) / float64(pods[RoundRobin]); math.Abs(r.VsRoundRobin-want) > 1e-9 {
			t.Errorf("%s: vs_round_robin %v, want %v", r.Strategy, r.VsRoundRobin, want)
		}
		if want := float64(r.Pods) / float64(pods[Oracle]); math.Abs(r.VsOracle-want) > 1e-9 {
			t.Errorf("%s: vs_oracle %v, want %v", r.Strategy, r.VsOracle, want)
		}
	}
	for _, r := range rep.Results {
		if r.Pods == -1 {
			continue
		}
		for _, tr := range r.Trials {
			if tr.Pods == r.Pods && !tr.Met {
				t.Errorf("%s: reported %d pods but that trial missed the SLO", r.Strategy, r.Pods)
			}
			if tr.Pods == r.Pods-1 && tr.Met {
				t.Errorf("%s: reported %d pods but %d met the SLO", r.Strategy, r.Pods, tr.Pods)
			}
		}
	}
	var tbl bytes.Buffer
	rep.WriteTable(&tbl)
	t.Logf("\n%s", tbl.String())
}

func TestReport_WritePlots(t *testing.T) {
	cfg, _ := Preset("cold-start")
	cfg.Sim = true
	cfg.Progress = false
	rep, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	paths, err := rep.WritePlots(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"cold-start-latency-cdf.png", "cold-start-pod-share.png", "cold-start-share-over-time.png"}
	var got []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil || st.Size() < 1000 {
			t.Errorf("%s: %v, size %d", p, err, st.Size())
		}
		got = append(got, filepath.Base(p))
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("plots (-got +want):\n%s", diff)
	}
}

func TestConfig_Validate(t *testing.T) {
	good, _ := Preset("homogeneous")
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
	}{
		{"unknown strategy", func(c *Config) { c.Strategies = []string{"nope"} }},
		{"oracle in a real run", func(c *Config) { c.Strategies = []string{Oracle} }},
		{"antagonist factors reversed", func(c *Config) {
			c.Antagonist = &Antagonist{MinFactor: 5, MaxFactor: 2, Busy: 0.2, MeanSlow: time.Second}
		}},
		{"no pods", func(c *Config) { c.Pods = nil }},
		{"zero rate", func(c *Config) { c.Rate = 0 }},
		{"zone weights", func(c *Config) { c.ZoneW = []float64{1} }},
		{"bad chain", func(c *Config) { c.FairwayChain = `[{"nope":{}}]` }},
	} {
		c := good
		tc.mutate(&c)
		err := c.Validate()
		if err == nil {
			t.Errorf("%s: Validate() = nil, want an error", tc.name)
			continue
		}
		if n := strings.Count(err.Error(), "fairway/"); n != 1 {
			t.Errorf("%s: Validate() = %q carries %d package prefixes, want 1", tc.name, err, n)
		}
	}
	if err := good.Validate(); err != nil {
		t.Errorf("preset: %v", err)
	}
	if _, err := Preset("nope"); err == nil {
		t.Error("Preset(nope) = nil error")
	}
}

func TestSchedule_SameSeedSameArrivals(t *testing.T) {
	a := schedule(7, 1000, time.Second, 10, 1<<20)
	b := schedule(7, 1000, time.Second, 10, 1<<20)
	if diff := cmp.Diff(a, b, cmp.AllowUnexported(arrival{})); diff != "" {
		t.Errorf("schedules differ (-got +want):\n%s", diff)
	}
	if n := len(a); n < 900 || n > 1100 {
		t.Errorf("%d arrivals in 1 s at 1000/s", n)
	}
	if got := channelZones(10, []string{"a", "b"}, []float64{0.6, 0.4}); slices.Compact(slices.Clone(got))[0] != "a" || len(got) != 10 || got[5] != "a" || got[6] != "b" {
		t.Errorf("channelZones = %v", got)
	}
}

func TestCommand_SimWritesJSONAndPlots(t *testing.T) {
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "out.json")
	var stdout, stderr bytes.Buffer
	err := CompareCommand(context.Background(), []string{"--scenario", "scale-up", "--sim", "--duration", "10s", "--no-progress",
		"--json", jsonPath, "--plot", filepath.Join(dir, "png")}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("Command: %v\n%s", err, stderr.String())
	}
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Scenario  string  `json:"scenario"`
		DurationS float64 `json:"duration_s"`
		Results   []struct {
			Strategy string `json:"strategy"`
		} `json:"results"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.Scenario != "scale-up" || got.DurationS != 10 || len(got.Results) != len(AllStrategies) {
		t.Errorf("JSON = %s", raw)
	}
	pngs, _ := filepath.Glob(filepath.Join(dir, "png", "*.png"))
	if len(pngs) != 3 {
		t.Errorf("plots = %v, want 3", pngs)
	}
	if !bytes.Contains(stdout.Bytes(), []byte("scenario scale-up")) {
		t.Errorf("stdout has no table:\n%s", stdout.String())
	}

	err = CapacityCommand(context.Background(), []string{"--sim", "--no-progress", "--strategies", "connection,fairway", "--trial", "3s", "--json", jsonPath}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("Command capacity: %v", err)
	}
	raw, _ = os.ReadFile(jsonPath)
	var capRep CapacityReport
	if err := json.Unmarshal(raw, &capRep); err != nil || len(capRep.Results) != 2 {
		t.Errorf("capacity JSON = %s (%v)", raw, err)
	}
}
