package strategy

import (
	"testing"
	"unsafe"
)

// The pick path's state must stay one cache line per endpoint (see
// Endpoint): a field added to Endpoint rather than EndpointState fails here.
func TestEndpointIsOneCacheLine(t *testing.T) {
	if got := unsafe.Sizeof(Endpoint{}); got != 64 {
		t.Errorf("unsafe.Sizeof(Endpoint{}) = %d, want 64 (one cache line; move cold fields to EndpointState)", got)
	}
}
