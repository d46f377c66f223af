// Package backend runs gRPC servers that behave like the pods of a service
// for the benchmark harness: each listens on its own loopback address, serves
// at most Capacity requests at once (the rest queue), takes a log-normal
// service time, and can be made slow, failing, cold at start, or crashed.
//
// The service is one unary method, Method, taking and returning
// google.protobuf.Empty; every response (success or error) carries the pod's
// index in the trailer PodTrailer so a client can tell which pod served it.
//
// A pod reports its load with ORCA (package loadreport, capacity Capacity):
// every response's trailer carries a load report, a unary
// grpc.health.v1.Health/Check answers SERVING with one (a probe), and the
// out-of-band OpenRcaService stream reports at most every
// ORCAMinInterval.
package backend

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/fairway-lb/fairway/loadreport"
)

// Method is the full name of the benchmark's unary method.
const Method = "/fairway.bench.Echo/Call"

// PodTrailer is the trailer key carrying the serving pod's index.
const PodTrailer = "fairway-bench-pod"

// ORCAMinInterval is the shortest interval between a pod's out-of-band
// load reports on one stream.
const ORCAMinInterval = 100 * time.Millisecond

// Spec describes one pod.
type Spec struct {
	Index int    // position in the scenario's pod list; reported in PodTrailer
	IP    string // loopback address, e.g. 127.0.0.5
	Zone  string

	Capacity int           // requests served at once at full speed (>= 1); the rest queue
	Median   time.Duration // median service time
	Sigma    float64       // log-normal shape; 0 = constant service time

	SlowFactor float64 // service time multiplier (1 = normal)
	ErrorRate  float64 // fraction of requests failed at once with Unavailable
	ColdFactor float64 // service time multiplier during the cold period (1 = none)
	ColdFor    time.Duration
	// Slowdowns multiply the service time during their intervals, counted
	// from the epoch (see SetEpoch): an antagonist sharing the machine.
	Slowdowns []Slowdown
}

// Slowdown is an interval [From, To) from the epoch during which a pod's
// service times are Factor times longer.
type Slowdown struct {
	From, To time.Duration
	Factor   float64
}

// SlowdownAt is the service time multiplier of s's slowdowns at sinceEpoch
// (1 outside them; overlapping ones multiply).
func (s Spec) SlowdownAt(sinceEpoch time.Duration) float64 {
	f := 1.0
	for _, x := range s.Slowdowns {
		if sinceEpoch >= x.From && sinceEpoch < x.To && x.Factor > 0 {
			f *= x.Factor
		}
	}
	return f
}

// Backend is one pod. Start and Stop are called by the harness's goroutine;
// the counters may be read at any time.
type Backend struct {
	spec   Spec
	bucket time.Duration
	epoch  atomic.Int64 // unix ns of the start of the run; buckets count from here

	received atomic.Int64
	failed   atomic.Int64
	buckets  []atomic.Int64

	sem chan struct{}

	mu      sync.Mutex
	srv     *grpc.Server // guarded by mu
	addr    string       // guarded by mu
	started time.Time    // guarded by mu
	done    chan struct{}
}

// New returns a pod that is not serving yet. Requests it receives are counted
// in buckets of width bucket from the epoch (see SetEpoch); nBuckets bounds
// the series.
func New(spec Spec, bucket time.Duration, nBuckets int) *Backend {
	if spec.Capacity < 1 {
		spec.Capacity = 1
	}
	if spec.SlowFactor <= 0 {
		spec.SlowFactor = 1
	}
	if spec.ColdFactor <= 0 {
		spec.ColdFactor = 1
	}
	b := &Backend{
		spec:    spec,
		bucket:  bucket,
		buckets: make([]atomic.Int64, max(nBuckets, 1)),
		sem:     make(chan struct{}, spec.Capacity),
	}
	b.epoch.Store(time.Now().UnixNano())
	return b
}

// SetEpoch sets the time the buckets count from (default: creation).
func (b *Backend) SetEpoch(t time.Time) { b.epoch.Store(t.UnixNano()) }

// Spec returns the pod's description.
func (b *Backend) Spec() Spec { return b.spec }

// Start listens on IP:port (0 = any free port, see Addr) and serves until
// Stop. It fails if the address is taken.
func (b *Backend) Start(port int) error {
	lis, err := net.Listen("tcp", net.JoinHostPort(b.spec.IP, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("fairway/bench/backend: pod %d: %w", b.spec.Index, err)
	}
	lr := loadreport.New(loadreport.WithCapacity(b.spec.Capacity), loadreport.WithMinReportingInterval(ORCAMinInterval))
	srv := grpc.NewServer(loadreport.ServerOptions(lr)...)
	srv.RegisterService(&serviceDesc, b)
	loadreport.Register(srv, lr)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	b.mu.Lock()
	b.srv = srv
	b.addr = lis.Addr().String()
	b.started = time.Now()
	b.done = make(chan struct{})
	done := b.done
	b.mu.Unlock()
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	return nil
}

// Stop kills the pod at once: listeners and connections close, in-flight
// requests fail. It waits for the serving goroutine. Safe to call on a pod
// that never started, and more than once.
func (b *Backend) Stop() {
	b.mu.Lock()
	srv, done := b.srv, b.done
	b.srv = nil
	b.mu.Unlock()
	if srv != nil {
		srv.Stop()
		<-done
	}
}

// Addr is the address the pod last listened on ("" before Start).
func (b *Backend) Addr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addr
}

// Received is the number of requests that reached the pod.
func (b *Backend) Received() int64 { return b.received.Load() }

// Failed is the number of requests the pod failed on purpose (ErrorRate).
func (b *Backend) Failed() int64 { return b.failed.Load() }

// Buckets returns the requests received per time bucket since epoch.
func (b *Backend) Buckets() []int64 {
	out := make([]int64, len(b.buckets))
	for i := range b.buckets {
		out[i] = b.buckets[i].Load()
	}
	return out
}

// ServiceTime draws one service time for a pod with spec s that has been up
// for uptime, using r.
func ServiceTime(s Spec, uptime time.Duration, r *rand.Rand) time.Duration {
	d := float64(s.Median) * s.SlowFactor
	if s.Sigma > 0 {
		d *= math.Exp(s.Sigma * r.NormFloat64())
	}
	if s.ColdFor > 0 && uptime < s.ColdFor {
		d *= s.ColdFactor
	}
	return time.Duration(d)
}

var errInjected = status.Error(codes.Unavailable, "fairway/bench/backend: injected failure")

func (b *Backend) call(ctx context.Context) error {
	b.received.Add(1)
	if i := int((time.Now().UnixNano() - b.epoch.Load()) / int64(b.bucket)); i >= 0 && i < len(b.buckets) {
		b.buckets[i].Add(1)
	}
	_ = grpc.SetTrailer(ctx, metadata.Pairs(PodTrailer, strconv.Itoa(b.spec.Index)))
	if b.spec.ErrorRate > 0 && rand.Float64() < b.spec.ErrorRate {
		b.failed.Add(1)
		return errInjected
	}
	select {
	case b.sem <- struct{}{}:
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
	defer func() { <-b.sem }()
	b.mu.Lock()
	uptime := time.Since(b.started)
	b.mu.Unlock()
	d := ServiceTime(b.spec, uptime, rngPool.Get().(*rand.Rand))
	if len(b.spec.Slowdowns) > 0 {
		d = time.Duration(float64(d) * b.spec.SlowdownAt(time.Duration(time.Now().UnixNano()-b.epoch.Load())))
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

var rngPool = sync.Pool{New: func() any { return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())) }}

type echoServer interface {
	call(ctx context.Context) error
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: "fairway.bench.Echo",
	HandlerType: (*echoServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Call",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(emptypb.Empty)
			if err := dec(in); err != nil {
				return nil, err
			}
			handle := func(ctx context.Context, _ any) (any, error) {
				if err := srv.(echoServer).call(ctx); err != nil {
					return nil, err
				}
				return new(emptypb.Empty), nil
			}
			if interceptor == nil {
				return handle(ctx, in)
			}
			return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: Method}, handle)
		},
	}},
}

// Call invokes Method on cc and returns the index of the pod that answered
// (-1 when no pod did, e.g. on a client-side deadline or connection error).
func Call(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (pod int, err error) {
	var tr metadata.MD
	opts = append(opts, grpc.Trailer(&tr))
	err = cc.Invoke(ctx, Method, new(emptypb.Empty), new(emptypb.Empty), opts...)
	pod = -1
	if v := tr.Get(PodTrailer); len(v) > 0 {
		if n, perr := strconv.Atoi(v[0]); perr == nil {
			pod = n
		}
	}
	return pod, err
}

// ErrInjected reports whether err is the pod's injected failure.
func ErrInjected(err error) bool {
	return errors.Is(err, errInjected) || status.Convert(err).Message() == status.Convert(errInjected).Message()
}
