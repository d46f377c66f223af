package testkit

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLogBuffer_ConcurrentWritesAllKept(t *testing.T) {
	var b LogBuffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { fmt.Fprintf(&b, "line %d\n", i) })
	}
	wg.Wait()
	if n := strings.Count(b.String(), "\n"); n != 8 {
		t.Errorf("%d lines, want 8:\n%s", n, b.String())
	}
}

func TestFreeAddr_NothingListens(t *testing.T) {
	addr := FreeAddr(t)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("dialing %s succeeded, want a refused connection", addr)
	}
}
