package xdsserver

import (
	"sync"
	"time"
)

// logLimit rate-limits log lines by key: one line per key each interval
// passes, the others are counted until the next one. It is how every log
// line the server may repeat at a client's pace is limited (refusals,
// large responses). Safe for concurrent use; it never blocks for long.
type logLimit[K comparable] struct {
	every time.Duration // immutable

	mu      sync.Mutex
	last    map[K]time.Time // guarded by mu: when a line of each key last passed
	skipped map[K]int       // guarded by mu: lines held back since, by key
}

func newLogLimit[K comparable](every time.Duration) *logLimit[K] {
	return &logLimit[K]{every: every, last: map[K]time.Time{}, skipped: map[K]int{}}
}

// allow reports whether a line of key at now passes, and if so how many
// of key were held back since the last that did.
func (l *logLimit[K]) allow(key K, now time.Time) (skipped int, ok bool) {
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
