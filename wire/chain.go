package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
)

// A strategy chain is a JSON array of single-key objects, outermost first:
// each key is a strategy's snake_case name and its value the strategy's
// config, a JSON object (null stands for {}):
//
//	[{"zone_affinity": {}}, {"outlier": {"max_ejection_percent": 50}}, {"p2c": {}}]
//
// This package checks the shape only; which names exist, where each may
// stand and what their configs hold are the client's strategies' to check
// (client/strategy.ParseChain).

// Link is one element of a strategy chain.
type Link struct {
	Name   string
	Config json.RawMessage // a compact JSON object
}

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// ValidName reports whether name is a valid strategy name (snake_case).
func ValidName(name string) bool { return snakeCase.MatchString(name) }

// ParseChain checks the shape of a strategy chain and returns its links. An
// empty array gives no links and no error: callers decide what that means.
func ParseChain(raw []byte) ([]Link, error) {
	var elems []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return nil, fmt.Errorf("fairway/wire: strategy chain is not a JSON array of single-key objects: %v", err)
	}
	links := make([]Link, 0, len(elems))
	for i, elem := range elems {
		if len(elem) != 1 {
			return nil, fmt.Errorf("fairway/wire: strategy chain element %d has %d keys, want exactly one strategy name", i, len(elem))
		}
		for name, cfg := range elem {
			if !ValidName(name) {
				return nil, fmt.Errorf("fairway/wire: strategy name %q is not snake_case", name)
			}
			c, err := compactObject(cfg)
			if err != nil {
				return nil, fmt.Errorf("fairway/wire: config of strategy %q is not a JSON object", name)
			}
			links = append(links, Link{Name: name, Config: c})
		}
	}
	return links, nil
}

func compactObject(cfg json.RawMessage) (json.RawMessage, error) {
	if bytes.Equal(bytes.TrimSpace(cfg), []byte("null")) {
		return json.RawMessage("{}"), nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(cfg, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("not a JSON object")
	}
	var b bytes.Buffer
	if err := json.Compact(&b, cfg); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// FormatChain returns links as a compact JSON chain, the canonical form
// that ParseChain reads back.
func FormatChain(links []Link) string {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, l := range links {
		if i > 0 {
			b.WriteByte(',')
		}
		name, _ := json.Marshal(l.Name)
		b.WriteByte('{')
		b.Write(name)
		b.WriteByte(':')
		if len(l.Config) == 0 {
			b.WriteString("{}")
		} else if err := json.Compact(&b, l.Config); err != nil {
			b.WriteString("{}")
		}
		b.WriteByte('}')
	}
	b.WriteByte(']')
	return b.String()
}
