package cpbench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/client-go/kubernetes"

	"github.com/fairway-lb/fairway/internal/testenv"
)

// Timeouts of the phases before the changes.
const (
	readyTimeout     = 5 * time.Minute
	subscribeTimeout = 5 * time.Minute
	// quietPeriod is how long Run keeps counting after the last change was
	// seen everywhere, to catch late or duplicate responses.
	quietPeriod = 500 * time.Millisecond
)

// Run runs the benchmark described in the package documentation, writes a
// markdown report to out and returns the measurements. It returns an error
// when a phase cannot complete (the apiserver or control plane does not
// start, a stream fails); changes that some subscriber never sees are
// counted in Result.Missed, not errors.
func Run(ctx context.Context, cfg Config, out io.Writer) (*Result, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("component", "fairway/cpbench")
	res := &Result{Config: cfg, Machine: readMachine()}
	dir, err := os.MkdirTemp("", "fairway-cpbench-")
	if err != nil {
		return nil, fmt.Errorf("fairway/cpbench: %w", err)
	}
	defer os.RemoveAll(dir)

	bin := cfg.FairwayBin
	if bin == "" {
		log.Info("building cmd/fairway")
		if bin, err = buildFairway(ctx, dir); err != nil {
			return nil, err
		}
	}

	// Setup: the API server and the objects.
	setupStart := time.Now()
	kubeconfig := cfg.Kubeconfig
	if kubeconfig == "" {
		log.Info("starting etcd and kube-apiserver", "bin-dir", cfg.BinDir)
		env, err := testenv.StartProcess(ctx, filepath.Join(dir, "kube"), testenv.WithBinDir(cfg.BinDir))
		if err != nil {
			return nil, err
		}
		defer env.Stop()
		kubeconfig = env.KubeconfigPath
		res.APIServerStart = time.Since(setupStart)
	}
	c, err := connect(kubeconfig, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Kubeconfig != "" {
		defer c.cleanupIfOurs(ctx, cfg.Parallelism, log)
	}
	if err := createObjects(ctx, cfg, log, res, c, setupStart); err != nil {
		return nil, err
	}

	// The control plane process, up to its first full snapshot.
	log.Info("starting control plane", "bin", bin)
	cpStart := time.Now()
	cp, err := startControlPlane(bin, kubeconfig, cfg.Namespace, cfg.Debounce, dir)
	if err != nil {
		return nil, err
	}
	defer cp.stop()
	if err := awaitControlPlane(ctx, cp, res, cpStart); err != nil {
		return nil, err
	}

	// The streams, up to every subscription answered.
	rng := newRand(cfg.Seed)
	ss, err := openStreams(cfg, res, cp.xdsAddr, rng)
	if err != nil {
		return nil, err
	}
	defer ss.close()
	if err := ss.subscribe(ctx, log, res, cp.cmd.Process.Pid); err != nil {
		return nil, err
	}

	// The changes.
	changes, err := measureChanges(ctx, cfg, log, res, c, cp, ss, rng)
	if err != nil {
		return nil, err
	}
	ss.halt()

	res.summarize(changes, ss.streams)
	res.WriteReport(out)
	return res, nil
}

// connect returns the cluster of namespace cfg.Namespace behind kubeconfig.
func connect(kubeconfig string, cfg Config) (*cluster, error) {
	rc, err := restConfig(kubeconfig, cfg.QPS, cfg.Burst)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("fairway/cpbench: %w", err)
	}
	return &cluster{client: client, ns: cfg.Namespace}, nil
}

// cleanupIfOurs deletes the objects setup created, if it created any.
func (c *cluster) cleanupIfOurs(ctx context.Context, parallelism int, log *slog.Logger) {
	if c.slices == nil {
		return // the namespace was not ours
	}
	if err := c.cleanup(context.WithoutCancel(ctx), parallelism); err != nil {
		log.Warn("cleanup", "error", err)
	}
}

// createObjects creates the services and their endpoints and records the
// setup times.
func createObjects(ctx context.Context, cfg Config, log *slog.Logger, res *Result, c *cluster, setupStart time.Time) error {
	log.Info("creating objects", "services", cfg.Services, "endpoints", cfg.Services*cfg.Endpoints)
	createStart := time.Now()
	if err := c.setup(ctx, cfg.Services, cfg.Endpoints, cfg.Parallelism); err != nil {
		return err
	}
	res.CreateTime = time.Since(createStart)
	res.SetupTime = time.Since(setupStart)
	return nil
}

// awaitControlPlane waits for cp's first full snapshot and records the time
// and memory it took.
func awaitControlPlane(ctx context.Context, cp *controlPlane, res *Result, cpStart time.Time) error {
	if err := cp.waitReady(ctx, readyTimeout); err != nil {
		return err
	}
	res.ReadyTime = time.Since(cpStart)
	var err error
	res.RSSReady, err = readMem(cp.cmd.Process.Pid)
	return err
}

// streamSet is the xDS streams of a run, the connections they share and
// the tracker they report observations to.
type streamSet struct {
	streams     []*stream
	subscribers [][]*stream // per service index
	conns       []*grpc.ClientConn
	tr          *tracker
	errs        chan error
	stop        context.CancelFunc // nil until subscribe
	wg          sync.WaitGroup
}

// openStreams lays out the streams and dials their connections to addr.
func openStreams(cfg Config, res *Result, addr string, rng *rand.Rand) (*streamSet, error) {
	ss := &streamSet{
		streams:     layout(cfg, rng),
		subscribers: make([][]*stream, cfg.Services),
		conns:       make([]*grpc.ClientConn, cfg.Conns),
		tr:          newTracker(cfg.Changes),
	}
	for _, s := range ss.streams {
		res.Subscriptions += len(s.names)
		if s.delta {
			res.DeltaStreams++
		} else {
			res.SotWStreams++
		}
		for _, svc := range s.services {
			ss.subscribers[svc] = append(ss.subscribers[svc], s)
		}
	}
	for i := range ss.conns {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			ss.close()
			return nil, fmt.Errorf("fairway/cpbench: %w", err)
		}
		ss.conns[i] = cc
	}
	ss.errs = make(chan error, len(ss.streams))
	return ss, nil
}

// subscribe starts the streams and waits until each has been answered,
// recording the time and the control plane's memory (process pid).
func (ss *streamSet) subscribe(ctx context.Context, log *slog.Logger, res *Result, pid int) error {
	streamCtx, stop := context.WithCancel(ctx)
	ss.stop = stop
	log.Info("opening streams", "streams", len(ss.streams), "conns", len(ss.conns), "subscriptions", res.Subscriptions)
	subStart := time.Now()
	for _, s := range ss.streams {
		ss.wg.Go(func() {
			if err := s.run(streamCtx, ss.conns[s.id%len(ss.conns)], ss.tr); err != nil {
				ss.errs <- err
			}
		})
	}
	subDeadline := time.NewTimer(subscribeTimeout)
	defer subDeadline.Stop()
	for _, s := range ss.streams {
		select {
		case <-s.ready:
		case err := <-ss.errs:
			return err
		case <-subDeadline.C:
			return fmt.Errorf("fairway/cpbench: stream %d not answered within %v", s.id, subscribeTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	res.SubscribeTime = time.Since(subStart)
	var err error
	res.RSSSubscribed, err = readMem(pid)
	return err
}

// halt stops the streams and waits for them to end.
func (ss *streamSet) halt() {
	if ss.stop != nil {
		ss.stop()
	}
	ss.wg.Wait()
}

// close halts the streams and closes their connections.
func (ss *streamSet) close() {
	ss.halt()
	for _, cc := range ss.conns {
		if cc != nil {
			cc.Close()
		}
	}
}

// measureChanges runs the change phase and a quiet period after it,
// recording the control plane's CPU and memory, and checks that the
// control plane and the streams are still up.
func measureChanges(ctx context.Context, cfg Config, log *slog.Logger, res *Result, c *cluster, cp *controlPlane, ss *streamSet, rng *rand.Rand) ([]*change, error) {
	pid := cp.cmd.Process.Pid
	cpu0, err := readCPU(pid)
	if err != nil {
		return nil, err
	}
	log.Info("changing endpoints", "changes", cfg.Changes)
	ss.tr.counting.Store(true)
	phaseStart := time.Now()
	changes, err := runChanges(ctx, cfg, c, ss.tr, ss.subscribers, rng, ss.errs)
	if err != nil {
		return nil, err
	}
	quiet := time.NewTimer(quietPeriod)
	select {
	case <-quiet.C:
	case <-ctx.Done():
		quiet.Stop()
		return nil, ctx.Err()
	}
	ss.tr.counting.Store(false)
	res.ChangePhase = time.Since(phaseStart)
	cpu1, err := readCPU(pid)
	if err != nil {
		return nil, err
	}
	res.CPUChanges = cpu1 - cpu0
	if res.RSSEnd, err = readMem(pid); err != nil {
		return nil, err
	}
	if err := cp.exited(); err != nil {
		return nil, err
	}
	select {
	case err := <-ss.errs:
		return nil, err
	default:
	}
	return changes, nil
}

// runChanges makes cfg.Changes changes and waits until each is seen by all
// its subscribers or expires.
func runChanges(ctx context.Context, cfg Config, c *cluster, tr *tracker, subscribers [][]*stream, rng *rand.Rand, streamErrs <-chan error) ([]*change, error) {
	w := &changeWaiter{
		cfg: cfg, tr: tr, streamErrs: streamErrs,
		busy: make(map[int]bool),
		tick: time.NewTicker(50 * time.Millisecond),
	}
	defer w.tick.Stop()
	var changes []*change
	for seq := range cfg.Changes {
		for len(w.busy) == cfg.Services {
			if err := w.wait(ctx, -1); err != nil {
				return nil, err
			}
		}
		svc := rng.IntN(cfg.Services)
		for w.busy[svc] {
			svc = (svc + 1) % cfg.Services
		}
		w.busy[svc] = true
		ch, err := makeChange(ctx, cfg, c, tr, seq, svc, len(subscribers[svc]), rng)
		if err != nil {
			return nil, err
		}
		changes = append(changes, ch)
		if err := w.wait(ctx, cfg.ChangeInterval+randDuration(rng, cfg.ChangeJitter)); err != nil {
			return nil, err
		}
	}
	for tr.inFlight() > 0 {
		if err := w.wait(ctx, -1); err != nil {
			return nil, err
		}
	}
	// Drain completions that raced with the loop's end.
	for {
		select {
		case ch := <-tr.completed:
			w.release(ch)
		default:
			return changes, nil
		}
	}
}

// changeWaiter tracks which services have a change in flight (at most one
// each) and waits for changes to complete or expire.
type changeWaiter struct {
	cfg        Config
	tr         *tracker
	streamErrs <-chan error
	busy       map[int]bool // service index → a change in flight
	tick       *time.Ticker
}

func (w *changeWaiter) release(ch *change) { delete(w.busy, ch.service) }

// expire gives up on the changes older than cfg.ChangeTimeout.
func (w *changeWaiter) expire() {
	for _, ch := range w.tr.expire(time.Now().Add(-w.cfg.ChangeTimeout)) {
		w.release(ch)
	}
}

// wait blocks until d elapses or, for d < 0, until a change completes or a
// tick passes. It returns a stream's error or ctx's.
func (w *changeWaiter) wait(ctx context.Context, d time.Duration) error {
	var timeout <-chan time.Time
	if d >= 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	for {
		select {
		case ch := <-w.tr.completed:
			w.release(ch)
			if d < 0 {
				return nil
			}
		case <-w.tick.C:
			w.expire()
			if d < 0 {
				return nil
			}
		case err := <-w.streamErrs:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout:
			return nil
		}
	}
}

// makeChange changes one random endpoint of service svc, alternately its
// readiness (even seq) and its address (odd seq), registers the change
// with tr and writes it.
func makeChange(ctx context.Context, cfg Config, c *cluster, tr *tracker, seq, svc, subs int, rng *rand.Rand) (*change, error) {
	slice := c.slices[svc].DeepCopy()
	j := rng.IntN(len(slice.Endpoints))
	ep := &slice.Endpoints[j]
	ch := &change{seq: seq, service: svc, name: resourceName(cfg.Namespace, svc), subs: subs}
	if seq%2 == 0 {
		ready := ep.Conditions.Ready != nil && !*ep.Conditions.Ready
		ep.Conditions = conditions(ready)
		ch.kind = "ready"
		ch.health = corepb.HealthStatus_UNHEALTHY
		if ready {
			ch.health = corepb.HealthStatus_HEALTHY
		}
	} else {
		ep.Addresses = []string{c.freshAddress()}
		ch.kind = "address"
		ch.health = corepb.HealthStatus_UNHEALTHY
		if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
			ch.health = corepb.HealthStatus_HEALTHY
		}
	}
	ch.addr = ep.Addresses[0]
	ch.started = time.Now()
	tr.register(ch)
	if err := c.write(ctx, svc, slice); err != nil {
		return nil, err
	}
	tr.wrote(ch, time.Now())
	return ch, nil
}

// newRand is the benchmark's random source for seed.
func newRand(seed int64) *rand.Rand { return rand.New(rand.NewPCG(uint64(seed), 0x6661697277617921)) }

func randDuration(rng *rand.Rand, d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rng.Int64N(int64(d)))
}
