package xdsserver

import (
	"context"
	"fmt"
	"testing"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fairway-lb/fairway/internal/testkit"
)

// TestDeltaCount_SubscribeThenUnsubscribe: the size of a delta stream's
// set after a request, computed without changing the set.
func TestDeltaCount_SubscribeThenUnsubscribe(t *testing.T) {
	set := map[string]bool{"a": true, "b": true}
	for _, tc := range []struct {
		names, unsubscribe []string
		want               int
	}{
		{[]string{"c"}, nil, 3},
		{[]string{"a", "c", "c"}, nil, 3},
		{nil, []string{"a", "a", "z"}, 1},
		{[]string{"c"}, []string{"c"}, 2},
		{[]string{"c", "d"}, []string{"a", "d"}, 2},
	} {
		if got := deltaCount(set, tc.names, tc.unsubscribe); got != tc.want {
			t.Errorf("deltaCount(%v, +%v, -%v) = %d, want %d", set, tc.names, tc.unsubscribe, got, tc.want)
		}
	}
	if len(set) != 2 {
		t.Errorf("deltaCount changed the set: %v", set)
	}
}

// TestRequest_ACKRepeatingUnknownNamesPastTheCap: a SotW stream's ACK
// repeats its names; the unknown ones it could not remember are found again
// on each (counted for the closing log line), the others are counted once.
func TestRequest_ACKRepeatingUnknownNamesPastTheCap(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := newBenchServerT(t, reg)
	sid := streamID{protoSotW, 1}
	if err := s.streamOpened(context.Background(), sid); err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := range maxUnknownPerStream + 3 {
		names = append(names, fmt.Sprintf("nope-%d.default:80", i))
	}
	req := streamRequest{typeURL: resourcev3.ClusterType, names: names}
	for i := range 3 {
		req.version, req.nonce = fmt.Sprint(i), fmt.Sprint(i)
		if _, err := s.request(sid, req); err != nil {
			t.Fatal(err)
		}
	}
	s.streamsMu.Lock()
	after := s.streams[sid].unknownAfter
	s.streamsMu.Unlock()
	if after != 2*3 {
		t.Errorf("unknown names found after the first request = %d, want %d (3 past the cap, twice)", after, 2*3)
	}
	if got := testkit.MetricValue(t, reg, "fairway_xds_unknown_resource_requests_total"); got != maxUnknownPerStream {
		t.Errorf("fairway_xds_unknown_resource_requests_total = %v, want %d", got, maxUnknownPerStream)
	}
}
