// Package shard routes each request to the endpoints whose label matches the
// request's shard, read from the request's outgoing metadata (key
// MetadataKey) or, cheaper, from a context value set with NewContext.
//
// Build groups candidates by label value and builds the inner strategy over
// each group. A request naming a shard no endpoint carries fails with
// UNAVAILABLE ("fairway/shard: no endpoint carries shard ...") unless
// Fallback is set, in which case it goes to any endpoint; a request naming
// no shard goes to any endpoint.
//
// Cost: reading the shard with NewContext is a context lookup and a map
// lookup, no allocation. Reading it from gRPC outgoing metadata uses
// metadata.ValueFromOutgoingContext, which copies the value slice: one small
// allocation per pick, paid only by chains that contain shard.
package shard

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fairway-lb/fairway/client/strategy"
)

// Name is the strategy's name in chains.
const Name = "shard"

// Config is shard's typed configuration.
type Config struct {
	// MetadataKey is the request metadata key naming the shard. Default "shard".
	MetadataKey string `json:"metadata_key"`
	// Label is the endpoint label to match. Default "shard".
	Label string `json:"label"`
	// Fallback sends requests for a shard nobody carries to any endpoint.
	Fallback bool `json:"fallback"`
}

type ctxKey struct{}

// NewContext returns ctx carrying shard for the shard strategy; it takes
// precedence over metadata and costs no allocation at pick time.
func NewContext(ctx context.Context, shard string) context.Context {
	return context.WithValue(ctx, ctxKey{}, shard)
}

func init() { strategy.Register(builder{}) }

type builder struct{}

func (builder) Name() string                { return Name }
func (builder) Position() strategy.Position { return strategy.Wrapper }

func (builder) ParseConfig(raw json.RawMessage) (any, error) {
	cfg := &Config{MetadataKey: "shard", Label: "shard"}
	if err := strategy.DecodeConfig(Name, raw, cfg); err != nil {
		return nil, err
	}
	cfg.MetadataKey = strings.ToLower(cfg.MetadataKey)
	switch {
	case cfg.MetadataKey == "":
		return nil, fmt.Errorf("fairway/shard: metadata_key must not be empty")
	case cfg.Label == "":
		return nil, fmt.Errorf("fairway/shard: label must not be empty")
	}
	return cfg, nil
}

func (builder) Build(cfg any, inner strategy.Strategy, _ strategy.BuildOptions) strategy.Strategy {
	return &shard{cfg: *cfg.(*Config), inner: inner}
}

type shard struct {
	cfg   Config
	inner strategy.Strategy
}

func (s *shard) Tick(set strategy.Set) bool { return s.inner.Tick(set) }

func (s *shard) Build(set strategy.Set) strategy.Picker {
	groups := map[string][]strategy.Candidate{}
	for _, c := range set.Cands {
		if v, ok := c.E.Info.Labels[s.cfg.Label]; ok {
			groups[v] = append(groups[v], c)
		}
	}
	p := &picker{cfg: s.cfg, shards: make(map[string]strategy.Picker, len(groups)), any: s.inner.Build(set)}
	for v, cs := range groups {
		gs := set
		gs.Cands = cs
		p.shards[v] = s.inner.Build(gs)
	}
	return p
}

// picker is immutable.
type picker struct {
	cfg    Config
	shards map[string]strategy.Picker
	any    strategy.Picker
}

func (p *picker) Pick(ctx context.Context) (*strategy.Endpoint, error) {
	v, ok := ctx.Value(ctxKey{}).(string)
	if !ok {
		vs := metadata.ValueFromOutgoingContext(ctx, p.cfg.MetadataKey)
		if len(vs) == 0 {
			return p.any.Pick(ctx)
		}
		v = vs[0]
	}
	if sp, ok := p.shards[v]; ok {
		return sp.Pick(ctx)
	}
	if p.cfg.Fallback {
		return p.any.Pick(ctx)
	}
	return nil, status.Errorf(codes.Unavailable, "fairway/shard: no endpoint carries shard %q (label %q)", v, p.cfg.Label)
}
