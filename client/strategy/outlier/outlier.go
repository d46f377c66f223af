// Package outlier is the error-aware strategy: it ejects endpoints whose
// recent failure rate stands well above their peers', or that failed many
// calls in a row, for a backoff that grows with repeated ejections, and
// re-admits them automatically.
//
// Outcomes reach the endpoints' atomic per-code counters through
// PickResult.Done; Tick reads them, so the pick path does nothing but skip
// ejected endpoints (they are absent from the inner strategy's candidates).
//
// Every Interval, Tick compares each endpoint's failure rate over the last
// Window (a sliding window of whole intervals) with the others': an endpoint
// with at least MinRequests calls in the window, a failure rate of at least
// FailurePercentage and at least PeerMarginPercent points above the mean rate
// of its peers is ejected. The window is long and the minimum low because
// each client judges only its own calls: a client sending a few requests per
// second spread over ten pods sends about one a second to each, and must
// still notice a pod failing half of them. Independently, on every Tick, an
// endpoint whose last ConsecutiveFailures observed calls all failed is
// ejected at once. An ejection empties the endpoint's window, so that it is
// judged afresh once re-admitted. An ejection lasts
// BaseEjectionTime × n (n = how many times the endpoint was ejected, lowered
// by one for every interval with calls and no failure), capped at MaxEjectionTime. No ejection
// happens when MaxEjectionPercent of the endpoints are already ejected
// (one is always allowed when MaxEjectionPercent > 0).
package outlier

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/fairway-lb/fairway/client/strategy"
)

// Name is the strategy's name in chains.
const Name = "outlier"

// DefaultFailureCodes are the codes that count as failures by default.
var DefaultFailureCodes = []string{"UNAVAILABLE", "INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}

// Config is outlier's typed configuration.
type Config struct {
	// Interval is how often failure rates are evaluated. Default 1s.
	Interval strategy.Duration `json:"interval"`
	// Window is the sliding window failure rates are computed over, a
	// whole number of intervals (rounded up; at most 60). Default 10s.
	Window strategy.Duration `json:"window"`
	// FailurePercentage is the failure rate (0–100) from which an endpoint
	// may be ejected. Default 50.
	FailurePercentage float64 `json:"failure_percentage"`
	// PeerMarginPercent: the rate must also exceed the peers' mean rate by
	// this many points. Default 20.
	PeerMarginPercent float64 `json:"peer_margin_percent"`
	// MinRequests is the fewest calls in the window to judge a rate. Default 5.
	MinRequests uint64 `json:"min_requests"`
	// ConsecutiveFailures ejects after this many failures with no success
	// in between (0 = off). Default 3.
	ConsecutiveFailures uint64 `json:"consecutive_failures"`
	// BaseEjectionTime is the first ejection's length. Default 30s.
	BaseEjectionTime strategy.Duration `json:"base_ejection_time"`
	// MaxEjectionTime caps an ejection's length. Default 300s.
	MaxEjectionTime strategy.Duration `json:"max_ejection_time"`
	// MaxEjectionPercent caps the share of ejected endpoints, 0–100. Default 20.
	MaxEjectionPercent float64 `json:"max_ejection_percent"`
	// FailureCodes are the gRPC codes counted as failures.
	FailureCodes []string `json:"failure_codes"`

	mask strategy.CodeMask
}

// Mask returns the failure codes as a set.
func (c *Config) Mask() strategy.CodeMask { return c.mask }

func init() { strategy.Register(builder{}) }

type builder struct{}

func (builder) Name() string                { return Name }
func (builder) Position() strategy.Position { return strategy.Wrapper }

func (builder) ParseConfig(raw json.RawMessage) (any, error) {
	cfg := &Config{
		Interval:            strategy.Duration(time.Second),
		Window:              strategy.Duration(10 * time.Second),
		FailurePercentage:   50,
		PeerMarginPercent:   20,
		MinRequests:         5,
		ConsecutiveFailures: 3,
		BaseEjectionTime:    strategy.Duration(30 * time.Second),
		MaxEjectionTime:     strategy.Duration(300 * time.Second),
		MaxEjectionPercent:  20,
		FailureCodes:        slices.Clone(DefaultFailureCodes),
	}
	if err := strategy.DecodeConfig(Name, raw, cfg); err != nil {
		return nil, err
	}
	switch {
	case cfg.Interval <= 0:
		return nil, fmt.Errorf("fairway/outlier: interval must be > 0")
	case cfg.Window < cfg.Interval:
		return nil, fmt.Errorf("fairway/outlier: window must be >= interval")
	case cfg.Window > 60*cfg.Interval:
		return nil, fmt.Errorf("fairway/outlier: window must be at most 60 intervals")
	case cfg.FailurePercentage < 0 || cfg.FailurePercentage > 100:
		return nil, fmt.Errorf("fairway/outlier: failure_percentage %v must be within 0–100", cfg.FailurePercentage)
	case cfg.PeerMarginPercent < 0 || cfg.PeerMarginPercent > 100:
		return nil, fmt.Errorf("fairway/outlier: peer_margin_percent %v must be within 0–100", cfg.PeerMarginPercent)
	case cfg.MaxEjectionPercent < 0 || cfg.MaxEjectionPercent > 100:
		return nil, fmt.Errorf("fairway/outlier: max_ejection_percent %v must be within 0–100", cfg.MaxEjectionPercent)
	case cfg.BaseEjectionTime <= 0:
		return nil, fmt.Errorf("fairway/outlier: base_ejection_time must be > 0")
	case cfg.MaxEjectionTime < cfg.BaseEjectionTime:
		return nil, fmt.Errorf("fairway/outlier: max_ejection_time must be >= base_ejection_time")
	}
	m, err := strategy.ParseCodes(cfg.FailureCodes)
	if err != nil {
		return nil, fmt.Errorf("fairway/outlier: failure_codes: %w", err)
	}
	if m.Has(codes.OK) {
		return nil, fmt.Errorf("fairway/outlier: failure_codes must not contain OK")
	}
	cfg.mask = m
	return cfg, nil
}

func (builder) Build(cfg any, inner strategy.Strategy, _ strategy.BuildOptions) strategy.Strategy {
	c := *cfg.(*Config)
	n := int((c.Window + c.Interval - 1) / c.Interval)
	return &outlier{cfg: c, inner: inner, state: map[*strategy.Endpoint]*epState{}, slots: n}
}

// counts are an endpoint's cumulative counters at one moment.
type counts struct{ total, failed uint64 }

// epState is the outlier's memory of one endpoint (touched only from Tick).
type epState struct {
	// Counters at the start of the current interval.
	intervalTotal, intervalFailed uint64
	// ring holds the counters at the start of each of the last intervals
	// (one slot per interval of the window); next is the oldest.
	ring []counts
	next int
	// Counters at the last Tick, and failures seen since the last success.
	tickTotal, tickFailed uint64
	consecutive           uint64
	// ejections is the backoff multiplier.
	ejections int
	gen       uint64 // o.gen when last seen in set.All
}

type outlier struct {
	cfg      Config
	slots    int // intervals per window
	inner    strategy.Strategy
	state    map[*strategy.Endpoint]*epState // guarded by the balancer's serialization of Tick
	lastEval time.Time
	gen      uint64
	rates    []rate               // reused by Tick
	consec   []*strategy.Endpoint // reused by Tick
}

type rate struct {
	e      *strategy.Endpoint
	total  uint64
	failed uint64
}

func (o *outlier) Build(set strategy.Set) strategy.Picker {
	out := make([]strategy.Candidate, 0, len(set.Cands))
	for _, c := range set.Cands {
		if !c.E.Ejected(set.Now) {
			out = append(out, c)
		}
	}
	set.Cands = out
	return o.inner.Build(set)
}

func (o *outlier) Tick(set strategy.Set) bool {
	rebuild := o.inner.Tick(set)
	now := set.Now
	evaluate := o.lastEval.IsZero() || now.Sub(o.lastEval) >= time.Duration(o.cfg.Interval)
	if evaluate {
		o.lastEval = now
	}

	// Forget endpoints that are gone (without allocating: Tick runs every
	// few hundred milliseconds); re-admit expired ejections.
	o.gen++
	for _, e := range set.All {
		if st := o.state[e]; st != nil {
			st.gen = o.gen
		}
	}
	for e, st := range o.state {
		if st.gen != o.gen {
			delete(o.state, e)
		}
	}
	ejected := 0
	for _, e := range set.All {
		u := e.EjectedUntil.Load()
		if u == 0 {
			continue
		}
		if now.UnixNano() >= u {
			e.EjectedUntil.Store(0)
			rebuild = true
			continue
		}
		ejected++
	}

	rates := o.rates[:0]
	var sumRate float64
	consecutive := o.consec[:0]
	defer func() { o.rates, o.consec = rates[:0], consecutive[:0] }()
	for _, c := range set.Cands {
		e := c.E
		st := o.state[e]
		total, failed := e.Finished(o.cfg.mask)
		if st == nil {
			st = &epState{intervalTotal: total, intervalFailed: failed, tickTotal: total, tickFailed: failed, gen: o.gen,
				ring: make([]counts, o.slots)}
			st.resetWindow(total, failed)
			o.state[e] = st
		}
		dt, df := total-st.tickTotal, failed-st.tickFailed
		st.tickTotal, st.tickFailed = total, failed
		if df == dt {
			st.consecutive += df
		} else {
			st.consecutive = 0 // some call succeeded: start over
		}
		var it, ifl, wt, wf uint64
		if evaluate {
			it, ifl = total-st.intervalTotal, failed-st.intervalFailed
			st.intervalTotal, st.intervalFailed = total, failed
			// The oldest slot starts the window; it becomes the newest.
			old := st.ring[st.next]
			wt, wf = total-old.total, failed-old.failed
			st.ring[st.next] = counts{total, failed}
			st.next = (st.next + 1) % len(st.ring)
		}
		if e.Ejected(now) {
			st.consecutive = 0
			continue
		}
		if o.cfg.ConsecutiveFailures > 0 && st.consecutive >= o.cfg.ConsecutiveFailures {
			consecutive = append(consecutive, e)
		}
		if !evaluate {
			continue
		}
		if it > 0 && ifl == 0 && st.ejections > 0 {
			st.ejections-- // a clean interval with traffic lowers the backoff
		}
		if wt > 0 {
			r := float64(wf) / float64(wt)
			sumRate += r
			rates = append(rates, rate{e: e, total: wt, failed: wf})
		}
	}

	eject := func(e *strategy.Endpoint) {
		if o.cfg.MaxEjectionPercent <= 0 {
			return
		}
		if ejected > 0 && float64(ejected)*100 >= o.cfg.MaxEjectionPercent*float64(len(set.All)) {
			return
		}
		if e.Ejected(now) {
			return
		}
		st := o.state[e]
		st.ejections++
		d := time.Duration(o.cfg.BaseEjectionTime) * time.Duration(st.ejections)
		d = min(d, time.Duration(o.cfg.MaxEjectionTime))
		e.EjectedUntil.Store(now.Add(d).UnixNano())
		e.Ejections.Add(1)
		st.consecutive = 0
		st.resetWindow(e.Finished(o.cfg.mask))
		ejected++
		rebuild = true
	}
	for _, e := range consecutive {
		eject(e)
	}
	for _, r := range rates {
		if r.total < o.cfg.MinRequests {
			continue
		}
		fr := float64(r.failed) / float64(r.total)
		peers := 0.0
		if len(rates) > 1 {
			peers = (sumRate - fr) / float64(len(rates)-1)
		}
		if fr*100 >= o.cfg.FailurePercentage && (fr-peers)*100 >= o.cfg.PeerMarginPercent {
			eject(r.e)
		}
	}
	return rebuild
}

// resetWindow empties the sliding window: every slot starts at the counters
// given.
func (st *epState) resetWindow(total, failed uint64) {
	for i := range st.ring {
		st.ring[i] = counts{total, failed}
	}
}
