package strategy

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"

	"k8s.io/utils/clock"

	"github.com/fairway-lb/fairway/wire"
)

// Builder makes a strategy from its config. Registered by name from the
// strategy package's init function.
type Builder interface {
	// Name is the snake_case name used in chains.
	Name() string
	// Position says whether the strategy wraps another or chooses.
	Position() Position
	// ParseConfig parses and validates the strategy's JSON config (nil or
	// "{}" means defaults) into the strategy's typed config. Errors read
	// "fairway/<name>: ...".
	ParseConfig(raw json.RawMessage) (any, error)
	// Build makes the strategy with a config returned by ParseConfig. inner
	// is nil for terminals.
	Build(cfg any, inner Strategy, opts BuildOptions) Strategy
}

var (
	regMu    sync.RWMutex
	registry = map[string]Builder{}
)

// Register makes b available by b.Name(). Call it from an init function; a
// later registration under the same name replaces the earlier one.
func Register(b Builder) {
	regMu.Lock()
	defer regMu.Unlock()
	registry[b.Name()] = b
}

// Get returns the builder registered under name.
func Get(name string) (Builder, bool) {
	regMu.RLock()
	defer regMu.RUnlock()
	b, ok := registry[name]
	return b, ok
}

// Names returns the registered names, sorted.
func Names() []string {
	regMu.RLock()
	defer regMu.RUnlock()
	out := make([]string, 0, len(registry))
	for n := range registry {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// DefaultChain is the composition used when a service names none, with the
// configs of DefaultChainConfigs (defaults for the others). Its p2c is
// latency-aware: with many clients each sending a few requests per second,
// a client's own in-flight counts are nearly always 0 and tell the
// endpoints apart no better than chance, while its latency samples do.
var DefaultChain = []string{"zone_affinity", "slow_start", "outlier", "p2c"}

// DefaultChainConfigs are the non-default configs of DefaultChain's links.
var DefaultChainConfigs = map[string]json.RawMessage{"p2c": json.RawMessage(`{"latency_aware":true}`)}

// Link is one parsed element of a chain.
type Link struct {
	Builder Builder
	Config  any
}

// Chain is a parsed, validated strategy chain, outermost first. Immutable.
type Chain struct {
	Links []Link
	// Raw is the chain in canonical JSON, for comparing configs.
	Raw string
	// Needs are what the chain's strategies ask of the Pool (see
	// NeedsBuilder), computed once by ParseChain.
	Needs Needs
}

// ParseChain parses a JSON chain: wire.ParseChain checks its shape, then
// every name must be registered, terminals last and wrappers not, and every
// config valid. Empty input, JSON null or an empty array selects
// DefaultChain with default configs.
func ParseChain(raw json.RawMessage) (*Chain, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return DefaultChainConfig()
	}
	links, err := wire.ParseChain(raw)
	if err != nil {
		return nil, err
	}
	if len(links) == 0 {
		return DefaultChainConfig()
	}
	return newChain(links)
}

// DefaultChainConfig returns DefaultChain with default configs.
func DefaultChainConfig() (*Chain, error) {
	links := make([]wire.Link, 0, len(DefaultChain))
	for _, name := range DefaultChain {
		links = append(links, wire.Link{Name: name, Config: DefaultChainConfigs[name]})
	}
	return newChain(links)
}

func newChain(links []wire.Link) (*Chain, error) {
	c := &Chain{Raw: wire.FormatChain(links)}
	for i, l := range links {
		if err := c.add(l.Name, l.Config, i == len(links)-1); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *Chain) add(name string, cfg json.RawMessage, last bool) error {
	b, ok := Get(name)
	if !ok {
		return fmt.Errorf("fairway/strategy: unknown strategy %q (registered: %v)", name, Names())
	}
	switch {
	case b.Position() == Terminal && !last:
		return fmt.Errorf("fairway/strategy: %q chooses and must be last in the chain", name)
	case b.Position() == Wrapper && last:
		return fmt.Errorf("fairway/strategy: %q wraps another strategy and cannot be last in the chain", name)
	}
	pc, err := b.ParseConfig(cfg)
	if err != nil {
		return err
	}
	if nb, ok := b.(NeedsBuilder); ok {
		n := nb.Needs(pc)
		if n.LatencyAlpha > 0 {
			c.Needs.LatencyAlpha, c.Needs.FailurePenalty = n.LatencyAlpha, n.FailurePenalty
		}
		if n.OOBInterval > 0 {
			c.Needs.OOBInterval = n.OOBInterval
		}
	}
	c.Links = append(c.Links, Link{Builder: b, Config: pc})
	return nil
}

// Build makes the chain's strategies, innermost first, and returns the
// outermost. It fills defaults into opts (Clock, Rand, Rand32, Gauges) and
// returns the effective options.
func (c *Chain) Build(opts BuildOptions) (Strategy, BuildOptions) {
	if opts.Rand == nil {
		opts.Rand = FastRand
		if opts.Rand32 == nil {
			opts.Rand32 = FastRand32
		}
	}
	if opts.Rand32 == nil {
		r := opts.Rand
		opts.Rand32 = func() uint32 { return uint32(r()) }
	}
	if opts.Gauges == nil {
		opts.Gauges = &Gauges{}
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	var s Strategy
	for i := len(c.Links) - 1; i >= 0; i-- {
		s = c.Links[i].Builder.Build(c.Links[i].Config, s, opts)
	}
	return s, opts
}
