package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fairway-lb/fairway/bench/hist"
)

// LateWarning is the mean send lag above which the table warns that the
// harness itself was starved of CPU.
const LateWarning = 5 * time.Millisecond

// Report is the outcome of one run. Its JSON form is exactly
//
//	{"scenario": "...", "duration_s": N, "results": [{"strategy": "...", "requests": N,
//	  "p50_ms": x, "p90_ms": x, "p99_ms": x, "p999_ms": x, "error_rate": x,
//	  "share_max_over_mean": x, "share_cv": x, "cross_zone_fraction": x}]}
//
// The other fields feed the table and the charts.
type Report struct {
	Scenario  string   `json:"scenario"`
	DurationS float64  `json:"duration_s"`
	Results   []Result `json:"results"`

	Config Config        `json:"-"`
	Bucket time.Duration `json:"-"` // width of Result.ShareOverTime's buckets
}

// Result is one strategy's outcome.
type Result struct {
	Strategy          string  `json:"strategy"`
	Requests          int64   `json:"requests"`
	P50ms             float64 `json:"p50_ms"`
	P90ms             float64 `json:"p90_ms"`
	P99ms             float64 `json:"p99_ms"`
	P999ms            float64 `json:"p999_ms"`
	ErrorRate         float64 `json:"error_rate"`
	ShareMaxOverMean  float64 `json:"share_max_over_mean"`
	ShareCV           float64 `json:"share_cv"`
	CrossZoneFraction float64 `json:"cross_zone_fraction"`

	OK, Errors   int64            `json:"-"`
	ErrorsByCode map[string]int64 `json:"-"`
	TargetRate   float64          `json:"-"` // requests/s asked for
	AchievedRate float64          `json:"-"` // requests/s issued
	// LateMean and LateMax are how late requests were sent against the
	// schedule: the harness's own lag (0 in the simulation).
	LateMean, LateMax time.Duration `json:"-"`
	Wall              time.Duration `json:"-"` // traffic time including the drain
	CPU               time.Duration `json:"-"` // harness CPU (whole process) over Wall
	// PodRequests counts the requests that reached each pod; Shares are their
	// fractions (summing to 1); ShareOverTime[t][p] is pod p's fraction of
	// the requests of time bucket t. ShareMaxOverMean and ShareCV compare each
	// pod's share with its fair share, capacity × time serving (see shares).
	PodRequests   []int64         `json:"-"`
	Attributed    []int64         `json:"-"` // responses the client saw from each pod
	Shares        []float64       `json:"-"`
	ShareOverTime [][]float64     `json:"-"`
	Latency       *hist.Histogram `json:"-"` // every request, failed ones included
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// fill computes the result's statistics from the client recorder and the
// pods' counters (received[p], buckets[p][t]).
// fair[p] is pod p's fair weight (capacity × fraction of the run serving).
func (r *Result) fill(rec *recorder, received []int64, buckets [][]int64, issued int64, fair []float64) {
	r.Latency = &rec.lat
	r.Requests = issued
	r.OK, r.Errors = rec.ok.Load(), rec.errs.Load()
	r.ErrorsByCode = rec.codes
	if issued > 0 {
		r.ErrorRate = float64(r.Errors) / float64(issued)
	}
	r.P50ms = ms(rec.lat.Quantile(0.5))
	r.P90ms = ms(rec.lat.Quantile(0.9))
	r.P99ms = ms(rec.lat.Quantile(0.99))
	r.P999ms = ms(rec.lat.Quantile(0.999))
	if a := rec.attrib.Load(); a > 0 {
		r.CrossZoneFraction = float64(rec.cross.Load()) / float64(a)
	}
	r.Attributed = make([]int64, len(rec.byPod))
	for i := range rec.byPod {
		r.Attributed[i] = rec.byPod[i].Load()
	}
	r.PodRequests = received
	r.Shares, r.ShareMaxOverMean, r.ShareCV = shares(received, fair)
	if len(buckets) > 0 {
		nb := len(buckets[0])
		for t := range nb {
			col := make([]int64, len(buckets))
			for p := range buckets {
				col[p] = buckets[p][t]
			}
			s, _, _ := shares(col, nil)
			r.ShareOverTime = append(r.ShareOverTime, s)
		}
	}
}

// shares returns each count's fraction of the total, and how far the
// fractions stray from the fair ones: fair[i] is pod i's relative weight
// (nil = all equal), its fair fraction fair[i]/Σfair, and each pod's ratio
// fraction/fair fraction (1 when perfectly fair). maxOverMean is the largest
// ratio (the mean ratio over pods with weight is 1 when weighted by fair
// fraction); cv is the coefficient of variation of the ratios (population
// standard deviation over mean). With equal weights these are the plain
// "largest share over mean share" and CV of the shares. Pods with zero fair
// weight (never serving) are left out. All zero when the total is zero.
func shares(counts []int64, fair []float64) (fr []float64, maxOverMean, cv float64) {
	fr = make([]float64, len(counts))
	var total int64
	for _, c := range counts {
		total += c
	}
	if total == 0 || len(counts) == 0 {
		return fr, 0, 0
	}
	if fair == nil {
		fair = make([]float64, len(counts))
		for i := range fair {
			fair[i] = 1
		}
	}
	var fsum float64
	for _, w := range fair {
		fsum += w
	}
	var ratios []float64
	for i, c := range counts {
		fr[i] = float64(c) / float64(total)
		if fair[i] > 0 {
			ratios = append(ratios, fr[i]/(fair[i]/fsum))
		}
	}
	var sum, mx float64
	for _, x := range ratios {
		sum += x
		mx = math.Max(mx, x)
	}
	mean := sum / float64(len(ratios))
	var sq float64
	for _, x := range ratios {
		sq += (x - mean) * (x - mean)
	}
	return fr, mx / mean, math.Sqrt(sq/float64(len(ratios))) / mean
}

// fairWeights is each pod's capacity × the fraction of the run it serves.
func fairWeights(pods []Pod) []float64 {
	out := make([]float64, len(pods))
	for i, p := range pods {
		end := 1.0
		if p.CrashAt > 0 {
			end = p.CrashAt
		}
		out[i] = float64(max(p.Capacity, 1)) * math.Max(end-p.JoinAt, 0)
	}
	return out
}

// WriteJSON writes the report in its JSON form.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes a human-readable table of the results.
func (r *Report) WriteTable(w io.Writer) error {
	c := r.Config
	mode := "real gRPC servers on loopback"
	if c.Sim {
		mode = "discrete-event simulation"
	}
	fmt.Fprintf(w, "scenario %s: %d pods, %d client channels, %.0f req/s target, %v per strategy, %s\n",
		r.Scenario, len(c.Pods), c.Clients, c.Rate, c.PhaseDuration().Round(time.Millisecond), mode)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "strategy\trequests\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\terrors\tshare max/mean\tshare CV\tcross-zone\treq/s sent/target\tsend lag mean/max ms\tharness CPU\t")
	for _, x := range r.Results {
		cpu, lag := "-", fmt.Sprintf("%.2f/%.1f", ms(x.LateMean), ms(x.LateMax))
		switch {
		case c.Sim:
			cpu, lag = fmt.Sprintf("%.2f s", x.CPU.Seconds()), "-"
		case x.Wall > 0 && x.CPU > 0:
			cpu = fmt.Sprintf("%.2f cores", x.CPU.Seconds()/x.Wall.Seconds())
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.2f%%\t%.3f\t%.3f\t%.1f%%\t%.0f/%.0f\t%s\t%s\t\n",
			x.Strategy, x.Requests, x.P50ms, x.P90ms, x.P99ms, x.P999ms, 100*x.ErrorRate,
			x.ShareMaxOverMean, x.ShareCV, 100*x.CrossZoneFraction, x.AchievedRate, x.TargetRate,
			lag, cpu)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var notes []string
	for _, x := range r.Results {
		if len(x.ErrorsByCode) > 0 {
			var parts []string
			for _, k := range slices.Sorted(mapsKeys(x.ErrorsByCode)) {
				parts = append(parts, fmt.Sprintf("%s %d", k, x.ErrorsByCode[k]))
			}
			notes = append(notes, fmt.Sprintf("  %s errors: %s", x.Strategy, strings.Join(parts, ", ")))
		}
	}
	for _, x := range r.Results {
		if x.LateMean > LateWarning {
			notes = append(notes, fmt.Sprintf("  warning: %s: requests left %.1f ms late on average (max %.0f ms): the harness did not get the CPU it needed, its latencies are inflated; rerun on a quieter machine or with a lower --rate",
				x.Strategy, ms(x.LateMean), ms(x.LateMax)))
		}
	}
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
	return nil
}

func mapsKeys(m map[string]int64) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
