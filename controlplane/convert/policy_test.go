package convert

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fairway-lb/fairway/controlplane/topology"
)

func TestPolicy_Annotations(t *testing.T) {
	def := topology.DefaultPolicy
	with := func(f func(p *topology.Policy)) topology.Policy {
		p := def()
		f(&p)
		return p
	}
	invalid := func(msg string) Problem { return Problem{Reason: ReasonInvalidAnnotation, Message: msg} }
	tests := []struct {
		name         string
		annotations  map[string]string
		want         topology.Policy
		wantProblems []Problem
	}{
		{name: "no annotations", want: def()},
		{name: "unrelated annotations", annotations: map[string]string{"app": "x", "fairway.io/unknown": "1"}, want: def()},
		{name: "empty values count as absent", annotations: map[string]string{AnnotationLBPolicy: "", AnnotationStrategy: "  ", AnnotationChoiceCount: ""}, want: def()},
		{name: "lb-policy round_robin", annotations: map[string]string{AnnotationLBPolicy: "round_robin"}, want: with(func(p *topology.Policy) { p.LB = topology.RoundRobin })},
		{name: "lb-policy random", annotations: map[string]string{AnnotationLBPolicy: "random"}, want: with(func(p *topology.Policy) { p.LB = topology.Random })},
		{name: "lb-policy least_request", annotations: map[string]string{AnnotationLBPolicy: "least_request"}, want: def()},
		{name: "lb-policy weighted_round_robin", annotations: map[string]string{AnnotationLBPolicy: "weighted_round_robin"}, want: with(func(p *topology.Policy) { p.LB = topology.WeightedRoundRobin })},
		{name: "lb-policy ring_hash", annotations: map[string]string{AnnotationLBPolicy: "ring_hash"}, want: with(func(p *topology.Policy) { p.LB = topology.RingHash })},
		{
			name:        "ring_hash with its hash header",
			annotations: map[string]string{AnnotationLBPolicy: "ring_hash", AnnotationHashHeader: " x-tenant.id_2 "},
			want:        with(func(p *topology.Policy) { p.LB = topology.RingHash; p.HashHeader = "x-tenant.id_2" }),
		},
		{
			name: "hash-header without ring_hash", annotations: map[string]string{AnnotationHashHeader: "x-tenant"}, want: def(),
			wantProblems: []Problem{invalid(`annotation fairway.io/hash-header: invalid value "x-tenant" (ignored: fairway.io/lb-policy is not ring_hash); using default none`)},
		},
		{
			name: "hash-header too long", annotations: map[string]string{AnnotationLBPolicy: "ring_hash", AnnotationHashHeader: strings.Repeat("x", 129)},
			want:         func() topology.Policy { p := def(); p.LB = topology.RingHash; return p }(),
			wantProblems: []Problem{invalid(`annotation fairway.io/hash-header: invalid value "` + strings.Repeat("x", 129) + `" (fairway/wire: hash header is 129 bytes long, want at most 128); using default x-fairway-shard`)},
		},
		{
			name: "hash-header uppercase", annotations: map[string]string{AnnotationHashHeader: "X-Shard"}, want: def(),
			wantProblems: []Problem{invalid(`annotation fairway.io/hash-header: invalid value "X-Shard" (fairway/wire: hash header: want a lowercase HTTP header name (a-z, 0-9, '-', '_', '.'), found 'X'); using default x-fairway-shard`)},
		},
		{
			name: "hash-header with a space", annotations: map[string]string{AnnotationHashHeader: "x shard"}, want: def(),
			wantProblems: []Problem{invalid(`annotation fairway.io/hash-header: invalid value "x shard" (fairway/wire: hash header: want a lowercase HTTP header name (a-z, 0-9, '-', '_', '.'), found ' '); using default x-fairway-shard`)},
		},
		{
			name: "hash-header pseudo-header", annotations: map[string]string{AnnotationHashHeader: ":authority"}, want: def(),
			wantProblems: []Problem{invalid(`annotation fairway.io/hash-header: invalid value ":authority" (fairway/wire: hash header: want a lowercase HTTP header name (a-z, 0-9, '-', '_', '.'), found ':'); using default x-fairway-shard`)},
		},
		{
			name: "hash-header binary", annotations: map[string]string{AnnotationHashHeader: "x-shard-bin"}, want: def(),
			wantProblems: []Problem{invalid(`annotation fairway.io/hash-header: invalid value "x-shard-bin" (fairway/wire: hash header: a binary (-bin) header, which gRPC clients do not hash on); using default x-fairway-shard`)},
		},
		{
			name: "hash-header reserved", annotations: map[string]string{AnnotationHashHeader: "grpc-timeout"}, want: def(),
			wantProblems: []Problem{invalid(`annotation fairway.io/hash-header: invalid value "grpc-timeout" (fairway/wire: hash header: a reserved grpc- header); using default x-fairway-shard`)},
		},
		{
			name: "lb-policy invalid", annotations: map[string]string{AnnotationLBPolicy: "maglev"}, want: def(),
			wantProblems: []Problem{invalid(`annotation fairway.io/lb-policy: invalid value "maglev" (want least_request, round_robin, random, weighted_round_robin or ring_hash); using default least_request`)},
		},
		{name: "choice-count", annotations: map[string]string{AnnotationChoiceCount: "5"}, want: with(func(p *topology.Policy) { p.ChoiceCount = 5 })},
		{name: "choice-count upper bound", annotations: map[string]string{AnnotationChoiceCount: "100"}, want: with(func(p *topology.Policy) { p.ChoiceCount = 100 })},
		{
			name: "choice-count out of range", annotations: map[string]string{AnnotationChoiceCount: "101"}, want: def(),
			wantProblems: []Problem{invalid(`annotation fairway.io/choice-count: invalid value "101" (want an integer in 2-100); using default 2`)},
		},
		{
			name: "choice-count not a number", annotations: map[string]string{AnnotationChoiceCount: "two"}, want: def(),
			wantProblems: []Problem{invalid(`annotation fairway.io/choice-count: invalid value "two" (want an integer in 2-100); using default 2`)},
		},
		{
			name:        "slow start with every setting",
			annotations: map[string]string{AnnotationSlowStartWindow: "1m30s", AnnotationSlowStartAggression: "2.5", AnnotationSlowStartMinWeightPercent: "0"},
			want: with(func(p *topology.Policy) {
				p.SlowStart = &topology.SlowStart{Window: 90 * time.Second, Aggression: 2.5, MinWeightPercent: 0}
			}),
		},
		{name: "slow start window 0 is off", annotations: map[string]string{AnnotationSlowStartWindow: "0"}, want: def()},
		{name: "slow start settings without a window are off", annotations: map[string]string{AnnotationSlowStartAggression: "2"}, want: def()},
		{
			name:        "slow start invalid values",
			annotations: map[string]string{AnnotationSlowStartWindow: "-5s", AnnotationSlowStartAggression: "0", AnnotationSlowStartMinWeightPercent: "150"},
			want:        def(),
			wantProblems: []Problem{
				invalid(`annotation fairway.io/slow-start-window: invalid value "-5s" (want a Go duration >= 0, e.g. 30s); using default 0 (slow start off)`),
				invalid(`annotation fairway.io/slow-start-aggression: invalid value "0" (want a number > 0); using default 1`),
				invalid(`annotation fairway.io/slow-start-min-weight-percent: invalid value "150" (want an integer in 0-100); using default 10`),
			},
		},
		{
			name:        "slow start with invalid aggression keeps its window",
			annotations: map[string]string{AnnotationSlowStartWindow: "30s", AnnotationSlowStartAggression: "NaN"},
			want: with(func(p *topology.Policy) {
				p.SlowStart = &topology.SlowStart{Window: 30 * time.Second, Aggression: 1, MinWeightPercent: 10}
			}),
			wantProblems: []Problem{invalid(`annotation fairway.io/slow-start-aggression: invalid value "NaN" (want a number > 0); using default 1`)},
		},
		{name: "outlier detection off", annotations: map[string]string{AnnotationOutlierDetection: "false"}, want: with(func(p *topology.Policy) { p.Outlier = nil })},
		{
			name: "outlier detection invalid", annotations: map[string]string{AnnotationOutlierDetection: "sometimes"}, want: def(),
			wantProblems: []Problem{invalid(`annotation fairway.io/outlier-detection: invalid value "sometimes" (want true or false); using default true`)},
		},
		{
			name: "outlier settings",
			annotations: map[string]string{
				AnnotationOutlierDetection: "true", AnnotationOutlierFailurePercentage: "80",
				AnnotationOutlierMaxEjectionPercent: "100", AnnotationOutlierBaseEjectionTime: "10s",
			},
			want: with(func(p *topology.Policy) {
				p.Outlier.FailurePercentageThreshold = 80
				p.Outlier.MaxEjectionPercent = 100
				p.Outlier.BaseEjectionTime = 10 * time.Second
			}),
		},
		{
			name: "outlier settings invalid",
			annotations: map[string]string{
				AnnotationOutlierFailurePercentage: "-1", AnnotationOutlierMaxEjectionPercent: "101", AnnotationOutlierBaseEjectionTime: "0",
			},
			want: def(),
			wantProblems: []Problem{
				invalid(`annotation fairway.io/outlier-failure-percentage: invalid value "-1" (want an integer in 0-100); using default 50`),
				invalid(`annotation fairway.io/outlier-max-ejection-percent: invalid value "101" (want an integer in 0-100); using default 20`),
				invalid(`annotation fairway.io/outlier-base-ejection-time: invalid value "0" (want a Go duration > 0, e.g. 30s); using default 30s`),
			},
		},
		{
			name:        "strategy shorthand",
			annotations: map[string]string{AnnotationStrategy: "zone_affinity, slow_start,outlier,p2c"},
			want: with(func(p *topology.Policy) {
				p.Strategy = `[{"zone_affinity":{}},{"slow_start":{}},{"outlier":{}},{"p2c":{}}]`
			}),
		},
		{name: "strategy single name", annotations: map[string]string{AnnotationStrategy: "round_robin"}, want: with(func(p *topology.Policy) { p.Strategy = `[{"round_robin":{}}]` })},
		{
			name:        "strategy JSON is compacted, order and configs kept",
			annotations: map[string]string{AnnotationStrategy: `[ {"zone_affinity": {"spill_margin": 0.2}}, {"slow_start": {"window": "30s"}},` + "\n" + ` {"p2c": {}} ]`},
			want: with(func(p *topology.Policy) {
				p.Strategy = `[{"zone_affinity":{"spill_margin":0.2}},{"slow_start":{"window":"30s"}},{"p2c":{}}]`
			}),
		},
		{
			name:        "strategy JSON null config stands for {}",
			annotations: map[string]string{AnnotationStrategy: `[{"outlier": null}, {"p2c": {}}]`},
			want:        with(func(p *topology.Policy) { p.Strategy = `[{"outlier":{}},{"p2c":{}}]` }),
		},
		{
			name: "strategy JSON element with two keys", annotations: map[string]string{AnnotationStrategy: `[{"p2c":{},"outlier":{}}]`}, want: def(),
			wantProblems: []Problem{invalid(`annotation fairway.io/strategy: invalid value "[{\"p2c\":{},\"outlier\":{}}]" (fairway/wire: strategy chain element 0 has 2 keys, want exactly one strategy name); using default "" (the client's default composition)`)},
		},
		{
			name: "strategy JSON name not snake_case", annotations: map[string]string{AnnotationStrategy: `[{"ZoneAffinity":{}}]`}, want: def(),
			wantProblems: []Problem{invalid(`annotation fairway.io/strategy: invalid value "[{\"ZoneAffinity\":{}}]" (fairway/wire: strategy name "ZoneAffinity" is not snake_case); using default "" (the client's default composition)`)},
		},
		{
			name: "strategy JSON config not an object", annotations: map[string]string{AnnotationStrategy: `[{"p2c":3}]`}, want: def(),
			wantProblems: []Problem{invalid(`annotation fairway.io/strategy: invalid value "[{\"p2c\":3}]" (fairway/wire: config of strategy "p2c" is not a JSON object); using default "" (the client's default composition)`)},
		},
		{
			name: "strategy JSON empty", annotations: map[string]string{AnnotationStrategy: `[]`}, want: def(),
			wantProblems: []Problem{invalid(`annotation fairway.io/strategy: invalid value "[]" (empty strategy chain); using default "" (the client's default composition)`)},
		},
		{
			name: "strategy JSON broken", annotations: map[string]string{AnnotationStrategy: `[{"p2c":{}}`}, want: def(),
			wantProblems: []Problem{invalid(`annotation fairway.io/strategy: invalid value "[{\"p2c\":{}}" (fairway/wire: strategy chain is not a JSON array of single-key objects: unexpected end of JSON input); using default "" (the client's default composition)`)},
		},
		{
			name: "strategy shorthand with an empty name", annotations: map[string]string{AnnotationStrategy: "p2c,,outlier"}, want: def(),
			wantProblems: []Problem{invalid(`annotation fairway.io/strategy: invalid value "p2c,,outlier" (strategy name "" is not snake_case); using default "" (the client's default composition)`)},
		},
		{
			name: "strategy shorthand with a bad name", annotations: map[string]string{AnnotationStrategy: "p2c;outlier"}, want: def(),
			wantProblems: []Problem{invalid(`annotation fairway.io/strategy: invalid value "p2c;outlier" (strategy name "p2c;outlier" is not snake_case); using default "" (the client's default composition)`)},
		},
		{
			name: "strategy JSON object instead of array", annotations: map[string]string{AnnotationStrategy: `{"p2c":{}}`}, want: def(),
			wantProblems: []Problem{invalid(`annotation fairway.io/strategy: invalid value "{\"p2c\":{}}" (a JSON object, want an array of single-key objects); using default "" (the client's default composition)`)},
		},
		{
			name: "several invalid annotations are each reported, the valid ones used",
			annotations: map[string]string{
				AnnotationLBPolicy: "fastest", AnnotationChoiceCount: "3", AnnotationOutlierDetection: "no",
			},
			want: with(func(p *topology.Policy) { p.ChoiceCount = 3 }),
			wantProblems: []Problem{
				invalid(`annotation fairway.io/lb-policy: invalid value "fastest" (want least_request, round_robin, random, weighted_round_robin or ring_hash); using default least_request`),
				invalid(`annotation fairway.io/outlier-detection: invalid value "no" (want true or false); using default true`),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, problems := Policy(tt.annotations)
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("Policy() (-got +want):\n%s", diff)
			}
			if diff := cmp.Diff(problems, tt.wantProblems); diff != "" {
				t.Errorf("Policy() problems (-got +want):\n%s", diff)
			}
		})
	}
}
