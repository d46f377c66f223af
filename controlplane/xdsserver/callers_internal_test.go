package xdsserver

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCallerZonesMoved_Threshold(t *testing.T) {
	half := map[string]int{"a": 500, "b": 500}
	tests := []struct {
		name      string
		published map[string]int
		cur       map[string]int
		want      bool
	}{
		{"same", half, map[string]int{"a": 500, "b": 500}, false},
		{"moved 0.019", half, map[string]int{"a": 519, "b": 481}, false},
		{"moved 0.02", half, map[string]int{"a": 520, "b": 480}, true},
		{"moved down 0.02", half, map[string]int{"a": 480, "b": 520}, true},
		{"zone appears", half, map[string]int{"a": 500, "b": 499, "c": 1}, true},
		{"zone replaced", half, map[string]int{"a": 500, "c": 500}, true},
		{"zone disappears", half, map[string]int{"a": 1000}, true},
		{"first callers", nil, map[string]int{"a": 1000}, true},
		{"last caller leaves", map[string]int{"a": 1000}, nil, true},
		{"none before and after", nil, nil, false},
	}
	for _, tt := range tests {
		if got := callerZonesMoved(tt.published, tt.cur); got != tt.want {
			t.Errorf("%s: callerZonesMoved(%v, %v) = %v, want %v", tt.name, tt.published, tt.cur, got, tt.want)
		}
	}
}

func TestPermille_Rounding(t *testing.T) {
	tests := []struct {
		counts map[string]int
		want   map[string]int
	}{
		{map[string]int{"a": 2, "b": 1}, map[string]int{"a": 667, "b": 333}},
		{map[string]int{"a": 1, "b": 1, "c": 1}, map[string]int{"a": 333, "b": 333, "c": 333}},
		{map[string]int{"a": 28, "b": 25}, map[string]int{"a": 528, "b": 472}},
		{map[string]int{"a": 1, "b": 2999}, map[string]int{"a": 0, "b": 1000}},
		{map[string]int{}, nil},
		{nil, nil},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(permille(tt.counts), tt.want); diff != "" {
			t.Errorf("permille(%v) (-got +want):\n%s", tt.counts, diff)
		}
	}
}
