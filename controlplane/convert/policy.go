package convert

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fairway-lb/fairway/controlplane/topology"
	"github.com/fairway-lb/fairway/wire"
)

// Service annotations, documented in docs/annotations.md.
const (
	AnnotationLBPolicy                  = "fairway.io/lb-policy"
	AnnotationChoiceCount               = "fairway.io/choice-count"
	AnnotationSlowStartWindow           = "fairway.io/slow-start-window"
	AnnotationSlowStartAggression       = "fairway.io/slow-start-aggression"
	AnnotationSlowStartMinWeightPercent = "fairway.io/slow-start-min-weight-percent"
	AnnotationOutlierDetection          = "fairway.io/outlier-detection"
	AnnotationOutlierFailurePercentage  = "fairway.io/outlier-failure-percentage"
	AnnotationOutlierMaxEjectionPercent = "fairway.io/outlier-max-ejection-percent"
	AnnotationOutlierBaseEjectionTime   = "fairway.io/outlier-base-ejection-time"
	AnnotationStrategy                  = "fairway.io/strategy"
	AnnotationHashHeader                = "fairway.io/hash-header"
)

// EndpointSlice (and Pod) annotations and labels, documented in
// docs/annotations.md.
const (
	// AnnotationWeight is the weight of every endpoint of an EndpointSlice,
	// or of one pod when pod watching is on.
	AnnotationWeight = "fairway.io/weight"
	// AnnotationEndpointWeights is "KEY=N,KEY=N" on an EndpointSlice.
	AnnotationEndpointWeights = "fairway.io/endpoint-weights"
	// LabelPrefix prefixes the EndpointSlice labels copied to its endpoints
	// (without the prefix).
	LabelPrefix = "label.fairway.io/"
)

// Weight bounds of AnnotationWeight and AnnotationEndpointWeights.
const (
	MinWeight = 1
	MaxWeight = 10000
)

// Policy parses the fairway.io/ annotations of a Service (see
// docs/annotations.md) into its balancing policy, starting from
// topology.DefaultPolicy. An annotation with an empty value counts as absent.
// Each invalid value gives a Problem with reason InvalidAnnotation (Namespace,
// Service and Object left empty for the caller to fill) and its default is
// used. The returned Policy shares nothing with any other.
func Policy(annotations map[string]string) (topology.Policy, []Problem) {
	var p parser
	pol := topology.DefaultPolicy()

	if v, ok := p.get(annotations, AnnotationLBPolicy); ok {
		switch lb := topology.LBPolicy(v); lb {
		case topology.LeastRequest, topology.RoundRobin, topology.Random, topology.WeightedRoundRobin, topology.RingHash:
			pol.LB = lb
		default:
			p.invalid(AnnotationLBPolicy, v, "want least_request, round_robin, random, weighted_round_robin or ring_hash", string(pol.LB))
		}
	}
	if v, ok := p.get(annotations, AnnotationHashHeader); ok {
		switch err := wire.ValidateHashHeader(v); {
		case err != nil:
			p.invalid(AnnotationHashHeader, v, err.Error(), topology.DefaultHashHeader)
		case pol.LB != topology.RingHash:
			// Only ring_hash hashes; kept, the header would change nothing
			// but the policy's equality (a push of identical Clusters).
			p.invalid(AnnotationHashHeader, v, "ignored: "+AnnotationLBPolicy+" is not ring_hash", "none")
		default:
			pol.HashHeader = v
		}
	}
	pol.ChoiceCount = uint32(p.integer(annotations, AnnotationChoiceCount, 2, 100, int64(pol.ChoiceCount)))

	window := p.duration(annotations, AnnotationSlowStartWindow, 0, "0 (slow start off)", true)
	aggression := p.float(annotations, AnnotationSlowStartAggression, 1)
	minWeight := p.integer(annotations, AnnotationSlowStartMinWeightPercent, 0, 100, 10)
	if window > 0 {
		pol.SlowStart = &topology.SlowStart{Window: window, Aggression: aggression, MinWeightPercent: float64(minWeight)}
	}

	outlier := true
	if v, ok := p.get(annotations, AnnotationOutlierDetection); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			p.invalid(AnnotationOutlierDetection, v, "want true or false", "true")
		} else {
			outlier = b
		}
	}
	o := topology.DefaultOutlier()
	o.FailurePercentageThreshold = uint32(p.integer(annotations, AnnotationOutlierFailurePercentage, 0, 100, int64(o.FailurePercentageThreshold)))
	o.MaxEjectionPercent = uint32(p.integer(annotations, AnnotationOutlierMaxEjectionPercent, 0, 100, int64(o.MaxEjectionPercent)))
	o.BaseEjectionTime = p.duration(annotations, AnnotationOutlierBaseEjectionTime, o.BaseEjectionTime, o.BaseEjectionTime.String(), false)
	if outlier {
		pol.Outlier = &o
	} else {
		pol.Outlier = nil
	}

	if v, ok := p.get(annotations, AnnotationStrategy); ok {
		s, err := NormalizeStrategy(v)
		if err != nil {
			p.invalid(AnnotationStrategy, v, err.Error(), `"" (the client's default composition)`)
		} else {
			pol.Strategy = s
		}
	}
	return pol, p.problems
}

// NormalizeStrategy checks the shape of a strategy chain and returns its
// canonical compact JSON form (wire.FormatChain). v must be valid UTF-8; it
// is either a JSON chain, checked by wire.ParseChain (docs/design.md), or the
// annotation shorthand "a,b,c" of snake_case names, normalized to
// [{"a":{}},{"b":{}},{"c":{}}]. An empty chain is an error. The strategies' own configs are the client's to
// check.
func NormalizeStrategy(v string) (string, error) {
	v = strings.TrimSpace(v)
	if !utf8.ValidString(v) {
		return "", errors.New("not valid UTF-8")
	}
	var links []wire.Link
	switch {
	case strings.HasPrefix(v, "{"):
		return "", errors.New("a JSON object, want an array of single-key objects")
	case strings.HasPrefix(v, "["):
		var err error
		if links, err = wire.ParseChain([]byte(v)); err != nil {
			return "", err
		}
	default:
		for name := range strings.SplitSeq(v, ",") {
			name = strings.TrimSpace(name)
			if !wire.ValidName(name) {
				return "", fmt.Errorf("strategy name %q is not snake_case", name)
			}
			links = append(links, wire.Link{Name: name})
		}
	}
	if len(links) == 0 {
		return "", errors.New("empty strategy chain")
	}
	return wire.FormatChain(links), nil
}

// ParseWeight parses a weight annotation value: an integer in
// MinWeight-MaxWeight.
func ParseWeight(v string) (uint32, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < MinWeight || n > MaxWeight {
		return 0, fmt.Errorf("want an integer in %d-%d", MinWeight, MaxWeight)
	}
	return uint32(n), nil
}

// parser collects the problems of one set of annotations.
type parser struct {
	problems []Problem
}

// get returns the value of annotation key, trimmed; false when it is empty
// or, reported, not valid UTF-8.
func (p *parser) get(annotations map[string]string, key string) (string, bool) {
	v := strings.TrimSpace(annotations[key])
	if !utf8.ValidString(v) {
		p.problems = append(p.problems, Problem{
			Reason:  ReasonInvalidAnnotation,
			Message: fmt.Sprintf("annotation %s: value %q is not valid UTF-8; using its default", key, v),
		})
		return "", false
	}
	return v, v != ""
}

func (p *parser) invalid(key, value, why, def string) {
	p.problems = append(p.problems, Problem{
		Reason:  ReasonInvalidAnnotation,
		Message: fmt.Sprintf("annotation %s: invalid value %q (%s); using default %s", key, value, why, def),
	})
}

func (p *parser) integer(annotations map[string]string, key string, lo, hi, def int64) int64 {
	v, ok := p.get(annotations, key)
	if !ok {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		p.invalid(key, v, fmt.Sprintf("want an integer in %d-%d", lo, hi), strconv.FormatInt(def, 10))
		return def
	}
	return n
}

func (p *parser) float(annotations map[string]string, key string, def float64) float64 {
	v, ok := p.get(annotations, key)
	if !ok {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || !(f > 0) || f > 1e6 {
		p.invalid(key, v, "want a number > 0", strconv.FormatFloat(def, 'g', -1, 64))
		return def
	}
	return f
}

// duration parses a Go duration; zero is allowed only when allowZero.
func (p *parser) duration(annotations map[string]string, key string, def time.Duration, defText string, allowZero bool) time.Duration {
	v, ok := p.get(annotations, key)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || (d == 0 && !allowZero) {
		want := "want a Go duration > 0, e.g. 30s"
		if allowZero {
			want = "want a Go duration >= 0, e.g. 30s"
		}
		p.invalid(key, v, want, defText)
		return def
	}
	return d
}
