package xdsserver

import (
	"fmt"
	"time"
)

// DefaultPushTimeout bounds a push without WithPushTimeout: a push running,
// or due (after its debounce window), for longer makes /healthz fail. The
// largest push measured (a 100,000-endpoint service) takes well under a
// second; a minute means the push goroutine is stuck, not slow.
const DefaultPushTimeout = time.Minute

// WithPushTimeout sets how long a push may run, or be due after its
// debounce window, before /healthz fails (default DefaultPushTimeout; zero
// or less: /healthz never fails for it). A push goroutine stuck for good
// (a cache that blocks, a deadlock) otherwise leaves a control plane that
// answers its probes and serves an old snapshot for ever; with the probe
// failing, Kubernetes restarts it.
func WithPushTimeout(d time.Duration) Option { return func(o *options) { o.pushTimeout = d } }

// pushStartedLocked records that the push goroutine took up the latest snapshot
// at now: nothing is due any more, a push runs. s.mu is held.
func (s *Server) pushStartedLocked(now time.Time) {
	s.dueSince, s.pushingSince = time.Time{}, now
}

// pushStuck returns why the push goroutine is behind: a push running for
// longer than the push timeout, or one due for longer than the debounce
// window and the push timeout. "" while it keeps up.
func (s *Server) pushStuck() string {
	if s.pushTimeout <= 0 {
		return ""
	}
	s.mu.Lock()
	due, pushing := s.dueSince, s.pushingSince
	s.mu.Unlock()
	now := s.clock.Now()
	if !pushing.IsZero() && now.Sub(pushing) > s.pushTimeout {
		return fmt.Sprintf("a push has been running for %v (limit %v)", now.Sub(pushing).Round(time.Millisecond), s.pushTimeout)
	}
	if !due.IsZero() && now.Sub(due) > s.debounce+s.pushTimeout {
		return fmt.Sprintf("a push has been due for %v and has not started (limit %v)", now.Sub(due).Round(time.Millisecond), s.debounce+s.pushTimeout)
	}
	return ""
}
