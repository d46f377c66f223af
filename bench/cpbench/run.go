package cpbench

import (
	"context"
	"fmt"
	"io"
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
	rc, err := restConfig(kubeconfig, cfg.QPS, cfg.Burst)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("fairway/cpbench: %w", err)
	}
	c := &cluster{client: client, ns: cfg.Namespace}
	log.Info("creating objects", "services", cfg.Services, "endpoints", cfg.Services*cfg.Endpoints)
	createStart := time.Now()
	if cfg.Kubeconfig != "" {
		defer func() {
			if c.slices == nil {
				return // the namespace was not ours
			}
			if err := c.cleanup(context.WithoutCancel(ctx), cfg.Parallelism); err != nil {
				log.Warn("cleanup", "error", err)
			}
		}()
	}
	if err := c.setup(ctx, cfg.Services, cfg.Endpoints, cfg.Parallelism); err != nil {
		return nil, err
	}
	res.CreateTime = time.Since(createStart)
	res.SetupTime = time.Since(setupStart)

	// The control plane process, up to its first full snapshot.
	log.Info("starting control plane", "bin", bin)
	cpStart := time.Now()
	cp, err := startControlPlane(bin, kubeconfig, cfg.Namespace, cfg.Debounce, dir)
	if err != nil {
		return nil, err
	}
	defer cp.stop()
	pid := cp.cmd.Process.Pid
	if err := cp.waitReady(ctx, readyTimeout); err != nil {
		return nil, err
	}
	res.ReadyTime = time.Since(cpStart)
	if res.RSSReady, err = readMem(pid); err != nil {
		return nil, err
	}

	// The streams, up to every subscription answered.
	rng := newRand(cfg.Seed)
	streams := layout(cfg, rng)
	subscribers := make([][]*stream, cfg.Services)
	for _, s := range streams {
		res.Subscriptions += len(s.names)
		if s.delta {
			res.DeltaStreams++
		} else {
			res.SotWStreams++
		}
		for _, svc := range s.services {
			subscribers[svc] = append(subscribers[svc], s)
		}
	}
	conns := make([]*grpc.ClientConn, cfg.Conns)
	for i := range conns {
		if conns[i], err = grpc.NewClient(cp.xdsAddr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			return nil, fmt.Errorf("fairway/cpbench: %w", err)
		}
		defer conns[i].Close()
	}
	tr := newTracker(cfg.Changes)
	streamCtx, stopStreams := context.WithCancel(ctx)
	var wg sync.WaitGroup
	streamErrs := make(chan error, len(streams))
	defer func() {
		stopStreams()
		wg.Wait()
	}()
	log.Info("opening streams", "streams", len(streams), "conns", len(conns), "subscriptions", res.Subscriptions)
	subStart := time.Now()
	for _, s := range streams {
		wg.Go(func() {
			if err := s.run(streamCtx, conns[s.id%len(conns)], tr); err != nil {
				streamErrs <- err
			}
		})
	}
	subDeadline := time.NewTimer(subscribeTimeout)
	defer subDeadline.Stop()
	for _, s := range streams {
		select {
		case <-s.ready:
		case err := <-streamErrs:
			return nil, err
		case <-subDeadline.C:
			return nil, fmt.Errorf("fairway/cpbench: stream %d not answered within %v", s.id, subscribeTimeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	res.SubscribeTime = time.Since(subStart)
	if res.RSSSubscribed, err = readMem(pid); err != nil {
		return nil, err
	}

	// The changes.
	cpu0, err := readCPU(pid)
	if err != nil {
		return nil, err
	}
	log.Info("changing endpoints", "changes", cfg.Changes)
	tr.counting.Store(true)
	phaseStart := time.Now()
	changes, err := runChanges(ctx, cfg, c, tr, subscribers, rng, streamErrs)
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
	tr.counting.Store(false)
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
	case err := <-streamErrs:
		return nil, err
	default:
	}
	stopStreams()
	wg.Wait()

	res.summarize(changes, streams)
	res.WriteReport(out)
	return res, nil
}

// runChanges makes cfg.Changes changes and waits until each is seen by all
// its subscribers or expires.
func runChanges(ctx context.Context, cfg Config, c *cluster, tr *tracker, subscribers [][]*stream, rng *rand.Rand, streamErrs <-chan error) ([]*change, error) {
	busy := make(map[int]bool)
	var changes []*change
	release := func(ch *change) { delete(busy, ch.service) }
	expire := func() {
		for _, ch := range tr.expire(time.Now().Add(-cfg.ChangeTimeout)) {
			release(ch)
		}
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	// wait blocks until a change completes, a tick passes, or d elapses.
	wait := func(d time.Duration) error {
		var timeout <-chan time.Time
		if d >= 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			timeout = t.C
		}
		for {
			select {
			case ch := <-tr.completed:
				release(ch)
				if d < 0 {
					return nil
				}
			case <-tick.C:
				expire()
				if d < 0 {
					return nil
				}
			case err := <-streamErrs:
				return err
			case <-ctx.Done():
				return ctx.Err()
			case <-timeout:
				return nil
			}
		}
	}

	for seq := range cfg.Changes {
		for len(busy) == cfg.Services {
			if err := wait(-1); err != nil {
				return nil, err
			}
		}
		svc := rng.IntN(cfg.Services)
		for busy[svc] {
			svc = (svc + 1) % cfg.Services
		}
		busy[svc] = true
		slice := c.slices[svc].DeepCopy()
		j := rng.IntN(len(slice.Endpoints))
		ep := &slice.Endpoints[j]
		ch := &change{seq: seq, service: svc, name: resourceName(cfg.Namespace, svc), subs: len(subscribers[svc])}
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
		changes = append(changes, ch)
		if err := wait(cfg.ChangeInterval + randDuration(rng, cfg.ChangeJitter)); err != nil {
			return nil, err
		}
	}
	for tr.inFlight() > 0 {
		if err := wait(-1); err != nil {
			return nil, err
		}
	}
	// Drain completions that raced with the loop's end.
	for {
		select {
		case ch := <-tr.completed:
			release(ch)
		default:
			return changes, nil
		}
	}
}

// newRand is the benchmark's random source for seed.
func newRand(seed int64) *rand.Rand { return rand.New(rand.NewPCG(uint64(seed), 0x6661697277617921)) }

func randDuration(rng *rand.Rand, d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rng.Int64N(int64(d)))
}
