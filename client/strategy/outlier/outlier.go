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
	state    map[*strategy.Endpoint]*epState // guarded by the Pool's serialization of Tick
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
		if !c.E.Excluded(set.Now) {
			out = append(out, c)
		}
	}
	set.Cands = out
	return o.inner.Build(set)
}

// tick is the state of one Tick: the ejection budget and whether the
// picker must be rebuilt.
type tick struct {
	now     time.Time
	all     int // endpoints in set.All
	ejected int // endpoints ejected now
	rebuild bool
}

// Tick runs the steps grpc-go's outlier detection runs on its interval
// timer: forget endpoints that are gone, re-admit expired ejections, read
// each candidate's counters, then eject by consecutive failures and, every
// Interval, by failure rate.
func (o *outlier) Tick(set strategy.Set) bool {
	t := &tick{now: set.Now, all: len(set.All), rebuild: o.inner.Tick(set)}
	evaluate := o.lastEval.IsZero() || t.now.Sub(o.lastEval) >= time.Duration(o.cfg.Interval)
	if evaluate {
		o.lastEval = t.now
	}
	o.forgetGone(set.All)
	o.readmitExpired(t, set.All)
	rates, sumRate, consecutive := o.observe(t, set.Cands, evaluate)
	defer func() { o.rates, o.consec = rates[:0], consecutive[:0] }()
	for _, e := range consecutive {
		o.eject(t, e)
	}
	o.ejectByFailureRate(t, rates, sumRate)
	return t.rebuild
}

// forgetGone drops the state of endpoints no longer in all, without
// allocating (Tick runs every few hundred milliseconds).
func (o *outlier) forgetGone(all []*strategy.Endpoint) {
	o.gen++
	for _, e := range all {
		if st := o.state[e]; st != nil {
			st.gen = o.gen
		}
	}
	for e, st := range o.state {
		if st.gen != o.gen {
			delete(o.state, e)
		}
	}
}

// readmitExpired lifts the ejections that have run out and counts the
// others.
func (o *outlier) readmitExpired(t *tick, all []*strategy.Endpoint) {
	for _, e := range all {
		u := e.ExcludedUntil()
		if u.IsZero() {
			continue
		}
		if !t.now.Before(u) {
			e.Readmit()
			t.rebuild = true
			continue
		}
		t.ejected++
	}
}

// observe reads each candidate's counters into its state: the failures in
// a row, and, when evaluate, the interval and the window that end now. It
// returns the window's failure rates of the endpoints not ejected with
// calls in it, their sum, and the endpoints with too many failures in a
// row.
func (o *outlier) observe(t *tick, cands []strategy.Candidate, evaluate bool) (rates []rate, sumRate float64, consecutive []*strategy.Endpoint) {
	rates, consecutive = o.rates[:0], o.consec[:0]
	for _, c := range cands {
		e := c.E
		st, total, failed := o.stateOf(e)
		st.countConsecutive(total, failed)
		var it, ifl, wt, wf uint64
		if evaluate {
			it, ifl, wt, wf = st.endInterval(total, failed)
		}
		if e.Excluded(t.now) {
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
			sumRate += float64(wf) / float64(wt)
			rates = append(rates, rate{e: e, total: wt, failed: wf})
		}
	}
	return rates, sumRate, consecutive
}

// stateOf returns e's state, creating it, and e's counters now.
func (o *outlier) stateOf(e *strategy.Endpoint) (st *epState, total, failed uint64) {
	total, failed = e.Finished(o.cfg.mask)
	st = o.state[e]
	if st == nil {
		st = &epState{intervalTotal: total, intervalFailed: failed, tickTotal: total, tickFailed: failed, gen: o.gen,
			ring: make([]counts, o.slots)}
		st.resetWindow(total, failed)
		o.state[e] = st
	}
	return st, total, failed
}

// countConsecutive adds the calls since the last Tick to the failures in a
// row, or starts over when one of them succeeded.
func (st *epState) countConsecutive(total, failed uint64) {
	dt, df := total-st.tickTotal, failed-st.tickFailed
	st.tickTotal, st.tickFailed = total, failed
	if df == dt {
		st.consecutive += df
	} else {
		st.consecutive = 0 // some call succeeded: start over
	}
}

// endInterval closes the current interval at the counters given and
// returns its calls and failures, and those of the window ending now.
func (st *epState) endInterval(total, failed uint64) (it, ifl, wt, wf uint64) {
	it, ifl = total-st.intervalTotal, failed-st.intervalFailed
	st.intervalTotal, st.intervalFailed = total, failed
	// The oldest slot starts the window; it becomes the newest.
	old := st.ring[st.next]
	wt, wf = total-old.total, failed-old.failed
	st.ring[st.next] = counts{total, failed}
	st.next = (st.next + 1) % len(st.ring)
	return it, ifl, wt, wf
}

// ejectByFailureRate ejects the endpoints with enough calls in the window
// whose failure rate reaches FailurePercentage and stands PeerMarginPercent
// points above the mean of the others'.
func (o *outlier) ejectByFailureRate(t *tick, rates []rate, sumRate float64) {
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
			o.eject(t, r.e)
		}
	}
}

// eject ejects e for the backoff its ejections call for, unless the
// ejection cap is reached or e is already ejected.
func (o *outlier) eject(t *tick, e *strategy.Endpoint) {
	if o.cfg.MaxEjectionPercent <= 0 {
		return
	}
	if t.ejected > 0 && float64(t.ejected)*100 >= o.cfg.MaxEjectionPercent*float64(t.all) {
		return
	}
	if e.Excluded(t.now) {
		return
	}
	st := o.state[e]
	st.ejections++
	d := time.Duration(o.cfg.BaseEjectionTime) * time.Duration(st.ejections)
	d = min(d, time.Duration(o.cfg.MaxEjectionTime))
	e.Exclude(t.now.Add(d))
	st.consecutive = 0
	st.resetWindow(e.Finished(o.cfg.mask))
	t.ejected++
	t.rebuild = true
}

// resetWindow empties the sliding window: every slot starts at the counters
// given.
func (st *epState) resetWindow(total, failed uint64) {
	for i := range st.ring {
		st.ring[i] = counts{total, failed}
	}
}
