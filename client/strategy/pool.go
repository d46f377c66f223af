package strategy

import (
	"context"
	"time"

	"google.golang.org/grpc/balancer"
	"k8s.io/utils/clock"

	"github.com/fairway-lb/fairway/client/endpointattr"
)

// Pool is the one owner of a channel's endpoints: it keeps them by address
// across membership updates, runs a chain over them (Build and Tick) and
// builds the pickers whose picks carry the endpoints' bookkeeping (pick
// counts, latency samples, outcomes). The balancer drives one Pool per
// gRPC channel and keeps only connections; the simulator of package bench
// drives one per simulated channel, so both run this code.
//
// A Pool is not safe for concurrent use: its owner calls its methods from
// one goroutine at a time (the balancer under its mutex, the simulator from
// its event loop). The pickers it builds, and the done functions they hand
// out, are safe for concurrent use, lock-free and allocation-free.
type Pool struct {
	opts BuildOptions // as given; Chain.Build fills the rest into chainOpts

	// Set by SetChain.
	chain     *Chain
	strat     Strategy
	chainOpts BuildOptions

	members     map[string]*member // by address
	order       []*member          // resolver order
	localZone   string
	callerZones map[string]float64 // read-only; shared with the sets
	seenFirst   bool
	scratch     Set // slices reused by Tick
	// coarse is the clock's Stamp at the last Tick or Build, which stamps
	// the endpoints' load reports (report.go).
	coarse coarseClock
}

// member is one endpoint and whether the owner has marked it connected.
type member struct {
	e         *Endpoint
	connected bool
}

// Member is one endpoint of a membership update.
type Member struct {
	Addr string
	Info endpointattr.Info
}

// NewPool returns a Pool whose chain will be built with opts (Clock
// required; see BuildOptions for the defaults of the others). It has no
// chain and no endpoints yet.
func NewPool(opts BuildOptions) *Pool {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	p := &Pool{opts: opts, members: map[string]*member{}}
	p.coarse.Store(int64(Stamp(opts.Clock.Now())))
	return p
}

// SetChain makes c the pool's chain and reports whether it changed. A chain
// with the same Raw as the current one keeps the built strategies and their
// state; another is built afresh, and every endpoint's latency measurement
// follows its Needs.
func (p *Pool) SetChain(c *Chain) bool {
	if p.chain != nil && p.chain.Raw == c.Raw {
		return false
	}
	p.chain = c
	p.strat, p.chainOpts = c.Build(p.opts)
	for _, m := range p.order {
		p.measure(m.e)
	}
	return true
}

// Chain returns the current chain; nil before SetChain.
func (p *Pool) Chain() *Chain { return p.chain }

// Gauges returns the live values of the current chain's strategies; nil
// before SetChain.
func (p *Pool) Gauges() *Gauges { return p.chainOpts.Gauges }

// measure applies the chain's latency needs to e.
func (p *Pool) measure(e *Endpoint) {
	if p.chain != nil {
		e.SetLatencyConfig(p.chainOpts.Clock, p.chain.Needs.LatencyAlpha, p.chain.Needs.FailurePenalty)
	}
}

// Update makes members, in resolver order, the pool's endpoints, with the
// caller's zone and the service's callers per zone (nil when unknown). A
// known address keeps its Endpoint, counters included, and takes the new
// Info; a new one gets an Endpoint that is Initial when this is the pool's
// first update, Added at Info.FirstSeen (the clock's now when zero), and
// not connected until SetConnected. An Info without weight gets weight 1;
// a repeated address counts once. Update returns the endpoints it created
// and those it removed, for the owner to open and close connections.
func (p *Pool) Update(members []Member, localZone string, callerZones map[string]float64) (added, removed []*Endpoint) {
	p.localZone, p.callerZones = localZone, callerZones
	initial := !p.seenFirst
	p.seenFirst = true
	now := p.opts.Clock.Now()
	seen := make(map[string]bool, len(members))
	p.order = p.order[:0]
	for _, mb := range members {
		if seen[mb.Addr] {
			continue
		}
		seen[mb.Addr] = true
		info := mb.Info
		if info.Weight == 0 {
			info.Weight = 1
		}
		if m, ok := p.members[mb.Addr]; ok {
			m.e.Info = info
			p.order = append(p.order, m)
			continue
		}
		e := p.newEndpoint(mb.Addr, info, now, initial)
		m := &member{e: e}
		p.members[mb.Addr] = m
		p.order = append(p.order, m)
		added = append(added, e)
	}
	for a, m := range p.members {
		if !seen[a] {
			delete(p.members, a)
			removed = append(removed, m.e)
		}
	}
	return added, removed
}

func (p *Pool) newEndpoint(addr string, info endpointattr.Info, now time.Time, initial bool) *Endpoint {
	added := info.FirstSeen
	if added.IsZero() {
		added = now
	}
	e := NewEndpoint(addr, info, added)
	e.Initial = initial
	e.Done, e.TimedDone = e.FinishDone, e.FinishTimed
	e.coarse = &p.coarse
	p.measure(e)
	return e
}

// Drop removes e at once, as if the last update had not listed it (an
// owner that cannot open its connection); a later update that lists its
// address creates a new Endpoint.
func (p *Pool) Drop(e *Endpoint) {
	if m := p.members[e.Addr]; m != nil && m.e == e {
		delete(p.members, e.Addr)
		for i, o := range p.order {
			if o == m {
				p.order = append(p.order[:i], p.order[i+1:]...)
				break
			}
		}
	}
}

// SetConnected records whether the owner's connection to e is usable (for
// the balancer: its SubConn is READY). Only connected endpoints whose
// Info.Health is Healthy are candidates.
func (p *Pool) SetConnected(e *Endpoint, connected bool) {
	if m := p.members[e.Addr]; m != nil && m.e == e {
		m.connected = connected
	}
}

// Endpoints returns the endpoints in resolver order, in a new slice.
func (p *Pool) Endpoints() []*Endpoint {
	out := make([]*Endpoint, len(p.order))
	for i, m := range p.order {
		out[i] = m.e
	}
	return out
}

// Tick arms the endpoints' latency samples when the chain measures latency,
// runs the chain's Tick over the current set at the clock's now, and
// reports whether the picker must be rebuilt (Build). Without a chain it
// does nothing.
func (p *Pool) Tick() bool {
	if p.strat == nil {
		return false
	}
	now := p.chainOpts.Clock.Now()
	p.coarse.Store(int64(Stamp(now)))
	// Tick must not retain the set, so its slices are reused; Build gets
	// fresh ones, which pickers may keep.
	set := p.fill(now, p.scratch.All[:0], p.scratch.Cands[:0])
	p.scratch = set
	if p.chain.Needs.LatencyAlpha > 0 {
		for _, e := range set.All {
			e.ArmSample(now)
		}
	}
	return p.strat.Tick(set)
}

// Build returns a picker over the current set, and the set: All in
// resolver order, Cands the connected, healthy endpoints with their
// Info.Weight. With no chain or no candidate it builds nothing (the
// strategies' Build is not called) and returns a picker that answers
// ErrNoEndpoint, and ok false.
func (p *Pool) Build() (pp PoolPicker, set Set, ok bool) {
	now := p.opts.Clock.Now()
	p.coarse.Store(int64(Stamp(now)))
	set = p.fill(now, make([]*Endpoint, 0, len(p.order)), nil)
	if p.strat == nil || len(set.Cands) == 0 {
		return PoolPicker{p: NoEndpoint}, set, false
	}
	return PoolPicker{p: p.strat.Build(set)}, set, true
}

// fill returns the current set at now, appending to all and cands.
func (p *Pool) fill(now time.Time, all []*Endpoint, cands []Candidate) Set {
	s := Set{LocalZone: p.localZone, CallerZones: p.callerZones, Now: now, All: all, Cands: cands}
	for _, m := range p.order {
		s.All = append(s.All, m.e)
		if m.connected && m.e.Info.Health == endpointattr.Healthy {
			s.Cands = append(s.Cands, Candidate{E: m.e, Weight: float64(m.e.Info.Weight)})
		}
	}
	return s
}

// PoolPicker is a picker a Pool built. Immutable; the zero value must not
// be used.
type PoolPicker struct{ p Picker }

// Pick chooses an endpoint for one request and returns it with the function
// to call, once, when the request ends: Done, or TimedDone for the one
// request per endpoint and tick whose latency is sampled (the only pick
// that reads the clock). Called from any number of goroutines at once; no
// lock, no allocation.
func (pp PoolPicker) Pick(ctx context.Context) (*Endpoint, func(balancer.DoneInfo), error) {
	e, err := pp.p.Pick(ctx)
	if err != nil {
		return nil, nil, err
	}
	e.Picked()
	if e.StartSample() {
		return e, e.TimedDone, nil
	}
	return e, e.Done, nil
}
