package strategy_test

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"

	"github.com/fairway-lb/fairway/client/strategy"
	_ "github.com/fairway-lb/fairway/client/strategy/strategytest" // registers the built-ins
	"github.com/fairway-lb/fairway/wire"
)

// FuzzParseChain feeds arbitrary bytes to both parsers of a strategy chain:
// wire.ParseChain (the shape, as the control plane and the client's decoder
// check it) and strategy.ParseChain (the client's strategies). Neither
// panics; a chain wire.ParseChain accepts reads back from wire.FormatChain
// as the same links, and FormatChain is a fixed point; a chain
// strategy.ParseChain accepts also has the shape wire.ParseChain accepts.
func FuzzParseChain(f *testing.F) {
	for _, seed := range []string{
		``, `null`, `[]`, `{}`, `[{"p2c":{}}]`, `[{"p2c":null}]`,
		`[{"zone_affinity":{}},{"slow_start":{"window":"30s"}},{"outlier":{"max_ejection_percent":50}},{"p2c":{}}]`,
		`[{"shard":{"label":"tenant"}},{"weighted":{}}]`,
		`[{"round_robin":{}}]`, `[{"p2c":{},"outlier":{}}]`, `[{"Bad":{}}]`, `[{"p2c":[]}]`,
		`[ {"p2c" : { "a" : [1, 2.5e3, "x\u00e9"] } } ]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		links, err := wire.ParseChain(raw)
		if err == nil {
			canon := wire.FormatChain(links)
			again, err := wire.ParseChain([]byte(canon))
			if err != nil {
				t.Fatalf("FormatChain(ParseChain(%q)) = %q does not parse: %v", raw, canon, err)
			}
			if !slices.EqualFunc(links, again, func(a, b wire.Link) bool {
				return a.Name == b.Name && bytes.Equal(a.Config, b.Config)
			}) {
				t.Fatalf("links of %q changed through FormatChain: %v, then %v", raw, links, again)
			}
			if c2 := wire.FormatChain(again); c2 != canon {
				t.Fatalf("FormatChain is not a fixed point: %q, then %q", canon, c2)
			}
		}
		c, err := strategy.ParseChain(json.RawMessage(raw))
		if err != nil || len(bytes.TrimSpace(raw)) == 0 || string(raw) == "null" {
			return
		}
		if c == nil {
			t.Fatalf("strategy.ParseChain(%q) = nil, nil", raw)
		}
		if _, err := wire.ParseChain(raw); err != nil {
			t.Fatalf("strategy.ParseChain accepts %q, wire.ParseChain does not: %v", raw, err)
		}
	})
}
