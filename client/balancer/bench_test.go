package balancer_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	orcapb "github.com/cncf/xds/go/xds/data/orca/v3"
	grpcbalancer "google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/leastrequest"
	"google.golang.org/grpc/balancer/roundrobin"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/fairway-lb/fairway/client/balancer"
	"github.com/fairway-lb/fairway/client/endpointattr"
	"github.com/fairway-lb/fairway/client/strategy/shard"
	"github.com/fairway-lb/fairway/wire"
)

// benchCC is a minimal balancer.ClientConn for benchmarks: it hands out fake
// SubConns that become READY, and captures the last picker. Callbacks are
// queued and run by drain, outside the balancer's own calls.
type benchCC struct {
	grpcbalancer.ClientConn // embedded as grpc-go requires; only the methods below are called

	mu     sync.Mutex
	queue  []func()
	picker grpcbalancer.Picker
	state  connectivity.State
}

type benchSC struct {
	grpcbalancer.SubConn
	cc       *benchCC
	listener func(grpcbalancer.SubConnState)
}

func (cc *benchCC) enqueue(f func()) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.queue = append(cc.queue, f)
}

func (cc *benchCC) drain() {
	for {
		cc.mu.Lock()
		q := cc.queue
		cc.queue = nil
		cc.mu.Unlock()
		if len(q) == 0 {
			return
		}
		for _, f := range q {
			f()
		}
	}
}

func (cc *benchCC) NewSubConn(_ []resolver.Address, o grpcbalancer.NewSubConnOptions) (grpcbalancer.SubConn, error) {
	return &benchSC{cc: cc, listener: o.StateListener}, nil
}

func (cc *benchCC) UpdateState(s grpcbalancer.State) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.picker, cc.state = s.Picker, s.ConnectivityState
}

func (cc *benchCC) ResolveNow(resolver.ResolveNowOptions) {}
func (cc *benchCC) Target() string                        { return "bench" }

func (sc *benchSC) Connect() {
	sc.cc.enqueue(func() {
		sc.listener(grpcbalancer.SubConnState{ConnectivityState: connectivity.Connecting})
		sc.listener(grpcbalancer.SubConnState{ConnectivityState: connectivity.Ready})
	})
}
func (sc *benchSC) Shutdown() {}
func (sc *benchSC) RegisterHealthListener(l func(grpcbalancer.SubConnState)) {
	sc.cc.enqueue(func() { l(grpcbalancer.SubConnState{ConnectivityState: connectivity.Ready}) })
}
func (sc *benchSC) UpdateAddresses([]resolver.Address) {}
func (sc *benchSC) GetOrBuildProducer(pb grpcbalancer.ProducerBuilder) (grpcbalancer.Producer, func()) {
	return pb.Build(nil) // no transport: probes end at once
}

// benchPicker builds the named balancer over n endpoints in three zones
// (the local zone "a" holds a third) and returns its READY picker.
func benchPicker(b *testing.B, name, lbConfig string, n int) grpcbalancer.Picker {
	b.Helper()
	bb := grpcbalancer.Get(name)
	if bb == nil {
		b.Fatalf("balancer %q not registered", name)
	}
	var cfg serviceconfig.LoadBalancingConfig
	if p, ok := bb.(grpcbalancer.ConfigParser); ok {
		c, err := p.ParseConfig([]byte(lbConfig))
		if err != nil {
			b.Fatal(err)
		}
		cfg = c
	}
	cc := &benchCC{}
	bal := bb.Build(cc, grpcbalancer.BuildOptions{})
	b.Cleanup(bal.Close)
	s := resolver.State{Attributes: endpointattr.SetLocalZone(nil, "a")}
	for i := range n {
		ep := resolver.Endpoint{Addresses: []resolver.Address{{Addr: fmt.Sprintf("10.1.%d.%d:8080", i/250, i%250+1)}}}
		s.Endpoints = append(s.Endpoints, endpointattr.Set(ep, endpointattr.Info{
			Zone:   string(rune('a' + i%3)),
			Weight: uint32(1 + i%4),
			Labels: map[string]string{"shard": fmt.Sprint(i % 8)},
		}))
	}
	if err := bal.UpdateClientConnState(grpcbalancer.ClientConnState{ResolverState: s, BalancerConfig: cfg}); err != nil {
		b.Fatal(err)
	}
	cc.drain()
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.state != connectivity.Ready {
		b.Fatalf("%s: state %v, want READY", name, cc.state)
	}
	return cc.picker
}

func pickOnce(b *testing.B, p grpcbalancer.Picker, info grpcbalancer.PickInfo, di grpcbalancer.DoneInfo) {
	r, err := p.Pick(info)
	if err != nil {
		b.Fatal(err)
	}
	if r.Done != nil {
		r.Done(di)
	}
}

// orcaDone is the DoneInfo of a call whose trailer carried an ORCA load
// report, as grpc-go parses it.
var orcaDone = grpcbalancer.DoneInfo{ServerLoad: &orcapb.OrcaLoadReport{NamedMetrics: map[string]float64{wire.RIFMetric: 3}}}

// BenchmarkPick measures one pick plus its Done, for each strategy, the
// default composition, and grpc-go's round_robin and least_request pickers
// built the same way.
func BenchmarkPick(b *testing.B) {
	type policy struct {
		name, balancer, config string
		ctx                    context.Context
		done                   grpcbalancer.DoneInfo
	}
	bg := context.Background()
	policies := []policy{
		{"grpc_round_robin", roundrobin.Name, "", bg, grpcbalancer.DoneInfo{}},
		{"grpc_least_request", leastrequest.Name, `{"choiceCount":2}`, bg, grpcbalancer.DoneInfo{}},
		{"default", balancer.Name, `{}`, bg, grpcbalancer.DoneInfo{}},
		{"p2c", balancer.Name, `{"strategy":[{"p2c":{}}]}`, bg, grpcbalancer.DoneInfo{}},
		{"p2c_latency", balancer.Name, `{"strategy":[{"p2c":{"latency_aware":true}}]}`, bg, grpcbalancer.DoneInfo{}},
		{"round_robin", balancer.Name, `{"strategy":[{"round_robin":{}}]}`, bg, grpcbalancer.DoneInfo{}},
		{"weighted", balancer.Name, `{"strategy":[{"weighted":{}}]}`, bg, grpcbalancer.DoneInfo{}},
		{"zone_affinity", balancer.Name, `{"strategy":[{"zone_affinity":{}},{"p2c":{}}]}`, bg, grpcbalancer.DoneInfo{}},
		{"slow_start", balancer.Name, `{"strategy":[{"slow_start":{}},{"p2c":{}}]}`, bg, grpcbalancer.DoneInfo{}},
		{"outlier", balancer.Name, `{"strategy":[{"outlier":{}},{"p2c":{}}]}`, bg, grpcbalancer.DoneInfo{}},
		{"shard_ctx", balancer.Name, `{"strategy":[{"shard":{}},{"p2c":{}}]}`, shard.NewContext(bg, "3"), grpcbalancer.DoneInfo{}},
		{"shard_md", balancer.Name, `{"strategy":[{"shard":{}},{"p2c":{}}]}`, metadata.AppendToOutgoingContext(bg, "shard", "3"), grpcbalancer.DoneInfo{}},
		// Every call's trailer carries a load report, as from ORCA backends
		// (no out-of-band streams: the fake SubConns have no transport).
		{"load_aware", balancer.Name, `{"strategy":[{"load_aware":{"oob_interval":0}}]}`, bg, orcaDone},
		{"load_aware_noreport", balancer.Name, `{"strategy":[{"load_aware":{"oob_interval":0,"probe_rate":0}}]}`, bg, grpcbalancer.DoneInfo{}},
		{"default_load_aware", balancer.Name, `{"strategy":[{"zone_affinity":{}},{"slow_start":{}},{"outlier":{}},{"load_aware":{"oob_interval":0}}]}`, bg, orcaDone},
	}
	for _, pol := range policies {
		for _, n := range []int{10, 100, 1000} {
			b.Run(fmt.Sprintf("%s/n=%d/serial", pol.name, n), func(b *testing.B) {
				p := benchPicker(b, pol.balancer, pol.config, n)
				info := grpcbalancer.PickInfo{FullMethodName: "/bench/Pick", Ctx: pol.ctx}
				b.ReportAllocs()
				for b.Loop() {
					pickOnce(b, p, info, pol.done)
				}
			})
			b.Run(fmt.Sprintf("%s/n=%d/parallel", pol.name, n), func(b *testing.B) {
				p := benchPicker(b, pol.balancer, pol.config, n)
				info := grpcbalancer.PickInfo{FullMethodName: "/bench/Pick", Ctx: pol.ctx}
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						pickOnce(b, p, info, pol.done)
					}
				})
			})
		}
	}
}
