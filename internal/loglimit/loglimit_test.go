package loglimit_test

import (
	"testing"
	"time"

	"github.com/fairway-lb/fairway/internal/loglimit"
)

func TestLogLimit_OnePerKeyEachInterval(t *testing.T) {
	l := loglimit.New[string](10 * time.Second)
	t0 := time.Unix(1000, 0)
	type step struct {
		key         string
		at          time.Duration
		wantOK      bool
		wantSkipped int
	}
	for i, s := range []step{
		{"a", 0, true, 0},
		{"a", time.Second, false, 0},
		{"b", time.Second, true, 0}, // keys are independent
		{"a", 9 * time.Second, false, 0},
		{"a", 10 * time.Second, true, 2},
		{"a", 11 * time.Second, false, 0},
		{"a", 30 * time.Second, true, 1},
		{"b", 30 * time.Second, true, 0},
	} {
		skipped, ok := l.Allow(s.key, t0.Add(s.at))
		if ok != s.wantOK || skipped != s.wantSkipped {
			t.Errorf("step %d: allow(%s, +%v) = %d, %v, want %d, %v", i, s.key, s.at, skipped, ok, s.wantSkipped, s.wantOK)
		}
	}
}
