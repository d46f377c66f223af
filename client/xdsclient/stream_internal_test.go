package xdsclient

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestStreamErrors_Classified: only gRPC's message-size refusal is "too
// large" (error line, no backoff reset); a server's own RESOURCE_EXHAUSTED
// (a stream or name limit) is not, and refusals no retry mends are told
// apart from transient failures.
func TestStreamErrors_Classified(t *testing.T) {
	for _, tc := range []struct {
		err              error
		tooLarge, refuse bool
		reason           string
	}{
		{status.Error(codes.ResourceExhausted, "grpc: received message larger than max (6000000 vs. 4194304)"), true, false, "resource_exhausted"},
		{status.Error(codes.ResourceExhausted, `fairway/xdsserver: node "n" has 100 streams open (limit 100)`), false, false, "resource_exhausted"},
		{status.Error(codes.Unauthenticated, "no token"), false, true, "unauthenticated"},
		{status.Error(codes.Unimplemented, "unknown service"), false, true, "unimplemented"},
		{status.Error(codes.Unavailable, "connection refused"), false, false, "unavailable"},
		{errNoResponse, false, false, reasonNoResponse},
		{errors.New("plain"), false, false, "unknown"},
	} {
		if got := tooLarge(tc.err); got != tc.tooLarge {
			t.Errorf("tooLarge(%v) = %v, want %v", tc.err, got, tc.tooLarge)
		}
		if got := refused(tc.err); got != tc.refuse {
			t.Errorf("refused(%v) = %v, want %v", tc.err, got, tc.refuse)
		}
		if got := streamErrorReason(tc.err); got != tc.reason {
			t.Errorf("streamErrorReason(%v) = %q, want %q", tc.err, got, tc.reason)
		}
	}
}
