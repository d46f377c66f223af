// Package bench is Fairway's balancing-quality harness: it runs a scenario
// (pods with capacities, service times and faults; client channels with an
// open-loop Poisson arrival schedule) once per balancing strategy, on real
// gRPC servers over loopback or in a discrete-event simulation, and reports
// latency percentiles, error rates, per-pod share and cross-zone traffic side
// by side, as a table, JSON and PNG charts.
//
// Strategies run one after another, each against freshly started pods and
// the same arrival schedule (same seed), so they see identical load.
package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/fairway-lb/fairway/bench/backend"
	"github.com/fairway-lb/fairway/bench/hist"
)

// Run runs every strategy of cfg in turn and returns the report. Progress is
// drawn on out when cfg.Progress is set (out may be nil otherwise). It stops
// early with ctx's error when ctx is done.
func Run(ctx context.Context, cfg Config, out io.Writer) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if out == nil {
		out = io.Discard
	}
	phase := cfg.PhaseDuration()
	sched := schedule(cfg.Seed, cfg.Rate, phase, cfg.Clients, cfg.maxRequests())
	zones := channelZones(cfg.Clients, cfg.Zones, cfg.ZoneW)
	rep := &Report{
		Scenario:  cfg.Scenario,
		DurationS: cfg.Duration.Seconds(),
		Config:    cfg,
		Bucket:    cfg.bucket(),
	}
	prog := newProgress(out, cfg.Progress, cfg.Scenario, len(cfg.Strategies))
	defer prog.finish()
	for i, s := range cfg.Strategies {
		prog.phase(i, s, len(sched))
		var (
			res *Result
			err error
		)
		if cfg.Sim {
			res, err = simulate(cfg, s, sched, zones, phase)
		} else {
			res, err = runReal(ctx, cfg, s, sched, zones, phase, prog)
		}
		if err != nil {
			return nil, fmt.Errorf("strategy %s: %w", s, err)
		}
		rep.Results = append(rep.Results, *res)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// recorder collects the client side of one strategy's run. Safe for
// concurrent use.
type recorder struct {
	lat      hist.Histogram
	ok, errs atomic.Int64
	cross    atomic.Int64
	attrib   atomic.Int64
	byPod    []atomic.Int64 // responses attributed to each pod
	mu       sync.Mutex
	codes    map[string]int64 // guarded by mu
}

func newRecorder(pods int) *recorder {
	return &recorder{byPod: make([]atomic.Int64, pods), codes: map[string]int64{}}
}

func (r *recorder) record(lat time.Duration, err error, pod int, cross bool) {
	r.lat.Record(lat)
	if err != nil {
		r.errs.Add(1)
		c := status.Code(err).String()
		r.mu.Lock()
		r.codes[c]++
		r.mu.Unlock()
	} else {
		r.ok.Add(1)
	}
	if pod >= 0 && pod < len(r.byPod) {
		r.byPod[pod].Add(1)
		r.attrib.Add(1)
		if cross {
			r.cross.Add(1)
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runReal runs one strategy against real pods.
func runReal(ctx context.Context, cfg Config, strategy string, sched []arrival, zones []string, run time.Duration, prog *progress) (*Result, error) {
	cl := newCluster(cfg, run)
	if err := cl.start(cfg); err != nil {
		return nil, err
	}
	defer cl.stop()
	conns, closeConns, err := dialClients(ctx, cfg, cl, strategy, zones)
	defer closeConns()
	if err != nil {
		return nil, err
	}
	// Hundreds of channels, each with its own xDS stream and a connection
	// to every pod, take longer to connect than a few.
	if err := waitReady(ctx, conns, max(15*time.Second, time.Duration(cfg.Clients)*100*time.Millisecond)); err != nil {
		return nil, err
	}

	rec := newRecorder(len(cfg.Pods))
	epoch := time.Now()
	for _, p := range cl.pods {
		p.SetEpoch(epoch)
	}
	cpu0 := cpuTime()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Joins and crashes, in their own goroutines, owned by this function.
	var evWG sync.WaitGroup
	scheduleEvents(runCtx, &evWG, cfg, cl, epoch, run)

	var reqWG sync.WaitGroup
	is := issueRequests(ctx, runCtx, &reqWG, cfg, sched, conns, zones, rec, epoch, run, prog)
	reqWG.Wait()
	cancel()
	evWG.Wait()
	wall := time.Since(epoch)
	cpu := cpuTime() - cpu0
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	res := &Result{
		Strategy:     strategy,
		TargetRate:   cfg.Rate,
		AchievedRate: float64(is.issued) / math.Max(is.lastIssue.Sub(epoch).Seconds(), run.Seconds()),
		LateMax:      is.lateMax,
		Wall:         wall,
		CPU:          cpu,
	}
	received := make([]int64, len(cl.pods))
	buckets := make([][]int64, len(cl.pods))
	for i, p := range cl.pods {
		received[i] = p.Received()
		buckets[i] = p.Buckets()
	}
	res.fill(rec, received, buckets, int64(is.issued), fairWeights(cfg.Pods))
	if is.issued > 0 {
		res.LateMean = is.lateSum / time.Duration(is.issued)
	}
	return res, nil
}

// dialClients dials one client channel per zone in zones with strategy's
// dialer. The returned function closes the channels and the dialer; call
// it even when the error is not nil.
func dialClients(ctx context.Context, cfg Config, cl *cluster, strategy string, zones []string) ([]*grpc.ClientConn, func(), error) {
	mk, ok := newDialer[strategy]
	if !ok {
		return nil, func() {}, fmt.Errorf("fairway/bench: strategy %q is not available in this build", strategy)
	}
	d, err := mk(ctx, cfg, cl)
	if err != nil {
		return nil, func() {}, err
	}
	conns := make([]*grpc.ClientConn, cfg.Clients)
	closeAll := func() {
		for _, cc := range conns {
			if cc != nil {
				cc.Close()
			}
		}
		d.close()
	}
	for i := range conns {
		if conns[i], err = d.dial(i, zones[i]); err != nil {
			return nil, closeAll, fmt.Errorf("fairway/bench: client channel %d: %w", i, err)
		}
	}
	return conns, closeAll, nil
}

// scheduleEvents starts, in wg, the pods' joins and crashes at their
// fractions of run after epoch, until ctx ends.
func scheduleEvents(ctx context.Context, wg *sync.WaitGroup, cfg Config, cl *cluster, epoch time.Time, run time.Duration) {
	for i, p := range cfg.Pods {
		if p.JoinAt > 0 {
			wg.Go(func() { at(ctx, epoch, p.JoinAt, run, func() { _ = cl.join(i) }) })
		}
		if p.CrashAt > 0 {
			wg.Go(func() { at(ctx, epoch, p.CrashAt, run, func() { cl.crash(i) }) })
		}
	}
}

// issueStats is what issueRequests did: how many requests it issued, how late
// against the schedule, and when it issued the last.
type issueStats struct {
	issued           int
	lateSum, lateMax time.Duration
	lastIssue        time.Time
}

// issueRequests issues the requests of sched at their times after epoch,
// each in its own goroutine in wg bounded by runCtx and cfg.Deadline,
// recording outcomes in rec, until the schedule ends or ctx is done.
func issueRequests(ctx, runCtx context.Context, wg *sync.WaitGroup, cfg Config, sched []arrival, conns []*grpc.ClientConn, zones []string, rec *recorder, epoch time.Time, run time.Duration, prog *progress) issueStats {
	var is issueStats
	nextProg := epoch
	for _, a := range sched {
		due := epoch.Add(a.at)
		if wait := time.Until(due); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		ch := int(a.ch)
		cc, zone := conns[ch], zones[ch]
		wg.Go(func() {
			rctx, rcancel := context.WithTimeout(runCtx, cfg.Deadline)
			defer rcancel()
			start := time.Now()
			pod, err := backend.Call(rctx, cc)
			lat := time.Since(start)
			cross := pod >= 0 && pod < len(cfg.Pods) && cfg.Pods[pod].Zone != zone
			rec.record(lat, err, pod, cross)
		})
		is.issued++
		now := time.Now()
		late := now.Sub(due)
		is.lateSum += late
		is.lateMax = max(is.lateMax, late)
		if now.After(nextProg) {
			prog.update(is.issued, now.Sub(epoch), run)
			nextProg = now.Add(100 * time.Millisecond)
		}
	}
	is.lastIssue = time.Now()
	prog.update(is.issued, run, run)
	return is
}

// at runs fn at epoch + frac·run unless ctx ends first.
func at(ctx context.Context, epoch time.Time, frac float64, run time.Duration, fn func()) {
	t := time.NewTimer(time.Until(epoch.Add(time.Duration(frac * float64(run)))))
	defer t.Stop()
	select {
	case <-t.C:
		fn()
	case <-ctx.Done():
	}
}

// waitReady connects every channel and waits until each is READY.
func waitReady(ctx context.Context, conns []*grpc.ClientConn, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for _, cc := range conns {
		cc.Connect()
	}
	for i, cc := range conns {
		for {
			s := cc.GetState()
			if s == connectivity.Ready {
				break
			}
			if s == connectivity.Idle {
				cc.Connect()
			}
			if !cc.WaitForStateChange(ctx, s) {
				return fmt.Errorf("fairway/bench: client channel %d not ready after %v (state %v)", i, limit, cc.GetState())
			}
		}
	}
	return nil
}
