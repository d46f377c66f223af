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
		{raw: `null`, wantNames: strategy.DefaultChain},
		{raw: `[{"p2c":null}]`, wantNames: []string{"p2c"}},
		{raw: `{"p2c":{}}`, wantErr: "fairway/wire: strategy chain is not a JSON array of single-key objects: json: cannot unmarshal object into Go value of type []map[string]json.RawMessage"},
		{raw: `[{"p2c":{},"outlier":{}}]`, wantErr: "fairway/wire: strategy chain element 0 has 2 keys, want exactly one strategy name"},
		{raw: `[{"p2c":5}]`, wantErr: `fairway/wire: config of strategy "p2c" is not a JSON object`},
		{raw: `[{"nope":{}}]`, wantErr: `fairway/strategy: unknown strategy "nope" (registered: [load_aware outlier p2c round_robin shard slow_start weighted zone_affinity])`},
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
	if a.Raw != b.Raw || a.Raw != `[{"p2c":{"latency_aware":true}}]` {
		t.Errorf("Raw = %q and %q, want both [{\"p2c\":{\"latency_aware\":true}}]", a.Raw, b.Raw)
	}
	d, _ := strategy.ParseChain(nil)
	if want := `[{"zone_affinity":{}},{"slow_start":{}},{"outlier":{}},{"p2c":{"latency_aware":true}}]`; d.Raw != want {
		t.Errorf("default chain Raw = %q, want %q", d.Raw, want)
	}
}
