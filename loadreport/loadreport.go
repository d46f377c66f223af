// Package loadreport makes a grpc-go server report its load the standard
// way, with ORCA (Open Request Cost Aggregation, the xDS load report that
// grpc-go's orca package speaks), so that clients balance on what the
// servers know: Fairway's load-aware strategy, grpc-go's
// weighted_round_robin (gRFC A58), Envoy, and any other ORCA consumer.
//
// A Reporter counts the server's requests in flight (RIF), its requests and
// errors per second and the mean latency of its recent calls, and publishes
// them two ways:
//
//   - per call: every unary and streaming response carries an ORCA load
//     report in its trailer (endpoint-load-metrics-bin), read by grpc-go's
//     balancers from balancer.DoneInfo.ServerLoad, or by any caller with
//     FromTrailer. A unary grpc.health.v1.Health/Check carries it too, so a
//     client can probe a backend's load with a health check (Prequal-style
//     probes) without sending it application traffic;
//   - out of band: the OpenRcaService StreamCoreMetrics stream
//     (xds.service.orca.v3), one report per interval the client asks for,
//     no more often than the Reporter's minimum interval.
//
// Setting it up is one option and one call on a grpc-go server:
//
//	r := loadreport.New(loadreport.WithCapacity(8))
//	srv := grpc.NewServer(loadreport.ServerOptions(r)...)
//	loadreport.Register(srv, r)
//
// A report's fields (see Load):
//
//   - named_metrics["rif"] (RIFMetric): requests in flight when the report
//     is made; the call carrying a per-call report has already left it;
//   - named_metrics["latency_ms"] (LatencyMetric): the mean time the
//     server's calls completed over the window took, in milliseconds;
//   - application_utilization: the mean RIF over the window divided by the
//     capacity (requests served at once at full speed), so 1 is a server
//     busy all the time and more is a queue; grpc-go's
//     weighted_round_robin reads it (before cpu_utilization);
//   - rps_fractional and eps: requests and errors (non-OK status) per
//     second over the window.
//
// With these, weighted_round_robin's weight rps/(utilization + eps/rps ×
// penalty) is by Little's law about capacity / mean latency, discounted for
// errors: a slow or overloaded server gets less traffic.
//
// Calls to grpc.health.v1.Health and to the ORCA service itself are not
// load: they are left out of every figure (WithExcludedMethods replaces the
// list).
package loadreport

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	orcapb "github.com/cncf/xds/go/xds/data/orca/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/orca"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"k8s.io/utils/clock"
)

// The named metrics a report carries, and the trailer that carries a
// per-call report (the ORCA standard's).
const (
	RIFMetric     = "rif"
	LatencyMetric = "latency_ms"
	TrailerKey    = "endpoint-load-metrics-bin"
)

// DefaultExcludedMethods are the method prefixes that are not counted as
// load: health checks and the ORCA service.
var DefaultExcludedMethods = []string{"/grpc.health.v1.Health/", "/xds.service.orca.v3.OpenRcaService/"}

// Option configures a Reporter.
type Option func(*Reporter)

// WithCapacity sets how many requests the server serves at once at full
// speed (default 1); application_utilization is mean RIF / capacity.
// Values below 1 are taken as 1.
func WithCapacity(n int) Option {
	return func(r *Reporter) { r.capacity = float64(max(n, 1)) }
}

// WithWindow sets the span the rates, utilization and latency are measured
// over (default 1 s; at least 10 ms).
func WithWindow(d time.Duration) Option {
	return func(r *Reporter) { r.span = max(d, 10*time.Millisecond) }
}

// WithMinReportingInterval sets the shortest interval between two
// out-of-band reports on one stream (default 1 s; at least 10 ms). A client
// asking for less gets this.
func WithMinReportingInterval(d time.Duration) Option {
	return func(r *Reporter) { r.minInterval = max(d, 10*time.Millisecond) }
}

// WithExcludedMethods replaces the full-method prefixes that are not
// counted as load (default DefaultExcludedMethods). Excluded calls still
// carry a per-call report.
func WithExcludedMethods(prefixes ...string) Option {
	return func(r *Reporter) { r.exclude = append([]string(nil), prefixes...) }
}

// WithClock sets the clock (default the real one); tests pass a fake.
func WithClock(c clock.WithTicker) Option { return func(r *Reporter) { r.clk = c } }

// Load is a Reporter's view of the server's load at one moment.
type Load struct {
	RIF         int64         // requests in flight now
	QPS, EPS    float64       // requests and errors per second over the window
	Utilization float64       // mean RIF over the window / capacity
	Latency     time.Duration // mean latency of the calls completed over the window
}

// window is one span of counts.
type window struct {
	start   time.Time
	calls   int64
	errs    int64
	latSum  time.Duration
	rifArea float64 // ∫ RIF dt, in request·seconds
}

// Reporter measures a server's load. Its interceptors (ServerOptions) and
// its ORCA service (Register) may run on any goroutine; every method is
// safe for concurrent use and none blocks beyond a short lock.
type Reporter struct {
	// immutable after New
	clk         clock.WithTicker
	capacity    float64
	span        time.Duration
	minInterval time.Duration
	exclude     []string

	rif atomic.Int64

	mu        sync.Mutex
	cur, prev window    // guarded by mu; prev is the last whole window
	accrued   time.Time // guarded by mu: cur.rifArea counts up to here
}

// New returns a Reporter with nothing in flight.
func New(opts ...Option) *Reporter {
	r := &Reporter{clk: clock.RealClock{}, capacity: 1, span: time.Second, minInterval: time.Second, exclude: DefaultExcludedMethods}
	for _, o := range opts {
		o(r)
	}
	now := r.clk.Now()
	r.cur = window{start: now}
	r.prev = window{start: now}
	r.accrued = now
	return r
}

// ServerOptions returns the options that make a grpc-go server carry r's
// report in every call's trailer and count its calls: grpc-go's
// orca.CallMetricsServerOption with r as the provider, then r's own
// interceptors (inside it). Pass them to grpc.NewServer before any other
// interceptor whose time should count as the server's.
func ServerOptions(r *Reporter) []grpc.ServerOption {
	return []grpc.ServerOption{
		orca.CallMetricsServerOption(r),
		grpc.ChainUnaryInterceptor(r.unary),
		grpc.ChainStreamInterceptor(r.stream),
	}
}

func (r *Reporter) excluded(method string) bool {
	for _, p := range r.exclude {
		if strings.HasPrefix(method, p) {
			return true
		}
	}
	return false
}

func (r *Reporter) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	// Asking for the call's recorder is what makes grpc-go's interceptor
	// write the trailer, whatever the handler does.
	orca.CallMetricsRecorderFromContext(ctx)
	if r.excluded(info.FullMethod) {
		return handler(ctx, req)
	}
	start := r.Begin()
	resp, err := handler(ctx, req)
	r.End(start, err)
	return resp, err
}

func (r *Reporter) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	orca.CallMetricsRecorderFromContext(ss.Context())
	if r.excluded(info.FullMethod) {
		return handler(srv, ss)
	}
	start := r.Begin()
	err := handler(srv, ss)
	r.End(start, err)
	return err
}

// Begin counts a request in and returns its start, for End. The
// interceptors call it; a server that takes requests some other way (or a
// simulation, with a fake clock) calls it itself.
func (r *Reporter) Begin() time.Time {
	r.mu.Lock()
	now := r.clk.Now()
	r.accrueLocked(now)
	r.rif.Add(1)
	r.mu.Unlock()
	return now
}

// End counts out a request that Begin counted in at start; a non-OK
// status in err counts as an error.
func (r *Reporter) End(start time.Time, err error) {
	r.mu.Lock()
	now := r.clk.Now()
	r.accrueLocked(now)
	r.rif.Add(-1)
	r.cur.calls++
	if status.Code(err) != 0 {
		r.cur.errs++
	}
	r.cur.latSum += now.Sub(start)
	r.mu.Unlock()
}

// accrueLocked adds RIF × time up to now to the windows, moving to a new
// window when the current one is whole. Caller holds r.mu.
func (r *Reporter) accrueLocked(now time.Time) {
	rif := float64(r.rif.Load())
	if now.Sub(r.cur.start) >= 2*r.span {
		// Quiet for more than a window: the last whole window held rif throughout.
		r.prev = window{start: now.Add(-r.span), rifArea: rif * r.span.Seconds()}
		r.cur = window{start: now}
		r.accrued = now
		return
	}
	if end := r.cur.start.Add(r.span); !now.Before(end) {
		r.cur.rifArea += rif * end.Sub(r.accrued).Seconds()
		r.prev = r.cur
		r.cur = window{start: end}
		r.accrued = end
	}
	if now.After(r.accrued) {
		r.cur.rifArea += rif * now.Sub(r.accrued).Seconds()
		r.accrued = now
	}
}

// Load returns the server's load now, measured over the last whole window
// and the current one.
func (r *Reporter) Load() Load {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.clk.Now()
	r.accrueLocked(now)
	l := Load{RIF: r.rif.Load()}
	secs := now.Sub(r.prev.start).Seconds()
	if secs <= 0 {
		return l
	}
	calls := r.prev.calls + r.cur.calls
	l.QPS = float64(calls) / secs
	l.EPS = float64(r.prev.errs+r.cur.errs) / secs
	l.Utilization = (r.prev.rifArea + r.cur.rifArea) / secs / r.capacity
	if calls > 0 {
		l.Latency = (r.prev.latSum + r.cur.latSum) / time.Duration(calls)
	}
	return l
}

// ServerMetrics implements orca.ServerMetricsProvider: Load as ORCA server
// metrics. Unmeasured fields (CPU, memory) are unset.
func (r *Reporter) ServerMetrics() *orca.ServerMetrics {
	l := r.Load()
	return &orca.ServerMetrics{
		CPUUtilization: -1,
		MemUtilization: -1,
		AppUtilization: l.Utilization,
		QPS:            l.QPS,
		EPS:            l.EPS,
		Utilization:    map[string]float64{},
		RequestCost:    map[string]float64{},
		NamedMetrics: map[string]float64{
			RIFMetric:     float64(l.RIF),
			LatencyMetric: float64(l.Latency) / float64(time.Millisecond),
		},
	}
}

// report is Load as an ORCA load report.
func (r *Reporter) report() *orcapb.OrcaLoadReport {
	l := r.Load()
	return &orcapb.OrcaLoadReport{
		ApplicationUtilization: l.Utilization,
		RpsFractional:          l.QPS,
		Eps:                    l.EPS,
		NamedMetrics: map[string]float64{
			RIFMetric:     float64(l.RIF),
			LatencyMetric: float64(l.Latency) / float64(time.Millisecond),
		},
	}
}

// FromTrailer returns the ORCA load report a call's trailer carries; nil
// (and no error) when it carries none.
func FromTrailer(md metadata.MD) (*orcapb.OrcaLoadReport, error) {
	vs := md.Get(TrailerKey)
	switch len(vs) {
	case 0:
		return nil, nil
	case 1:
	default:
		return nil, errors.New("fairway/loadreport: more than one load report in the trailer")
	}
	lr := new(orcapb.OrcaLoadReport)
	if err := proto.Unmarshal([]byte(vs[0]), lr); err != nil {
		return nil, fmt.Errorf("fairway/loadreport: load report in the trailer: %w", err)
	}
	return lr, nil
}
