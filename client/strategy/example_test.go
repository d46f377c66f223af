package strategy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"k8s.io/utils/clock"

	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy"
)

// labelMatch is a wrapper: it offers its inner strategy only the candidates
// whose pod label Key has Value, or every candidate when none has.
type labelMatch struct {
	cfg   *labelMatchConfig
	inner strategy.Strategy
}

type labelMatchConfig struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type labelMatchBuilder struct{}

func (labelMatchBuilder) Name() string                { return "label_match" }
func (labelMatchBuilder) Position() strategy.Position { return strategy.Wrapper }
func (labelMatchBuilder) ParseConfig(raw json.RawMessage) (any, error) {
	cfg := &labelMatchConfig{}
	if err := strategy.DecodeConfig("label_match", raw, cfg); err != nil {
		return nil, err
	}
	if cfg.Key == "" {
		return nil, errors.New("fairway/label_match: key is required")
	}
	return cfg, nil
}
func (labelMatchBuilder) Build(cfg any, inner strategy.Strategy, _ strategy.BuildOptions) strategy.Strategy {
	return &labelMatch{cfg: cfg.(*labelMatchConfig), inner: inner}
}

// Build runs off the pick path: filter here, once, not in Pick.
func (s *labelMatch) Build(set strategy.Set) strategy.Picker {
	var match []strategy.Candidate
	for _, c := range set.Cands {
		if c.E.Info.Labels[s.cfg.Key] == s.cfg.Value {
			match = append(match, c)
		}
	}
	if len(match) > 0 {
		set.Cands = match
	}
	return s.inner.Build(set)
}

func (s *labelMatch) Tick(set strategy.Set) bool { return s.inner.Tick(set) }

// fewestInFlight is a terminal: it picks the candidate with the fewest
// requests in flight, the first one on a tie. Pick reads atomics only: no
// lock, no allocation, no clock.
type fewestInFlight struct{}

type fewestInFlightBuilder struct{}

func (fewestInFlightBuilder) Name() string                { return "fewest_in_flight" }
func (fewestInFlightBuilder) Position() strategy.Position { return strategy.Terminal }
func (fewestInFlightBuilder) ParseConfig(raw json.RawMessage) (any, error) {
	return nil, strategy.DecodeConfig("fewest_in_flight", raw, &struct{}{})
}
func (fewestInFlightBuilder) Build(any, strategy.Strategy, strategy.BuildOptions) strategy.Strategy {
	return fewestInFlight{}
}

func (fewestInFlight) Build(set strategy.Set) strategy.Picker {
	cands := set.Cands
	if len(cands) == 0 {
		return strategy.NoEndpoint
	}
	return strategy.PickerFunc(func(context.Context) (*strategy.Endpoint, error) {
		best := cands[0].E
		for _, c := range cands[1:] {
			if c.E.InFlight() < best.InFlight() {
				best = c.E
			}
		}
		return best, nil
	})
}

func (fewestInFlight) Tick(strategy.Set) bool { return false }

// An application-specific strategy chain: a wrapper that keeps the canary
// pods and a terminal that picks the least busy of them. An application
// registers its strategies from an init function and names them in its chain
// like the built-ins (client.WithStrategy, or the fairway.io/strategy
// annotation on the Service). Here the chain is built and picked from
// directly, as the balancer does for every request.
func Example_customStrategy() {
	strategy.Register(labelMatchBuilder{})
	strategy.Register(fewestInFlightBuilder{})

	chain, err := strategy.ParseChain([]byte(`[{"label_match": {"key": "track", "value": "canary"}}, {"fewest_in_flight": {}}]`))
	if err != nil {
		fmt.Println(err)
		return
	}
	s, _ := chain.Build(strategy.BuildOptions{Clock: clock.RealClock{}})

	now := time.Now()
	set := strategy.Set{Now: now}
	for i, track := range []string{"stable", "canary", "canary"} {
		e := strategy.NewEndpoint(fmt.Sprintf("10.0.0.%d:8080", i+1),
			endpointattr.Info{Weight: 1, Labels: map[string]string{"track": track}}, now)
		set.All = append(set.All, e)
		set.Cands = append(set.Cands, strategy.Candidate{E: e, Weight: 1})
	}
	picker := s.Build(set)
	for range 3 {
		e, _ := picker.Pick(context.Background())
		e.Picked() // the balancer does this: one more request in flight
		fmt.Println(e.Addr, e.Info.Labels["track"], "in flight:", e.InFlight())
	}

	// A bad config is rejected when the chain is parsed, not on a pick.
	_, err = strategy.ParseChain([]byte(`[{"label_match": {}}, {"fewest_in_flight": {}}]`))
	fmt.Println(err)
	// Output:
	// 10.0.0.2:8080 canary in flight: 1
	// 10.0.0.3:8080 canary in flight: 1
	// 10.0.0.2:8080 canary in flight: 2
	// fairway/label_match: key is required
}
