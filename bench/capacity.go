package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// CapacityConfig is a capacity search: for the load of Base, the fewest pods
// each strategy needs to meet the SLO.
type CapacityConfig struct {
	// Base is the scenario: its rate, clients, service time and pod template
	// (its pod list is cut or extended to each candidate size). Base.Duration
	// is ignored; Base.Strategies are searched.
	Base Config
	// Trial is the traffic time of one trial (one strategy at one size).
	Trial time.Duration
	// P99Factor: the SLO's p99 bound is P99Factor × Base.Median.
	P99Factor float64
	// MaxErrorRate is the SLO's error bound (0.001 = 0.1%).
	MaxErrorRate     float64
	MinPods, MaxPods int
}

// SLO is what a strategy must meet at a pod count.
type SLO struct {
	Scenario     string  `json:"scenario"`
	RateRPS      float64 `json:"rate_rps"`
	P99ms        float64 `json:"p99_ms"`
	MaxErrorRate float64 `json:"max_error_rate"`
}

// CapacityReport is a capacity search's outcome; its JSON form is
// {"slo": {...}, "results": [{"strategy": "...", "pods": N, "vs_round_robin": x,
// "vs_oracle": x}]}. Pods is -1 when the strategy misses the SLO even at
// MaxPods; the ratios are left out when either side has no pod count.
type CapacityReport struct {
	SLO     SLO              `json:"slo"`
	Results []CapacityResult `json:"results"`
}

// CapacityResult is one strategy's fewest pods.
type CapacityResult struct {
	Strategy string `json:"strategy"`
	Pods     int    `json:"pods"`
	// VsRoundRobin and VsOracle are Pods over round_robin's and oracle's
	// (0 when unknown: not searched, or not met).
	VsRoundRobin float64 `json:"vs_round_robin,omitempty"`
	VsOracle     float64 `json:"vs_oracle,omitempty"`
	// Trials are the sizes tried and whether each met the SLO.
	Trials []Trial `json:"-"`
}

// Trial is one size tried.
type Trial struct {
	Pods      int
	Met       bool
	P99ms     float64
	ErrorRate float64
}

// DefaultCapacity is the homogeneous scenario's load (1300 requests/s) from
// 200 client channels (a caller with many replicas; with few channels
// connection balancing cannot meet the SLO at any size), p99 ≤ 3× the
// median service time, errors ≤ 0.1%, 4 to 100 pods, 2 s trials.
func DefaultCapacity() CapacityConfig {
	base, _ := Preset("homogeneous")
	base.Clients = 200
	return CapacityConfig{Base: base, Trial: 2 * time.Second, P99Factor: 3, MaxErrorRate: 0.001, MinPods: 4, MaxPods: 100}
}

func (c CapacityConfig) slo() SLO {
	return SLO{Scenario: c.Base.Scenario, RateRPS: c.Base.Rate, P99ms: c.P99Factor * ms(c.Base.Median), MaxErrorRate: c.MaxErrorRate}
}

// Capacity binary-searches, per strategy, the fewest pods in
// [MinPods, MaxPods] that meet the SLO (assuming more pods never hurt).
// Progress lines go to out when Base.Progress is set (out may be nil).
func Capacity(ctx context.Context, cfg CapacityConfig, out io.Writer) (*CapacityReport, error) {
	if cfg.MinPods < 1 || cfg.MaxPods < cfg.MinPods {
		return nil, fmt.Errorf("fairway/bench: capacity: pods range [%d, %d] is empty", cfg.MinPods, cfg.MaxPods)
	}
	if cfg.Trial <= 0 || cfg.P99Factor <= 0 {
		return nil, fmt.Errorf("fairway/bench: capacity: trial and p99 factor must be positive")
	}
	if out == nil {
		out = io.Discard
	}
	slo := cfg.slo()
	rep := &CapacityReport{SLO: slo}
	for _, s := range cfg.Base.Strategies {
		res := CapacityResult{Strategy: s, Pods: -1}
		try := func(n int) (bool, error) {
			c := cfg.Base
			c.Strategies = []string{s}
			c.Duration = cfg.Trial
			c.Pods = resizePods(cfg.Base.Pods, n)
			c.Progress = false
			r, err := Run(ctx, c, nil)
			if err != nil {
				return false, err
			}
			x := r.Results[0]
			met := x.P99ms <= slo.P99ms && x.ErrorRate <= slo.MaxErrorRate
			res.Trials = append(res.Trials, Trial{Pods: n, Met: met, P99ms: x.P99ms, ErrorRate: x.ErrorRate})
			if cfg.Base.Progress {
				fmt.Fprintf(out, "\r\033[Kcapacity %s: %d pods: p99 %.1f ms, errors %.2f%% → %v", s, n, x.P99ms, 100*x.ErrorRate, map[bool]string{true: "meets", false: "misses"}[met])
			}
			return met, nil
		}
		ok, err := try(cfg.MaxPods)
		if err != nil {
			return nil, err
		}
		if ok {
			lo, hi := cfg.MinPods, cfg.MaxPods // hi meets; find the least that meets
			for lo < hi {
				mid := (lo + hi) / 2
				met, err := try(mid)
				if err != nil {
					return nil, err
				}
				if met {
					hi = mid
				} else {
					lo = mid + 1
				}
			}
			res.Pods = hi
		}
		rep.Results = append(rep.Results, res)
	}
	rep.ratios()
	if cfg.Base.Progress {
		fmt.Fprint(out, "\r\033[K")
	}
	return rep, nil
}

// ratios sets each result's pods relative to round_robin and oracle.
func (r *CapacityReport) ratios() {
	base := func(s string) int {
		for _, x := range r.Results {
			if x.Strategy == s {
				return x.Pods
			}
		}
		return -1
	}
	rr, or := base(RoundRobin), base(Oracle)
	for i := range r.Results {
		x := &r.Results[i]
		if x.Pods <= 0 {
			continue
		}
		if rr > 0 {
			x.VsRoundRobin = float64(x.Pods) / float64(rr)
		}
		if or > 0 {
			x.VsOracle = float64(x.Pods) / float64(or)
		}
	}
}

// WriteJSON writes the report in its JSON form.
func (r *CapacityReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the fewest pods per strategy, the pods saved versus
// connection, and the pods relative to round_robin and oracle.
func (r *CapacityReport) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "capacity for %s at %.0f req/s, SLO p99 ≤ %.0f ms and errors ≤ %.2f%%\n",
		r.SLO.Scenario, r.SLO.RateRPS, r.SLO.P99ms, 100*r.SLO.MaxErrorRate)
	base := -1
	for _, x := range r.Results {
		if x.Strategy == Connection {
			base = x.Pods
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "strategy\tpods\tvs connection\t× round_robin\t× oracle\t")
	ratio := func(v float64) string {
		if v == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", v)
	}
	for _, x := range r.Results {
		pods, saved := fmt.Sprint(x.Pods), "-"
		if x.Pods < 0 {
			pods = "not met"
		} else if base > 0 && x.Strategy != Connection {
			saved = fmt.Sprintf("%+d (%.0f%%)", x.Pods-base, 100*float64(x.Pods-base)/float64(base))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", x.Strategy, pods, saved, ratio(x.VsRoundRobin), ratio(x.VsOracle))
	}
	return tw.Flush()
}

// CapacityFlags are the command-line settings of a capacity search.
type CapacityFlags struct {
	Flags
	Trial        time.Duration
	P99Factor    float64
	MaxErrorRate float64
	MinPods      int
	MaxPods      int
}

// RegisterCapacityFlags defines the capacity search's flags on fs and
// returns a function that builds the CapacityConfig after fs.Parse.
func RegisterCapacityFlags(fs *flag.FlagSet) (*CapacityFlags, func() (CapacityConfig, error)) {
	d := DefaultCapacity()
	f := &CapacityFlags{}
	fs.StringVar(&f.Scenario, "scenario", "homogeneous", "scenario preset giving the load and pod template: "+strings.Join(Scenarios(), ", "))
	fs.StringVar(&f.Strategies, "strategies", "", "comma-separated strategies to search (default: "+strings.Join(RealStrategies(), ",")+"; with --sim also "+strings.Join(simOnly, ",")+")")
	fs.Float64Var(&f.Rate, "rate", 0, "target total requests per second (0 = the scenario's)")
	fs.IntVar(&f.Clients, "clients", d.Base.Clients, "client channels")
	fs.DurationVar(&f.Median, "median", 0, "median service time (0 = the scenario's)")
	fs.Uint64Var(&f.Seed, "seed", 1, "seed of the arrival schedule")
	fs.BoolVar(&f.NoProgress, "no-progress", false, "no progress line")
	fs.BoolVar(&f.Sim, "sim", false, "discrete-event simulation instead of real gRPC servers")
	fs.StringVar(&f.JSON, "json", "", "write the JSON report to this file")
	fs.DurationVar(&f.Trial, "trial", d.Trial, "traffic time of one trial (one strategy at one pod count)")
	fs.Float64Var(&f.P99Factor, "p99-factor", d.P99Factor, "SLO: p99 ≤ this × the median service time")
	fs.Float64Var(&f.MaxErrorRate, "max-error-rate", d.MaxErrorRate, "SLO: error rate ≤ this")
	fs.IntVar(&f.MinPods, "min-pods", d.MinPods, "smallest pod count searched")
	fs.IntVar(&f.MaxPods, "max-pods", d.MaxPods, "largest pod count searched")
	return f, func() (CapacityConfig, error) {
		c, err := Preset(f.Scenario)
		if err != nil {
			return CapacityConfig{}, err
		}
		c.Strategies = splitList(f.Strategies)
		if len(c.Strategies) == 0 {
			c.Strategies = DefaultStrategies(f.Sim)
		}
		if f.Rate > 0 {
			c.Rate = f.Rate
		}
		if f.Clients > 0 {
			c.Clients = f.Clients
		}
		if f.Median > 0 {
			c.Median = f.Median
		}
		c.Seed, c.Sim = f.Seed, f.Sim
		c.Progress = !f.NoProgress && isTerminal(os.Stderr)
		c.Duration = f.Trial
		cc := CapacityConfig{Base: c, Trial: f.Trial, P99Factor: f.P99Factor, MaxErrorRate: f.MaxErrorRate, MinPods: f.MinPods, MaxPods: f.MaxPods}
		return cc, c.Validate()
	}
}
