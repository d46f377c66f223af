package strategy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
)

// Helpers for strategies' ParseConfig.

// Duration is a time.Duration that unmarshals from a Go duration string
// ("30s") or a number of seconds.
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("duration must be a string such as \"30s\" or a number of seconds")
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// DecodeConfig unmarshals raw (nil = keep defaults) into cfg, rejecting
// unknown fields, and prefixes errors with "fairway/<name>: ".
func DecodeConfig(name string, raw json.RawMessage, cfg any) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return fmt.Errorf("fairway/%s: invalid config: %w", name, err)
	}
	return nil
}

// CodeMask is a set of gRPC codes, bit 1<<code.
type CodeMask uint32

// Has reports whether c is in m.
func (m CodeMask) Has(c codes.Code) bool { return uint32(c) < 32 && m&(1<<uint32(c)) != 0 }

// MaskOf returns the set of cs.
func MaskOf(cs ...codes.Code) CodeMask {
	var m CodeMask
	for _, c := range cs {
		m |= 1 << uint32(c)
	}
	return m
}

// ParseCodes parses gRPC code names ("UNAVAILABLE", "unavailable", ...).
func ParseCodes(names []string) (CodeMask, error) {
	var m CodeMask
	for _, n := range names {
		var c codes.Code
		if err := c.UnmarshalJSON([]byte(fmt.Sprintf("%q", upper(n)))); err != nil {
			return 0, fmt.Errorf("unknown gRPC code %q", n)
		}
		m |= MaskOf(c)
	}
	return m, nil
}

// upper upper-cases ASCII letters only.
func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}
