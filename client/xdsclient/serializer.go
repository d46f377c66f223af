package xdsclient

import (
	"context"
	"sync"
)

// serializer runs watcher callbacks one at a time, in the order they were
// scheduled, on one goroutine owned by the Client.
type serializer struct {
	mu    sync.Mutex
	queue []task // guarded by mu
	wake  chan struct{}
}

type task struct {
	w *watcher
	f func()
}

func newSerializer() *serializer {
	return &serializer{wake: make(chan struct{}, 1)}
}

// schedule queues f for w. It never blocks.
func (s *serializer) schedule(w *watcher, f func()) {
	s.mu.Lock()
	s.queue = append(s.queue, task{w, f})
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run executes queued tasks until ctx is done; tasks still queued then are
// dropped.
func (s *serializer) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		for {
			s.mu.Lock()
			if len(s.queue) == 0 {
				s.mu.Unlock()
				break
			}
			t := s.queue[0]
			s.queue[0] = task{}
			s.queue = s.queue[1:]
			s.mu.Unlock()
			if ctx.Err() != nil {
				return
			}
			if !t.w.cancelled.Load() {
				t.f()
			}
		}
	}
}
