// Package loglimit rate-limits log lines that a client can cause at its own
// pace (refused streams, large responses, failed authentications).
package loglimit

import (
	"sync"
	"time"
)

// Limit rate-limits log lines by key: one line per key each interval
// passes, the others are counted until the next one. Keys must come from a
// small set the program chooses (reasons, levels), never from a client.
// Safe for concurrent use; it never blocks for long.
type Limit[K comparable] struct {
	every time.Duration // immutable

	mu      sync.Mutex
	last    map[K]time.Time // guarded by mu: when a line of each key last passed
	skipped map[K]int       // guarded by mu: lines held back since, by key
}

// New returns a Limit passing one line per key each every.
func New[K comparable](every time.Duration) *Limit[K] {
	return &Limit[K]{every: every, last: map[K]time.Time{}, skipped: map[K]int{}}
}

// Allow reports whether a line of key at now passes, and if so how many
// of key were held back since the last that did.
func (l *Limit[K]) Allow(key K, now time.Time) (skipped int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if last, seen := l.last[key]; seen && now.Sub(last) < l.every {
		l.skipped[key]++
		return 0, false
	}
	skipped = l.skipped[key]
	l.last[key] = now
	delete(l.skipped, key)
	return skipped, true
}
