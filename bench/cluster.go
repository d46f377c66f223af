package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/fairway-lb/fairway/bench/backend"
)

// cluster is one strategy's set of real pods on loopback addresses
// 127.77.X.Y, all on one port. The run calls start and stop from its
// goroutine and join and crash from per-event goroutines; watchers are called
// one at a time (see notify). Lock order: notifyMu before mu.
type cluster struct {
	pods []*backend.Backend
	ips  []string
	port int

	notifyMu sync.Mutex
	mu       sync.Mutex
	live     []bool                  // guarded by mu
	watchers []func(addrs []podAddr) // guarded by mu
}

// podAddr is a serving pod as the strategies' discovery sees it.
type podAddr struct {
	index  int
	addr   string // ip:port
	ip     string
	port   int
	zone   string
	weight uint32
}

// podIP is the loopback address of pod i.
func podIP(i int) string { return fmt.Sprintf("127.77.%d.%d", i/250, i%250+2) }

func newCluster(cfg Config, run time.Duration) *cluster {
	bucket := cfg.bucket()
	n := int(run/bucket) + 2
	c := &cluster{live: make([]bool, len(cfg.Pods))}
	slow := cfg.Antagonist.slowdowns(cfg.Seed, len(cfg.Pods), run)
	for i, p := range cfg.Pods {
		spec := backend.Spec{
			Index: i, IP: podIP(i), Zone: p.Zone, Capacity: p.Capacity,
			Median: cfg.Median, Sigma: cfg.Sigma,
			SlowFactor: p.SlowFactor, ErrorRate: p.ErrorRate,
			ColdFactor: p.ColdFactor, ColdFor: time.Duration(p.ColdFor * float64(run)),
		}
		if slow != nil {
			spec.Slowdowns = slow[i]
		}
		c.pods = append(c.pods, backend.New(spec, bucket, n))
		c.ips = append(c.ips, spec.IP)
	}
	return c
}

// start starts every pod that is there from the beginning, on a port free on
// all their addresses.
func (c *cluster) start(cfg Config) error {
	var err error
	for range 5 {
		var l net.Listener
		l, err = net.Listen("tcp", net.JoinHostPort(c.ips[0], "0"))
		if err != nil {
			return fmt.Errorf("fairway/bench: loopback address %s: %w", c.ips[0], err)
		}
		c.port = l.Addr().(*net.TCPAddr).Port
		l.Close()
		err = nil
		for i, p := range cfg.Pods {
			if p.JoinAt > 0 {
				continue
			}
			if err = c.pods[i].Start(c.port); err != nil {
				break
			}
			c.live[i] = true
		}
		if err == nil {
			return nil
		}
		c.stop()
		for i := range c.live {
			c.live[i] = false
		}
	}
	return err
}

func (c *cluster) addr(i int) string { return net.JoinHostPort(c.ips[i], strconv.Itoa(c.port)) }

// serving returns the live pods.
func (c *cluster) serving() []podAddr {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servingLocked()
}

// servingLocked needs c.mu.
func (c *cluster) servingLocked() []podAddr {
	var out []podAddr
	for i, ok := range c.live {
		if ok {
			s := c.pods[i].Spec()
			out = append(out, podAddr{index: i, addr: c.addr(i), ip: s.IP, port: c.port, zone: s.Zone, weight: uint32(max(s.Capacity, 1))})
		}
	}
	return out
}

// watch registers fn to hear of changes to the serving set.
func (c *cluster) watch(fn func([]podAddr)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watchers = append(c.watchers, fn)
}

// notify tells every watcher the serving set. Joins and crashes run on
// timers of their own, so notifyMu makes the calls one at a time, each with
// the set as it is then: the last call always carries the latest state and a
// topology.Sink sees versions that only grow.
func (c *cluster) notify() {
	c.notifyMu.Lock()
	defer c.notifyMu.Unlock()
	c.mu.Lock()
	live := c.servingLocked()
	ws := append([]func([]podAddr){}, c.watchers...)
	c.mu.Unlock()
	for _, w := range ws {
		w(live)
	}
}

// join starts pod i and announces it.
func (c *cluster) join(i int) error {
	if err := c.pods[i].Start(c.port); err != nil {
		return err
	}
	c.mu.Lock()
	c.live[i] = true
	c.mu.Unlock()
	c.notify()
	return nil
}

// crash kills pod i, then announces that it is gone (as Kubernetes would, a
// moment after the process died).
func (c *cluster) crash(i int) {
	c.pods[i].Stop()
	c.mu.Lock()
	c.live[i] = false
	c.mu.Unlock()
	c.notify()
}

func (c *cluster) stop() {
	var wg sync.WaitGroup
	for _, p := range c.pods {
		wg.Go(p.Stop)
	}
	wg.Wait()
}

// dialer makes the client channels of one strategy over a cluster. The run's
// goroutine calls dial for every channel, then close after closing them.
// Dialers that follow membership register a watcher on the cluster.
type dialer interface {
	dial(ch int, zone string) (*grpc.ClientConn, error)
	close()
}

// newDialer makes the dialer of each strategy.
var newDialer = map[string]func(ctx context.Context, cfg Config, c *cluster) (dialer, error){
	Connection: func(_ context.Context, cfg Config, c *cluster) (dialer, error) {
		return &connDialer{c: c, rng: rand.New(rand.NewPCG(cfg.Seed, 0xc0))}, nil
	},
	RoundRobin: func(_ context.Context, _ Config, c *cluster) (dialer, error) {
		d := &rrDialer{c: c}
		c.watch(d.update)
		return d, nil
	},
	GRPCLeastRequest: newLeastRequestDialer,
	GRPCWRR:          newWRRDialer,
	FairwayP2C:       newFairwayDialer(FairwayP2C),
	Fairway:          newFairwayDialer(Fairway),
	LoadAware:        newFairwayDialer(LoadAware),
}

var fastBackoff = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: time.Second,
})

// connDialer is kube-proxy behind a ClusterIP: every new connection goes to a
// serving pod chosen at random, and stays there.
type connDialer struct {
	c   *cluster
	mu  sync.Mutex
	rng *rand.Rand // guarded by mu
}

func (d *connDialer) pick() (string, error) {
	live := d.c.serving()
	if len(live) == 0 {
		return "", errors.New("fairway/bench: no serving pod")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return live[d.rng.IntN(len(live))].addr, nil
}

func (d *connDialer) dial(int, string) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///cluster-ip.bench",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		fastBackoff,
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			addr, err := d.pick()
			if err != nil {
				return nil, err
			}
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		}))
}

func (d *connDialer) close() {}

// rrDialer is gRPC round robin over every pod address, told of changes at
// once (the best a headless Service with DNS re-resolution can do).
type rrDialer struct {
	c   *cluster
	mu  sync.Mutex
	res []*manual.Resolver // guarded by mu
}

func rrState(live []podAddr) resolver.State {
	var s resolver.State
	for _, p := range live {
		s.Endpoints = append(s.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: p.addr}}})
	}
	return s
}

func (d *rrDialer) dial(int, string) (*grpc.ClientConn, error) {
	r := manual.NewBuilderWithScheme("bench")
	r.InitialState(rrState(d.c.serving()))
	d.mu.Lock()
	d.res = append(d.res, r)
	d.mu.Unlock()
	return grpc.NewClient("bench:///pods",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(r), fastBackoff,
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
}

func (d *rrDialer) update(live []podAddr) {
	d.mu.Lock()
	rs := append([]*manual.Resolver{}, d.res...)
	d.mu.Unlock()
	st := rrState(live)
	for _, r := range rs {
		r.UpdateState(st)
	}
}

func (d *rrDialer) close() {}
