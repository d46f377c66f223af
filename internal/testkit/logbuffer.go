package testkit

import (
	"bytes"
	"sync"
)

// LogBuffer is a goroutine-safe io.Writer for a test's logger (say
// slog.NewTextHandler(buf, nil)); String returns everything written so far.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
