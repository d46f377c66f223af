package strategy_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fairway-lb/fairway/client/strategy"
	_ "github.com/fairway-lb/fairway/client/strategy/strategytest" // registers the built-ins
)

func TestParseChain_Shapes(t *testing.T) {
	for _, tc := range []struct {
		raw       string
		wantNames []string
		wantErr   string
	}{
		{raw: ``, wantNames: strategy.DefaultChain},
		{raw: `[]`, wantNames: strategy.DefaultChain},
		{raw: `[{"shard":{"label":"tenant"}},{"weighted":{}}]`, wantNames: []string{"shard", "weighted"}},
		{raw: `{"p2c":{}}`, wantErr: "fairway/strategy: chain must be a JSON array of single-key objects: json: cannot unmarshal object into Go value of type []map[string]json.RawMessage"},
		{raw: `[{"p2c":{},"outlier":{}}]`, wantErr: "fairway/strategy: chain element 0 has 2 keys, want one strategy name"},
		{raw: `[{"nope":{}}]`, wantErr: `fairway/strategy: unknown strategy "nope" (registered: [outlier p2c round_robin shard slow_start weighted zone_affinity])`},
		{raw: `[{"p2c":{}},{"outlier":{}}]`, wantErr: `fairway/strategy: "p2c" chooses and must be last in the chain`},
		{raw: `[{"outlier":{}}]`, wantErr: `fairway/strategy: "outlier" wraps another strategy and cannot be last in the chain`},
		{raw: `[{"slow_start":{"window":"-1s"}},{"p2c":{}}]`, wantErr: "fairway/slow_start: window -1s must not be negative"},
	} {
		c, err := strategy.ParseChain([]byte(tc.raw))
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("ParseChain(%s) error = %v, want %q", tc.raw, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("ParseChain(%s): %v", tc.raw, err)
		}
		var names []string
		for _, l := range c.Links {
			names = append(names, l.Builder.Name())
		}
		if diff := cmp.Diff(names, tc.wantNames); diff != "" {
			t.Errorf("ParseChain(%s) names (-got +want):\n%s", tc.raw, diff)
		}
	}
}

func TestParseChain_CanonicalRaw(t *testing.T) {
	a, _ := strategy.ParseChain([]byte(`[ {"p2c": { "latency_aware": true } } ]`))
	b, _ := strategy.ParseChain([]byte(`[{"p2c":{"latency_aware":true}}]`))
	if a.Raw != b.Raw {
		t.Errorf("Raw differs for equal chains: %q vs %q", a.Raw, b.Raw)
	}
}
