package shard_test

import (
	"context"
	"strconv"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy"
	"github.com/fairway-lb/fairway/client/strategy/shard"
	"github.com/fairway-lb/fairway/client/strategy/strategytest"
)

// sharded returns 6 endpoints: 0,1 carry shard=1; 2,3 shard=2; 4,5 no label.
func sharded() []*strategy.Endpoint {
	return strategytest.Endpoints(6, func(i int) endpointattr.Info {
		info := endpointattr.Info{Weight: 1}
		if i < 4 {
			info.Labels = map[string]string{"shard": strconv.Itoa(i/2 + 1)}
		}
		return info
	})
}

func TestShard_RoutesByMetadata(t *testing.T) {
	eps := sharded()
	s, _ := strategytest.Chain(t, `[{"shard":{}},{"p2c":{}}]`, nil, 1)
	p := s.Build(strategytest.Set(eps, "", strategytest.Start))
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want []int // endpoints allowed
	}{
		{"outgoing metadata", metadata.NewOutgoingContext(context.Background(), metadata.Pairs("shard", "1")), []int{0, 1}},
		{"appended metadata", metadata.AppendToOutgoingContext(context.Background(), "Shard", "2"), []int{2, 3}},
		{"context value", shard.NewContext(context.Background(), "2"), []int{2, 3}},
		{"no shard", context.Background(), []int{0, 1, 2, 3, 4, 5}},
	} {
		got := strategytest.Count(t, tc.ctx, p, 600)
		allowed := map[string]bool{}
		for _, i := range tc.want {
			allowed[eps[i].Addr] = true
			if got[eps[i].Addr] == 0 {
				t.Errorf("%s: %s got no picks", tc.name, eps[i].Addr)
			}
		}
		for a, n := range got {
			if !allowed[a] {
				t.Errorf("%s: %s got %d picks, want none", tc.name, a, n)
			}
		}
	}
}

func TestShard_UnknownShardErrorsUnlessFallback(t *testing.T) {
	eps := sharded()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "tenant", "9")
	s, _ := strategytest.Chain(t, `[{"shard":{"metadata_key":"Tenant"}},{"round_robin":{}}]`, nil, 1)
	_, err := s.Build(strategytest.Set(eps, "", strategytest.Start)).Pick(ctx)
	if status.Code(err) != codes.Unavailable || status.Convert(err).Message() != `fairway/shard: no endpoint carries shard "9" (label "shard")` {
		t.Errorf("Pick for unknown shard: %v, want UNAVAILABLE naming the shard", err)
	}
	s, _ = strategytest.Chain(t, `[{"shard":{"metadata_key":"tenant","fallback":true}},{"round_robin":{}}]`, nil, 1)
	if got := strategytest.Count(t, ctx, s.Build(strategytest.Set(eps, "", strategytest.Start)), 6); len(got) != 6 {
		t.Errorf("fallback picks went to %d endpoints, want all 6", len(got))
	}
}

func TestShard_ParseConfig(t *testing.T) {
	b, _ := strategy.Get(shard.Name)
	if _, err := b.ParseConfig([]byte(`{"label":""}`)); err == nil || err.Error() != "fairway/shard: label must not be empty" {
		t.Errorf("ParseConfig(empty label) error = %v", err)
	}
}
