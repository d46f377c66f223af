package xdsserver

import (
	"fmt"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// benchPushCases are the namespace views and subscribers per view and type
// BenchmarkServer_Push runs with.
var benchPushCases = []struct{ views, subscribers int }{{0, 0}, {0, 1}, {0, 11}, {10, 0}, {10, 1}}

// benchViews returns the caches of the all view and of n namespace views of
// s, made as a stream of each namespace makes them.
func benchViews(s *Server, n int) []map[string]*cachev3.LinearCache {
	out := []map[string]*cachev3.LinearCache{s.caches}
	for i := range n {
		out = append(out, s.views.acquire(true, fmt.Sprintf("ns-%d", i)).caches)
	}
	return out
}
