package bench

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// WritePlots writes PNG charts of the report into dir (created if needed)
// and returns their paths: the latency CDF per strategy, each pod's share of
// the requests per strategy, and, when pods join or crash during the run, the
// changing pods' share over time per strategy.
func (r *Report) WritePlots(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("fairway/bench: %w", err)
	}
	var paths []string
	save := func(p *plot.Plot, name string, w vg.Length) error {
		path := filepath.Join(dir, r.Scenario+"-"+name+".png")
		if err := p.Save(w, 4*vg.Inch, path); err != nil {
			return fmt.Errorf("fairway/bench: %s: %w", path, err)
		}
		paths = append(paths, path)
		return nil
	}
	if p, err := r.cdfPlot(); err != nil {
		return nil, err
	} else if err := save(p, "latency-cdf", 7*vg.Inch); err != nil {
		return nil, err
	}
	if p, err := r.sharePlot(); err != nil {
		return nil, err
	} else if err := save(p, "pod-share", 9*vg.Inch); err != nil {
		return nil, err
	}
	if p, err := r.shareOverTimePlot(); err != nil {
		return nil, err
	} else if p != nil {
		if err := save(p, "share-over-time", 7*vg.Inch); err != nil {
			return nil, err
		}
	}
	return paths, nil
}

func (r *Report) cdfPlot() (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = r.Scenario + ": latency CDF"
	p.X.Label.Text = "latency (ms, log scale)"
	p.Y.Label.Text = "fraction of requests"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top = false
	p.Legend.Left = false
	p.Add(plotter.NewGrid())
	for i, res := range r.Results {
		if res.Latency == nil {
			continue
		}
		cdf := res.Latency.CDF()
		pts := make(plotter.XYs, 0, len(cdf))
		for _, c := range cdf {
			pts = append(pts, plotter.XY{X: math.Max(ms(c.Value), 0.01), Y: c.Fraction})
		}
		if len(pts) == 0 {
			continue
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, err
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.5)
		l.Dashes = plotutil.Dashes(i)
		p.Add(l)
		p.Legend.Add(res.Strategy, l)
	}
	return p, nil
}

func (r *Report) sharePlot() (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = r.Scenario + ": each pod's share of requests over its fair share (capacity × time serving)"
	p.X.Label.Text = "pod"
	p.Y.Label.Text = "share / fair share"
	p.Legend.Top = true
	n := len(r.Config.Pods)
	fair := fairWeights(r.Config.Pods)
	var fsum float64
	for _, f := range fair {
		fsum += f
	}
	w := vg.Points(math.Max(2, 40/float64(len(r.Results))*12/math.Max(float64(n), 12)))
	for i, res := range r.Results {
		vals := make(plotter.Values, n)
		for j := range vals {
			if j < len(res.Shares) && fair[j] > 0 {
				vals[j] = res.Shares[j] / (fair[j] / fsum)
			}
		}
		b, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return nil, err
		}
		b.LineStyle.Width = 0
		b.Color = plotutil.Color(i)
		b.Offset = w * vg.Length(float64(i)-float64(len(r.Results)-1)/2)
		p.Add(b)
		p.Legend.Add(res.Strategy, b)
	}
	one, err := plotter.NewLine(plotter.XYs{{X: -0.5, Y: 1}, {X: float64(n) - 0.5, Y: 1}})
	if err != nil {
		return nil, err
	}
	one.Color = color.Gray{Y: 100}
	one.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
	p.Add(one)
	names := make([]string, n)
	for j := range names {
		names[j] = fmt.Sprint(j)
		if n > 30 && j%5 != 0 {
			names[j] = ""
		}
	}
	p.NominalX(names...)
	return p, nil
}

// shareOverTimePlot plots the combined share of the pods that join or crash
// during the run; nil when no pod does.
func (r *Report) shareOverTimePlot() (*plot.Plot, error) {
	var changing []int
	for i, pod := range r.Config.Pods {
		if pod.JoinAt > 0 || pod.CrashAt > 0 {
			changing = append(changing, i)
		}
	}
	if len(changing) == 0 {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s: share of the %d pod(s) that join or crash, over time", r.Scenario, len(changing))
	p.X.Label.Text = "time into the run (s)"
	p.Y.Label.Text = "their share of requests"
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true
	run := r.Config.PhaseDuration()
	for i, res := range r.Results {
		var pts plotter.XYs
		for t, col := range res.ShareOverTime {
			if time.Duration(t)*r.Bucket >= run {
				break
			}
			var s float64
			for _, j := range changing {
				if j < len(col) {
					s += col[j]
				}
			}
			pts = append(pts, plotter.XY{X: (float64(t) + 0.5) * r.Bucket.Seconds(), Y: s})
		}
		if len(pts) == 0 {
			continue
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, err
		}
		l.Color = plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i)
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(res.Strategy, l)
	}
	// Their fair share when serving: their number over the serving pods.
	var fair plotter.XYs
	steps := 200
	for k := 0; k <= steps; k++ {
		f := float64(k) / float64(steps)
		live, mine := 0, 0
		for j, pod := range r.Config.Pods {
			up := pod.JoinAt <= f && (pod.CrashAt == 0 || f < pod.CrashAt)
			if up {
				live++
				if pod.JoinAt > 0 || pod.CrashAt > 0 {
					mine++
				}
			}
			_ = j
		}
		if live > 0 {
			fair = append(fair, plotter.XY{X: f * run.Seconds(), Y: float64(mine) / float64(live)})
		}
	}
	l, err := plotter.NewLine(fair)
	if err != nil {
		return nil, err
	}
	l.Color = color.Gray{Y: 100}
	l.Dashes = []vg.Length{vg.Points(2), vg.Points(4)}
	p.Add(l)
	p.Legend.Add("fair share", l)
	return p, nil
}
