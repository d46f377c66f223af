package xdsserver

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	statuspb "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/fairway-lb/fairway/controlplane/topology"
)

// TestDiff_RouteFollowsTheHashPolicy: the RouteConfiguration carries
// ring_hash's header hash, so a policy change that adds, removes or moves it
// re-renders the route (the service is in added); other policy changes
// re-render the Cluster alone.
func TestDiff_RouteFollowsTheHashPolicy(t *testing.T) {
	snap := func(version uint64, lb topology.LBPolicy, header string) *topology.Snapshot {
		p := topology.DefaultPolicy()
		p.LB, p.HashHeader = lb, header
		svc := &topology.Service{Key: topology.ServiceKey{Namespace: "default", Name: "echo", Port: 8080}, Policy: p}
		return topology.NewSnapshot(version, time.Now(), []*topology.Service{svc})
	}
	for _, tc := range []struct {
		name      string
		from, to  *topology.Snapshot
		wantRoute bool
	}{
		{"least_request to ring_hash", snap(1, topology.LeastRequest, ""), snap(2, topology.RingHash, ""), true},
		{"ring_hash to round_robin", snap(1, topology.RingHash, ""), snap(2, topology.RoundRobin, ""), true},
		{"ring_hash header moved", snap(1, topology.RingHash, ""), snap(2, topology.RingHash, "x-tenant"), true},
		{"least_request to round_robin", snap(1, topology.LeastRequest, ""), snap(2, topology.RoundRobin, ""), false},
	} {
		ch := diff(tc.from, tc.to, nil)
		if len(ch.clusters) != 1 {
			t.Errorf("%s: %d Clusters to render, want 1", tc.name, len(ch.clusters))
		}
		if got := len(ch.added) == 1; got != tc.wantRoute {
			t.Errorf("%s: route re-rendered = %v, want %v", tc.name, got, tc.wantRoute)
		}
	}
}

func TestNACKError_CutToABound(t *testing.T) {
	long := strings.Repeat("é", maxNACKError) // 2 bytes a rune
	got := nackError(streamRequest{errorDetail: &statuspb.Status{Message: long}})
	if len(got) > maxNACKError+len("…") || !utf8.ValidString(got) || !strings.HasSuffix(got, "…") {
		t.Errorf("nackError of %d bytes = %d bytes (valid UTF-8 %v), want at most %d + an ellipsis", len(long), len(got), utf8.ValidString(got), maxNACKError)
	}
	if got := nackError(streamRequest{errorDetail: &statuspb.Status{Message: "short"}}); got != "short" {
		t.Errorf("nackError(short) = %q", got)
	}
}
